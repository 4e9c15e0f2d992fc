#!/usr/bin/env bash
# Policy decisions: Rampart's compiled policy engine vs OPA (Rego) on the same
# 1,000-rule policy, one core each, after checking both decide alike.
# OPA lives in its own module (bench/opa) so it stays out of Rampart's build.
# Usage: bench/policy-opa.sh
set -euo pipefail
cd "$(dirname "$0")/opa"
mkdir -p ../out
go test -run TestSameDecisions .
go test -run '^$' -bench . -benchmem -cpu 1 -benchtime 2s . | tee ../out/policy-opa.txt
awk '/^BenchmarkRampart/ { r = $3 } /^BenchmarkOPA/ { o = $3 }
END { printf "rampart %.0f ns/decision, OPA %.0f ns/decision: rampart is %.0fx faster\n", r, o, o / r }' ../out/policy-opa.txt
