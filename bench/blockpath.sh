#!/usr/bin/env bash
# The block data path against the disk it runs on, in one run:
#
#   bench/blockpath.sh [--seconds 10] [--qd 32] [--bs 4096] [--groups 8]
#
#   cds      `cargo run --example blockpath`: three BlockServers in one
#            process on loopback, --groups 3-replica BlockGroups, --qd
#            requests of --bs bytes in flight at random offsets, writes
#            then reads
#   fio      the same pattern on a local file in the same directory tree:
#            random writes each followed by fdatasync (what a replica's
#            acknowledged write must at least cost), and O_DIRECT random
#            reads (the device, without the page cache), --qd jobs
#
# Needs fio (.ci/run installs it). Prints a Markdown table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_=10
QD=32
BS=4096
GROUPS_N=8
while [[ $# -gt 0 ]]; do
    case $1 in
    --seconds) SECONDS_=$2; shift 2 ;;
    --qd) QD=$2; shift 2 ;;
    --bs) BS=$2; shift 2 ;;
    --groups) GROUPS_N=$2; shift 2 ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
command -v fio >/dev/null || { echo "fio is not installed (apt-get install fio)" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cargo build --release -p cds --example blockpath >/dev/null
BIN=target/release/examples/blockpath

cds() {
    "$BIN" --pattern "$1" --bs "$BS" --qd "$QD" --groups "$GROUPS_N" --seconds "$SECONDS_" --dir "$WORK"
}

# fio_iops RW EXTRA...: IOPS and p50/p99 (ms) of a fio run.
fio_run() {
    local rw=$1; shift
    fio --name=anchor --directory="$WORK" --filename=anchor.dat --size=256M --rw="$rw" \
        --bs="$BS" --ioengine=psync --numjobs="$QD" --group_reporting --time_based \
        --runtime="$SECONDS_" --output-format=json "$@" 2>/dev/null |
        python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
side = j["write"] if j["write"]["io_bytes"] else j["read"]
p = side["clat_ns"]["percentile"]
print("%.0f %.2f %.2f" % (side["iops"], p["50.000000"] / 1e6, p["99.000000"] / 1e6))'
}

w=$(cds randwrite)
r=$(cds randread)
read -r fw fw50 fw99 < <(fio_run randwrite --fdatasync=1)
read -r fr fr50 fr99 < <(fio_run randread --direct=1)
iops() { sed -E 's/.*: ([0-9]+) IOPS.*/\1/' <<<"$1"; }
lat() { sed -E "s/.*$1 ([0-9.]+) ms.*/\\1/" <<<"$2"; }
echo "## Block data path, ${BS}-byte requests, ${QD} in flight ($(date -u +%Y-%m-%d), $(nproc) cores)"
echo
echo "| pattern | cds (3 replicas, $GROUPS_N groups) | p50 | p99 | fio on a local file | p50 | p99 | ratio |"
echo "|---|---|---|---|---|---|---|---|"
echo "| randwrite | $(iops "$w") IOPS | $(lat p50 "$w") ms | $(lat p99 "$w") ms | $fw IOPS (fdatasync each) | $fw50 ms | $fw99 ms | $(( 100 * $(iops "$w") / ${fw%.*} )) % |"
echo "| randread | $(iops "$r") IOPS | $(lat p50 "$r") ms | $(lat p99 "$r") ms | $fr IOPS (O_DIRECT) | $fr50 ms | $fr99 ms | $(( 100 * $(iops "$r") / ${fr%.*} )) % |"
