#!/usr/bin/env bash
# Key store benchmark against a real rampart server on loopback: encrypt
# ops/s over mTLS through the API (policy + durable audit per operation),
# with the ratio to the 20,000/s target and to Vault transit's published
# example; then the SDK's field encryption next to raw AES-256-GCM from the
# standard library (the ceiling; target >= 90%).
# Usage: bench/kms.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out
go build -o bench/out/rampart ./cmd/rampart
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(go version | cut -d' ' -f3)"
go run ./bench/kms --rampart bench/out/rampart
go test -run XXX -bench 'RawAESGCM|SDK' -benchtime 1s ./sdk/kms/ | tee bench/out/kms-sdk.txt
# Ratios, like for like (append-* and seal/open reuse buffers; encrypt and
# seal-alloc allocate their output).
awk '/^Benchmark/ { split($1, p, "/"); n = p[2] "/" p[3]; sub(/-[0-9]+$/, "", n); mbs[n] = $(NF-1) }
END {
  split("append-encrypt:seal append-decrypt:open encrypt:seal-alloc", pairs, " ")
  for (i in pairs) { split(pairs[i], q, ":")
    for (s = 0; s < 2; s++) { sz = s ? "1MiB" : "1KiB"
      a = mbs[q[1] "/" sz]; b = mbs[q[2] "/" sz]
      if (a && b) printf "SDK %s/%s: %.0f MB/s = %.0f%% of raw %s (%.0f MB/s)\n", q[1], sz, a, 100*a/b, q[2], b } } }' bench/out/kms-sdk.txt
