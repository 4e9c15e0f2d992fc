#!/usr/bin/env bash
# End-to-end OAuth benchmark against a real rampart server on loopback:
# client-credentials tokens/s and introspections/s (SQLite, audited), with
# the ratio to the target and to the peers' published figures; then the Go
# benchmarks for in-process token verification (cold and cached).
# Usage: bench/oauth.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out
go build -o bench/out/rampart ./cmd/rampart
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(go version | cut -d' ' -f3)"
go run ./bench/oauth --rampart bench/out/rampart
go test -run XXX -bench 'Verify' -benchtime 2s ./internal/accesstoken/
