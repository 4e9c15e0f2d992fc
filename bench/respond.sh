#!/usr/bin/env bash
# Alert to quarantine in force at every proxy, over repeated drills with
# real processes (a server, an agent, three proxies, a client holding a
# connection to each): p50, p99, max. Target p99 <= 2 s.
# Usage: DRILLS=50 bench/respond.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out
go build -o bench/out/rampart ./cmd/rampart
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(go version | cut -d' ' -f3)"
go run ./bench/respond --rampart bench/out/rampart --drills "${DRILLS:-50}"
