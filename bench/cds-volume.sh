#!/usr/bin/env bash
# A CDS volume against the disk it runs on, in one run:
#
#   bench/cds-volume.sh [--seconds 10] [--groups 32] [--idle-groups 256]
#
#   cds      `cdsctl cds up` (3 Masters, 3 BlockServers with 2 disks each,
#            --groups BlockGroups of 3 replicas) and `cdsctl volume bench`
#            through the client library: 4 KiB random writes and reads at
#            QD32 and QD1, 1 MiB sequential writes and reads at QD4
#   fio      the same patterns on a local file in the same directory tree:
#            random writes each followed by fdatasync (what a replica's
#            acknowledged write must at least cost) and O_DIRECT reads
#   idle     a second cluster with --idle-groups groups and 10 volumes of
#            1 GiB, each written to in every block; then the CPU each
#            process uses over 30 idle seconds (from /proc/PID/stat)
#
# Needs fio (.ci/run installs it) and a release build of cdsctl. Prints
# Markdown tables. Everything runs on this machine: the figures compare
# the two sides of one run, not machines.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECS=10
GROUPS_N=32
IDLE_GROUPS=256
while [[ $# -gt 0 ]]; do
    case $1 in
    --seconds) SECS=$2; shift 2 ;;
    --groups) GROUPS_N=$2; shift 2 ;;
    --idle-groups) IDLE_GROUPS=$2; shift 2 ;;
    -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
command -v fio >/dev/null || { echo "fio is missing (apt-get install fio)" >&2; exit 1; }
cargo build --release -p cdsctl --quiet
CDSCTL=$PWD/target/release/cdsctl
WORK=$(mktemp -d "$PWD/target/cds-volume.XXXXXX")
cleanup() {
    for c in "$WORK"/c "$WORK"/idle; do
        [ -f "$c/cds.json" ] && "$CDSCTL" cds down --dir "$c" >/dev/null 2>&1 || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

"$CDSCTL" cds up --dir "$WORK/c" --groups "$GROUPS_N" >/dev/null
"$CDSCTL" volume create vol1 --size 4GiB --dir "$WORK/c" >/dev/null

# cds_row NAME PATTERN BS QD: one `volume bench` as a table row.
cds_row() {
    local out
    out=$("$CDSCTL" volume bench vol1 --pattern "$2" --bs "$3" --qd "$4" \
        --duration "${SECS}s" --json --dir "$WORK/c")
    python3 -c '
import json, sys
r = json.loads(sys.argv[2])
print("| %s | cds volume | %.0f | %.1f | %.2f | %.2f |" % (sys.argv[1], r["iops"], r["mb_per_s"],
      r["p50_us"] / 1000, r["p99_us"] / 1000))' "$1" "$out"
}

# fio_row NAME RW BS QD EXTRA...: the same pattern on a local file.
fio_row() {
    local name=$1 rw=$2 bs=$3 qd=$4
    shift 4
    local out
    out=$(fio --name=anchor --filename="$WORK/fio.dat" --size=1G --rw="$rw" --bs="$bs" \
        --numjobs="$qd" --group_reporting --time_based --runtime="$SECS" \
        --ioengine=psync --output-format=json "$@")
    python3 -c '
import json, sys
j = json.loads(sys.argv[2])["jobs"][0]
side = j["write"] if j["write"]["io_bytes"] else j["read"]
lat = side.get("clat_ns") or side["lat_ns"]
pct = lat.get("percentile", {})
# fio times a write without its fdatasync: no latency column for writes.
ms = lambda k: "-" if j["write"]["io_bytes"] else "%.2f" % (pct.get(k, 0) / 1e6)
print("| %s | fio local file | %.0f | %.1f | %s | %s |" % (sys.argv[1], side["iops"],
      side["bw_bytes"] / 1e6, ms("50.000000"), ms("99.000000")))' \
        "$name" "$out"
}

echo "| pattern | side | IOPS | MB/s | p50 ms | p99 ms |"
echo "|---|---|---:|---:|---:|---:|"
cds_row "4k randwrite QD32" randwrite 4k 32
fio_row "4k randwrite QD32" randwrite 4k 32 --fdatasync=1
cds_row "4k randread QD32" randread 4k 32
fio_row "4k randread QD32" randread 4k 32 --direct=1
cds_row "4k randwrite QD1" randwrite 4k 1
fio_row "4k randwrite QD1" randwrite 4k 1 --fdatasync=1
cds_row "4k randread QD1" randread 4k 1
fio_row "4k randread QD1" randread 4k 1 --direct=1
cds_row "1M write QD4" write 1M 4
fio_row "1M write QD4" write 1M 4 --fdatasync=1
cds_row "1M read QD4" read 1M 4
fio_row "1M read QD4" read 1M 4 --direct=1
"$CDSCTL" cds down --dir "$WORK/c" >/dev/null

# Idle: 10 volumes spread over the groups, then 30 quiet seconds.
"$CDSCTL" cds up --dir "$WORK/idle" --groups "$IDLE_GROUPS" >/dev/null
for i in $(seq 1 10); do
    "$CDSCTL" volume create "v$i" --size 1GiB --dir "$WORK/idle" >/dev/null
    "$CDSCTL" volume bench "v$i" --pattern randwrite --bs 4k --qd 32 --duration 2s \
        --dir "$WORK/idle" >/dev/null
done
sleep 5
pids=$(python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
for kind in ("masters", "servers"):
    for i, p in enumerate(c[kind]):
        print("%s%d %d" % (kind[0], i + 1, p["pid"]))' "$WORK/idle/cds.json")
ticks() { while read -r _ pid; do awk '{ print $14 + $15 }' "/proc/$pid/stat"; done <<<"$pids"; }
before=$(ticks)
sleep 30
after=$(ticks)
echo
echo "Idle, $IDLE_GROUPS groups, 10 volumes: CPU over 30 s"
echo "| process | % of one core |"
echo "|---|---:|"
paste <(echo "$pids") <(echo "$before") <(echo "$after") |
    awk -v tk="$(getconf CLK_TCK)" '{ printf "| %s | %.2f |\n", $1, ($4 - $3) / tk / 30 * 100 }'
