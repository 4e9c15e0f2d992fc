#!/usr/bin/env bash
# Rampart vs SPIRE v1.13.3, side by side on this host, each as a real server
# and agent (SQLite, join token, Workload API on a unix socket), in
# alternating rounds (rampart, SPIRE, SPIRE with fast sync; again...):
#   - bulk registration of N entries from one file (rampart entry create
#     --file vs spire-server entry create -data, SPIRE's BatchCreateEntry);
#   - propagation of a new entry to a workload watching the Workload API
#     (SPIRE at its default 5s intervals, and at --spire-fast-interval);
#   - FetchX509SVID calls/s and p99 at 1 and 16 go-spiffe callers;
#   - server and agent RssAnon / VmHWM with the N entries registered.
# Prints each figure per run, then medians and a ratio per figure.
#
# SPIRE is built from its own module (bench/spire/build: only SPIRE's own
# dependency versions) once, into bench/spire/bin (gitignored; delete it
# to rebuild; the first build takes several minutes on 2 cores). The
# driver is the module bench/spire. Neither is part of Rampart's build,
# `go test ./...` or .ci/run.
#
# Usage: bench/spire.sh [--entries 10000] [--rounds 3] [--propagations 5]
#        [--callers 1,16] [--fetch-duration 5s] [--spire-fast-interval 1s]
#        [--timeout 30m]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out bench/spire/bin
go build -o bench/out/rampart ./cmd/rampart
if [ ! -x bench/spire/bin/spire-server ] || [ ! -x bench/spire/bin/spire-agent ]; then
  (cd bench/spire/build && go build -o ../bin/ github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent)
fi
(cd bench/spire && go build -o ../out/spirebench .)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(go version | cut -d' ' -f3); $(bench/spire/bin/spire-server --version 2>&1 | head -1 | sed 's/^/spire-server /')"
# The driver stops its children when interrupted, and they die with it
# (Pdeathsig); the trap makes sure an interrupted script stops the driver.
bench/out/spirebench --rampart bench/out/rampart --spire-server bench/spire/bin/spire-server \
  --spire-agent bench/spire/bin/spire-agent "$@" &
pid=$!
trap 'kill -INT "$pid" 2>/dev/null; wait "$pid"' INT TERM EXIT
status=0
wait "$pid" || status=$?
trap - INT TERM EXIT
exit "$status"
