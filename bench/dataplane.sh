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
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "install wrk and nginx-light first" >&2; exit 1; }
mkdir -p bench/out
go build -o bench/out/rampart ./cmd/rampart
go run ./bench/dataplane --rampart "$PWD/bench/out/rampart" "$@"
