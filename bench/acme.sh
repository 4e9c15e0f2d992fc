#!/usr/bin/env bash
# ACME orders per second with http-01: Rampart's ACME server vs step-ca's
# (smallstep/certificates, built from bench/acme's own module so it stays out
# of Rampart's build), side by side in one run, both driven by lego.
# Usage: bench/acme.sh [--orders N] [--concurrency C]   (default 2000 and 16)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench/out
go build -o bench/out/rampart ./cmd/rampart
(cd bench/acme && CGO_ENABLED=0 go build -o ../out/step-ca github.com/smallstep/certificates/cmd/step-ca)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(go version | cut -d' ' -f3), load average $(cut -d' ' -f1-3 /proc/loadavg)"
cd bench/acme
go run . --rampart ../out/rampart --step-ca ../out/step-ca --orders 2000 --concurrency 16 "$@" | tee ../out/acme.txt
