#!/usr/bin/env bash
# Backup benchmark: backup and restore of a server's state (a real data
# directory: a SQLite store of issued-SVID records and a sealed audit log of
# authorisation decisions, made by bench/backup/main.go), in MB/s of state,
# side by side in one run with
#   - tar | zstd | age on the same directory (the ceiling; target >= 80%),
#   - restic from Debian's packages (a peer; target: faster),
# and the time of a restore drill (restore into a scratch directory, start
# a server on it, check it) for that state.
#
# Usage: bench/backup.sh [STORE_MB] [AUDIT_ENTRIES]
#   the full run (about 1 GB of state): bench/backup.sh 500 4000000
#   a quick check:                      bench/backup.sh 20 100000
set -euo pipefail
cd "$(dirname "$0")/.."
STORE_MB=${1:-500}
ENTRIES=${2:-4000000}
for tool in age age-keygen zstd restic tar; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install age zstd restic)"; exit 1; }
done
out=$(mktemp -d /tmp/rampart-bench-backup.XXXXXX)
trap 'rm -rf "$out"' EXIT
mkdir -p bench/out
go build -o bench/out/rampart ./cmd/rampart
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(go version | cut -d' ' -f3)"

go run ./bench/backup -data "$out/data" -store-mb "$STORE_MB" -audit-entries "$ENTRIES"
bytes=$(du -sb --apparent-size "$out/data" | cut -f1)
# entries.log keeps sealed ranges as holes: count what is stored.
stored=$(du -s --block-size=1 "$out/data" | cut -f1)
echo "data directory: $((bytes / 1000000)) MB apparent, $((stored / 1000000)) MB on disk (store $(du -s --block-size=1 "$out/data/rampart.db" | cut -f1) B, audit $(du -s --block-size=1 "$out/data/audit" | cut -f1) B on disk)"
mb=$(echo "scale=3; $stored / 1000000" | bc)

age-keygen -o "$out/key.txt" 2>/dev/null
recipient=$(age-keygen -y "$out/key.txt")
echo "$recipient" >"$out/recipients.txt"
cat >"$out/backup.yaml" <<EOF
destinations: [$out/dest]
recipients_file: $out/recipients.txt
EOF
sync

rate() { echo "scale=1; $mb / $1" | bc; }
now() { date +%s.%N; }

# rampart backup (the server stopped: the same code the schedule runs).
t0=$(now)
bench/out/rampart backup create --data "$out/data" --config "$out/backup.yaml" --trust-domain bench.example >/dev/null
t1=$(now); rampart_b=$(echo "$t1 - $t0" | bc)
cp "$out/data/backup.pub" "$out/backup.pub"; cp "$out/data/keys/kek" "$out/kek"
t0=$(now)
bench/out/rampart backup restore --dest "$out/dest" --pubkey "$out/backup.pub" -i "$out/key.txt" --data "$out/restored" --kek-file "$out/kek" --seen "$out/seen.json" >/dev/null
t1=$(now); rampart_r=$(echo "$t1 - $t0" | bc)
t0=$(now)
bench/out/rampart backup drill --dest "$out/dest" --pubkey "$out/backup.pub" -i "$out/key.txt" --trust-domain bench.example --kek-file "$out/kek" --scratch "$out" >/dev/null
t1=$(now); drill=$(echo "$t1 - $t0" | bc)
rampart_size=$(du -sb "$out/dest" | cut -f1)
rm -rf "$out/restored"

# The ceiling: tar | zstd | age, and back.
t0=$(now)
tar -C "$out/data" --sparse -cf - . | zstd -q -T0 | age -r "$recipient" >"$out/ceiling.tar.zst.age"
t1=$(now); ceil_b=$(echo "$t1 - $t0" | bc)
mkdir "$out/ceiling"
t0=$(now)
age -d -i "$out/key.txt" "$out/ceiling.tar.zst.age" | zstd -q -d -T0 | tar -C "$out/ceiling" -xf -
t1=$(now); ceil_r=$(echo "$t1 - $t0" | bc)
ceil_size=$(du -sb "$out/ceiling.tar.zst.age" | cut -f1)
rm -rf "$out/ceiling" "$out/ceiling.tar.zst.age"

# restic (Debian's package), its default compression.
export RESTIC_PASSWORD=bench-only-password RESTIC_REPOSITORY="$out/restic"
restic init -q >/dev/null
t0=$(now)
restic backup -q "$out/data" >/dev/null
t1=$(now); restic_b=$(echo "$t1 - $t0" | bc)
t0=$(now)
restic restore -q latest --target "$out/restic-restored" >/dev/null
t1=$(now); restic_r=$(echo "$t1 - $t0" | bc)
restic_size=$(du -sb "$out/restic" | cut -f1)

printf '\n%-22s %10s %10s %12s %12s\n' "state: ${mb} MB" "backup s" "restore s" "backup MB/s" "restore MB/s"
printf '%-22s %10.2f %10.2f %12s %12s   stored %d MB\n' "rampart" "$rampart_b" "$rampart_r" "$(rate "$rampart_b")" "$(rate "$rampart_r")" $((rampart_size / 1000000))
printf '%-22s %10.2f %10.2f %12s %12s   stored %d MB\n' "tar|zstd -T0|age" "$ceil_b" "$ceil_r" "$(rate "$ceil_b")" "$(rate "$ceil_r")" $((ceil_size / 1000000))
printf '%-22s %10.2f %10.2f %12s %12s   stored %d MB\n' "restic $(restic version | cut -d' ' -f2)" "$restic_b" "$restic_r" "$(rate "$restic_b")" "$(rate "$restic_r")" $((restic_size / 1000000))
echo "rampart / ceiling: backup $(echo "scale=0; 100 * $ceil_b / $rampart_b" | bc)%, restore $(echo "scale=0; 100 * $ceil_r / $rampart_r" | bc)% (target >= 80%)"
echo "rampart / restic:  backup $(echo "scale=2; $restic_b / $rampart_b" | bc)x, restore $(echo "scale=2; $restic_r / $rampart_r" | bc)x as fast (target > 1)"
echo "restore drill (restore, start a server, check it): ${drill} s"
