#!/usr/bin/env bash
# Supply-chain scan benchmark (not run in CI): `rampart scan` beside
# govulncheck (binary mode) and osv-scanner on the same inputs (the rampart
# binary itself, and an image tarball with Debian packages and Go binaries)
# and the same offline Go vulnerability database (golang.org/x/vulndb,
# pinned). govulncheck and osv-scanner are built from bench/scan's own
# go.mod (decision 0031), so they never enter Rampart's build.
#
# Usage: bench/scan.sh [RUNS]    (default 3 runs per tool and input)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "== building rampart, govulncheck and osv-scanner (in $work)"
go build -o "$work/tools/rampart" ./cmd/rampart
(cd bench/scan && go build -o "$work/tools/" golang.org/x/vuln/cmd/govulncheck github.com/google/osv-scanner/v2/cmd/osv-scanner && go build -o "$work/tools/scanbench" .)
echo "== nproc $(nproc); load $(cut -d' ' -f1-3 /proc/loadavg) (figures are noisy on a shared machine)"
"$work/tools/scanbench" -work "$work" -runs "$runs" -rampart "$work/tools/rampart" \
  -govulncheck "$work/tools/govulncheck" -osv-scanner "$work/tools/osv-scanner"
