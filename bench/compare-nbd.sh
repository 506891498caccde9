#!/usr/bin/env bash
# The same fio jobs, in one run, against two NBD servers on this machine:
#
#   (a) qemu-nbd serving a raw file on the same disk (one copy, the page
#       cache in front: the local floor of what an NBD client can get);
#   (b) a CDS volume over `cdsctl nbd serve` on a local cluster of real
#       processes (3 Masters, 3 BlockServers, every block 3 replicas,
#       every write committed by a majority with its log synced).
#
#   bench/compare-nbd.sh [--runtime 10] [--span 512M] [--out FILE.md]
#
# Jobs (fio --ioengine=nbd): 4 KiB randwrite and randread at QD1 and QD32,
# 1 MiB sequential write and read at QD8, over the first --span bytes
# (written once before the reads, so reads read data). For the QD1 write
# latency, qemu-nbd also runs with an fsync after every write (fio
# --fsync=1, an NBD FLUSH each): what a CDS write costs by default, since
# it is acknowledged only once durable on a majority.
#
# Needs qemu-utils, libnbd-bin and fio (.ci/run installs them). Prints a
# Markdown table (and writes it to --out when given).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUNTIME=10
SPAN=512M
OUT=""
while [[ $# -gt 0 ]]; do
    case $1 in
    --runtime) RUNTIME=$2; shift 2 ;;
    --span) SPAN=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
for t in qemu-nbd qemu-img fio nbdinfo python3; do
    command -v "$t" >/dev/null || { echo "$t is not installed (qemu-utils, libnbd-bin, fio)" >&2; exit 1; }
done

WORK=$(mktemp -d -p "${TMPDIR:-/tmp}")
CDSCTL=target/release/cdsctl
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if [[ -f $WORK/cds/cds.json ]]; then "$CDSCTL" cds down --dir "$WORK/cds" >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_nbd() {
    for _ in $(seq 100); do nbdinfo "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "no NBD server at $1" >&2; exit 1
}

cargo build --release -p cdsctl >/dev/null

# (a) qemu-nbd on a raw file.
QPORT=$(free_port)
qemu-img create -q -f raw "$WORK/anchor.raw" 1G
qemu-nbd -f raw -x anchor -b 127.0.0.1 -p "$QPORT" --persistent --shared=8 \
    --cache=writeback "$WORK/anchor.raw" &
PIDS+=($!)
QURI="nbd://127.0.0.1:$QPORT/anchor"
wait_nbd "$QURI"

# (b) a CDS volume.
"$CDSCTL" cds up --dir "$WORK/cds" >/dev/null
"$CDSCTL" volume create bench --size 1GiB --dir "$WORK/cds" >/dev/null
CPORT=$(free_port)
"$CDSCTL" nbd serve bench --listen "127.0.0.1:$CPORT" --dir "$WORK/cds" >/dev/null &
PIDS+=($!)
CURI="nbd://127.0.0.1:$CPORT/bench"
wait_nbd "$CURI"

# fio_run URI RW BS QD EXTRA...: "IOPS MB/s p50_ms p99_ms".
fio_run() {
    local uri=$1 rw=$2 bs=$3 qd=$4; shift 4
    fio --name=job --ioengine=nbd --uri="$uri" --rw="$rw" --bs="$bs" --iodepth="$qd" \
        --size="$SPAN" --time_based --runtime="$RUNTIME" --output-format=json "$@" 2>/dev/null |
        python3 -c '
import json, sys
# fio'"'"'s nbd engine prints a line before the JSON.
t = sys.stdin.read()
j = json.loads(t[t.index("{"):])["jobs"][0]
s = j["write"] if j["write"]["io_bytes"] else j["read"]
p = s["clat_ns"]["percentile"]
print("%.0f %.1f %.2f %.2f" % (s["iops"], s["bw_bytes"] / 1e6, p["50.000000"] / 1e6, p["99.000000"] / 1e6))'
}

# Both written once over the span, so reads read data.
for u in "$QURI" "$CURI"; do
    fio --name=fill --ioengine=nbd --uri="$u" --rw=write --bs=1M --iodepth=8 --size="$SPAN" >/dev/null 2>&1
done

row() {
    local name=$1 rw=$2 bs=$3 qd=$4
    read -r qi qm q50 q99 < <(fio_run "$QURI" "$rw" "$bs" "$qd")
    read -r ci cm c50 c99 < <(fio_run "$CURI" "$rw" "$bs" "$qd")
    local ratio=$(( 100 * ${ci%.*} / (${qi%.*} > 0 ? ${qi%.*} : 1) ))
    echo "| $name | $qi | $qm | $q50 | $q99 | $ci | $cm | $c50 | $c99 | $ratio % |"
}

{
    echo "## fio over NBD: qemu-nbd on a raw file vs a CDS volume ($(date -u +%Y-%m-%d), $(nproc) cores, ${RUNTIME}s per job)"
    echo
    echo "| job | qemu-nbd IOPS | MB/s | p50 ms | p99 ms | CDS IOPS | MB/s | p50 ms | p99 ms | CDS / qemu-nbd |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    row "randwrite 4k QD32" randwrite 4k 32
    row "randread 4k QD32" randread 4k 32
    row "randwrite 4k QD1" randwrite 4k 1
    row "randread 4k QD1" randread 4k 1
    row "write 1M QD8" write 1M 8
    row "read 1M QD8" read 1M 8
    read -r si sm s50 s99 < <(fio_run "$QURI" randwrite 4k 1 --fsync=1)
    echo
    echo "qemu-nbd randwrite 4k QD1 with an fsync (NBD FLUSH) after every write: $si IOPS, p50 $s50 ms, p99 $s99 ms."
} | tee "${OUT:-/dev/null}"
