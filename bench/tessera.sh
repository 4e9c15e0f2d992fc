#!/usr/bin/env bash
# Audit log vs transparency-dev/tessera (POSIX driver), side by side: the same
# ~340-byte entries from 256 concurrent writers, each waiting until its entry
# is durable, 5 s each. Tessera lives in its own module (bench/tessera).
# Usage: bench/tessera.sh
set -euo pipefail
cd "$(dirname "$0")/tessera"
go test -count=1 -run TestSideBySide -v . | grep -E 'writers|entries/s|ratio'
