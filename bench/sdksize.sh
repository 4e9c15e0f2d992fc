#!/usr/bin/env bash
# What the SDK costs a service: the dependency count of sdk/... and the size
# of examples/payments built with the SDK (default, and with
# -tags rampart_omit_cel), next to the same service written with go-spiffe
# alone (bench/sdksize/payments-gospiffe). Sizes are of
# `go build -ldflags=-s -trimpath` (no symbol table, as shipped).
# Usage: bench/sdksize.sh [REF]   REF: also build examples/payments against the
#                                 SDK of that commit (e.g. one before issue 29)
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench/out/sdksize
mkdir -p "$out"
size() { stat -c %s "$1"; }
build() { go build -ldflags=-s -trimpath "$@"; }

build -o "$out/gospiffe" ./bench/sdksize/payments-gospiffe
build -o "$out/sdk" ./examples/payments
build -tags rampart_omit_cel -o "$out/sdk-nocel" ./examples/payments
base=$(size "$out/gospiffe")
report() { awk -v n="$1" -v s="$2" -v b="$base" 'BEGIN { printf "%-44s %6.1f MB  %.2fx\n", n, s/1e6, s/b }'; }
echo "$(go version | cut -d' ' -f3), $(go env GOOS)/$(go env GOARCH), CGO_ENABLED=$(go env CGO_ENABLED)"
echo "sdk/...: $(go list -deps ./sdk/... | wc -l) packages, $(go list -deps -f '{{with .Module}}{{.Path}}{{end}}' ./sdk/... | sort -u | wc -l) modules"
report "payments, go-spiffe alone" "$base"
report "payments, SDK" "$(size "$out/sdk")"
report "payments, SDK, -tags rampart_omit_cel" "$(size "$out/sdk-nocel")"

if [ $# -gt 0 ]; then
  tree=$(mktemp -d)
  trap 'rm -rf "$tree"' EXIT
  git archive "$1" | tar -x -C "$tree"
  mkdir -p "$tree/examples/payments" && cp examples/payments/main.go "$tree/examples/payments/"
  (cd "$tree" && echo "sdk/... at $1: $(go list -deps ./sdk/... | wc -l) packages, $(go list -deps -f '{{with .Module}}{{.Path}}{{end}}' ./sdk/... | sort -u | wc -l) modules" &&
    build -o "$OLDPWD/$out/sdk-at-ref" ./examples/payments)
  report "payments, SDK at $1" "$(size "$out/sdk-at-ref")"
fi
