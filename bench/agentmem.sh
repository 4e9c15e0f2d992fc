#!/usr/bin/env bash
# Agent memory with many entries, and the first fetch of a new workload.
# Usage: bench/agentmem.sh [entries] [older-rampart-binary-to-compare] [agentmem flags, e.g. --batch 1]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out
go build -o bench/out/rampart ./cmd/rampart
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(go version | cut -d' ' -f3)"
if [ -n "${2:-}" ]; then
  echo "== $2"
  go run ./bench/agentmem --rampart "$2" --entries "${1:-1000}" "${@:3}"
fi
echo "== this tree"
go run ./bench/agentmem --rampart bench/out/rampart --entries "${1:-1000}" "${@:3}"
