#!/usr/bin/env bash
# Breach scope for one identity over a 7-day window of a 30-day audit log
# (default 10,000,000 entries; N=100000 for a quick look), answered by
# `rampart incident scope --data` (its identity/time index built on the
# first question, then reused), side by side with what a user would do
# today: `rampart audit export --format jsonl | jq` over the same log.
# Usage: N=10000000 bench/scope.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000000}
DATA=bench/out/scope-$N
mkdir -p bench/out
go build -o bench/out/rampart ./cmd/rampart
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(go version | cut -d' ' -f3)"
read -r SINCE UNTIL < <(go run ./bench/scope --data "$DATA" --entries "$N")
ID=spiffe://example.org/orders
echo "log: $N entries over 30 days in $DATA; window $SINCE .. $UNTIL; identity $ID"
rm -f "$DATA/respond-scope-index.json"
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
first=$(t bench/out/rampart incident scope --data "$DATA" --identity "$ID" --since "$SINCE" --until "$UNTIL" --json)
echo "rampart incident scope, first question (builds the index): ${first}s"
best=
for i in 1 2 3; do
  s=$(t bench/out/rampart incident scope --data "$DATA" --identity "$ID" --since "$SINCE" --until "$UNTIL" --json)
  if [ -z "$best" ] || [ "$(echo "$s < $best" | bc)" = 1 ]; then best=$s; fi
done
echo "rampart incident scope, with the index (best of 3): ${best}s"
jqs=$( { s=$(date +%s.%N)
  bench/out/rampart audit export --data "$DATA" --format jsonl \
    | jq -c --arg id "$ID" --arg s "$SINCE" --arg u "$UNTIL" \
      'select((.actor.spiffe_id == $id or .details.spiffe_id == $id) and .time >= $s and .time < $u)' \
    | jq -s 'group_by([.action, .target, .details.method, .details.path, .outcome]) | map({k: .[0].action, n: length}) | length' >/dev/null
  e=$(date +%s.%N); echo "$e - $s" | bc; } )
echo "rampart audit export --format jsonl | jq: ${jqs}s"
echo "speed-up: $(echo "scale=1; $jqs / $best" | bc)x (target >= 10x, and < 5 s for 10,000,000 entries)"
bench/out/rampart incident scope --data "$DATA" --identity "$ID" --since "$SINCE" --until "$UNTIL" --json \
  | jq '{entries, scanned, reached: (.reached|length), refused: (.refused|length), tokens: (.tokens|length), keys: (.keys|length), svids: (.svids|length)}'
