#!/usr/bin/env bash
# End-to-end data-plane benchmark: direct HTTP vs a rampart proxy pair vs an
# nginx (Debian) mTLS pair, same app, same keep-alive, on loopback.
# Needs: wrk and nginx-light from Debian (apt-get install wrk nginx-light).
# With --overload: the overload curve instead (open loop from 0.5x to 3x the
# rampart pair's capacity, shipping off and on, beside the nginx pair), e.g.
#   bench/dataplane.sh --overload --rounds 3 --overload-duration 10s
# (about 12 minutes; run it on a quiet machine). With --pin 0:1 the generator
# (and wrk) run on CPU 0 and everything measured on CPU 1, as callers are on
# other machines in a deployment; without it (the default, as before) all share
# every CPU, so the generator competes with the pair it measures.
# With --overload-app WORKERS:SERVICE the pairs front an app slower than the
# proxies (WORKERS/SERVICE answers a second, paced), the common overload, e.g.
#   bench/dataplane.sh --overload --pin 0:1 --rounds 3 --overload-app 8:2ms \
#     --proxy-flags "--upstream-max-conns 16"
#
# The open-loop generator (bench/dataplane/overload.go), changed 2026-12-04
# after every system, the nginx reference included, collapsed at or below
# the capacity it sustained in a closed loop (docs/benchmarks.md, "overload"):
#  - it no longer spins on the clock between requests due less than 1 ms
#    apart (70% of its own CPU profile; on one CPU, --pin, it delayed the
#    goroutines reading the answers by a scheduler slice, 10 ms, each, and
#    put a 30 ms p50 on every system at half load);
#  - it connects as a caller's pool does (Go's http.Transport): a request
#    that finds no idle connection waits for the first to come free, the one
#    dialled for it or another, instead of owning a dial (each run began
#    with all 1,024 connections dialled at once, which alone put the systems
#    in a regime where they serve about half of what they serve over 64);
#  - each open-loop run starts with --overload-warm (64) connections open,
#    as a caller in steady state has them, not from none;
#  - the nginx pair and app listen with Go's accept queue (4096, not nginx's
#    511, which overflowed: each dropped SYN costs its caller 1 s) and
#    16384 worker connections.
# Unchanged: latency counts from each request's scheduled time (no
# coordinated omission), at most --overload-conns (1,024) connections, a
# request waiting for one counts its wait against its 2 s timeout, and a
# connection whose request timed out is closed, as a caller's would be.
# --overload-timeline prints each run second by second; every run reports
# the generator's own CPU, its dials, how late it handed requests out and the
# kernel's TCP counters (accept-queue overflows, retransmits), so a reader
# can tell the generator's limits from the systems'. A "host:" line (and,
# with the timeline, one a second) tells the machine's part: the measured
# CPUs' busy and steal time, the system's CPU, the busiest other process the
# benchmark started (it named the agent once: decision 0058), and a probe
# pinned to the systems' CPU timing fixed work by its own CPU clock (a host
# running other guests on that CPU shows as steal or as the probe slowing).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "install wrk and nginx-light first" >&2; exit 1; }
mkdir -p bench/out
go build -o bench/out/rampart ./cmd/rampart
go run ./bench/dataplane --rampart "$PWD/bench/out/rampart" "$@"
