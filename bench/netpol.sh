#!/usr/bin/env bash
# Network policy benchmark (not run in CI).
#  1. Render: the view of 1,000 services and 20,000 edges and every host's
#     nftables table (go test -bench; target < 100 ms).
#  2. Propagation: a policy change to the rule applied on a host, with real
#     processes in network namespaces (server, three agents with
#     --netpol=enforce, proxies); the e2e test logs each figure; RUNS runs
#     give the median and the maximum (target < 2 s). Needs root.
#
# Usage: bench/netpol.sh [RUNS]    (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
echo "== nproc $(nproc); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== render (1,000 services, 20,000 edges, 50 hosts)"
go test ./internal/netpol -run '^$' -bench 'Render' -benchtime 20x -benchmem | grep -E '^Benchmark'
echo "== policy change -> applied on the host ($runs runs)"
go test ./e2e -run '^TestNetpolEnforcedAcrossHosts$' -count "$runs" -v 2>&1 \
  | sed -n 's/.*policy change to rule applied on the host: //p' \
  | awk '{ v=$1; if (v ~ /ms$/) { sub(/ms$/,"",v); v=v/1000 } else { sub(/s$/,"",v) } print v }' \
  | sort -n | awk '{ a[NR]=$1 } END { if (NR==0) { print "no figures (root and ip netns needed)"; exit 1 }
      printf "runs %d  min %.3fs  median %.3fs  max %.3fs  (target < 2s: %s)\n", NR, a[1], a[int((NR+1)/2)], a[NR], (a[NR] < 2 ? "met" : "missed") }'
