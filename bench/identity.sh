#!/usr/bin/env bash
# End-to-end identity benchmarks against real processes on loopback:
# SVID issuance (SQLite, then PostgreSQL) and Workload API fetch latency.
# Usage: bench/identity.sh [postgres-url]
set -euo pipefail
cd "$(dirname "$0")/.."
pg="${1:-${RAMPART_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}}"
mkdir -p bench/out
go build -o bench/out/rampart ./cmd/rampart
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(go version | cut -d' ' -f3)"
go run ./bench/identity --rampart bench/out/rampart
go run ./bench/identity --rampart bench/out/rampart --postgres "$pg" --fetches 1000
