#!/usr/bin/env bash
# Snapshots, rollback and their cost, on a local CDS cluster, in one run:
#
#   bench/snapshots.sh [--seconds 20] [--groups 32]
#
#   snapshot   time to take a snapshot of a 10 GiB volume with data in
#              every block (`volume snapshot` wall time, CLI start included)
#   p99        4 KiB random writes at QD32 through the client library
#              (`volume bench`): alone, while a snapshot is taken every 2 s,
#              and while a rollback of 1 GiB of changed data happens
#   rollback   time until every group took the rollback (the volume reads
#              the snapshot from then on), and until the abandoned 1 GiB
#              was reclaimed in the background (`volume snapshots --json`
#              gone_bytes back to 0)
#   space      a snapshot of a 1 GiB volume, then 10% of it rewritten: in
#              1 MiB runs (`volume write`), and as 4 KiB random writes over
#              NBD (fio, each 4 KiB written once): the space the head had
#              to copy, as a share of the volume
#
# Needs fio and a release build of cdsctl. Prints Markdown. Figures, not
# pass/fail; not part of CI. About 4 GiB of free space in target/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECS=20
GROUPS_N=32
while [[ $# -gt 0 ]]; do
    case $1 in
    --seconds) SECS=$2; shift 2 ;;
    --groups) GROUPS_N=$2; shift 2 ;;
    -h | --help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
for t in fio python3; do
    command -v "$t" >/dev/null || { echo "$t is not installed" >&2; exit 1; }
done
cargo build --release -p cdsctl --quiet
CDSCTL=$PWD/target/release/cdsctl
WORK=$(mktemp -d "$PWD/target/snapshots.XXXXXX")
NBD_PID=
BENCH_PID=
cleanup() {
    [ -n "$NBD_PID" ] && kill "$NBD_PID" 2>/dev/null || true
    [ -n "$BENCH_PID" ] && kill "$BENCH_PID" 2>/dev/null || true
    [ -f "$WORK/c/cds.json" ] && "$CDSCTL" cds down --dir "$WORK/c" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
cds() { "$CDSCTL" "$@" --dir "$WORK/c"; }
# ms_of "...done in 23.4 ms..." -> 23.4
ms_of() { sed -n 's/.*done in \([0-9.]*\) ms.*/\1/p'; }
# json FILE EXPR: a field of a JSON file (python expression over j).
json() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }
now_ms() { date +%s%3N; }
# stats: "min median max" of numbers on stdin.
stats() {
    python3 -c '
import sys, statistics
v = sorted(float(x) for x in sys.stdin.read().split())
print("%.1f %.1f %.1f" % (v[0], statistics.median(v), v[-1]))'
}

"$CDSCTL" cds up --dir "$WORK/c" --groups "$GROUPS_N" >/dev/null

# --- a 10 GiB volume with data in every block ---------------------------
cds volume create vol1 --size 10GiB >/dev/null
head -c 1G /dev/urandom >"$WORK/a.img"
cds volume write vol1 --file "$WORK/a.img" --offset 0 >/dev/null
cds volume bench vol1 --pattern randwrite --span 10GiB --duration 10s --json >"$WORK/fill.json"
blocks=$(cds volume info vol1 --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["blocks"]))')
for i in 1 2 3 4 5; do
    cds volume snapshot vol1 "t$i" | ms_of >>"$WORK/snap10g.txt"
done
read -r s_min s_med s_max < <(stats <"$WORK/snap10g.txt")
for i in 1 2 3 4 5; do cds volume snapshot-rm vol1 "t$i" >/dev/null; done

# --- write p99: alone, and while snapshots are taken ---------------------
bench() { cds volume bench vol1 --pattern randwrite --bs 4k --qd 32 --duration "$1" --json; }
bench "${SECS}s" >"$WORK/alone.json"
bench "${SECS}s" >"$WORK/during-snap.json" &
BENCH_PID=$!
sleep 1
n=0
while kill -0 "$BENCH_PID" 2>/dev/null && [ $n -lt $((SECS / 2 - 1)) ]; do
    n=$((n + 1))
    cds volume snapshot vol1 "u$n" | ms_of >>"$WORK/snap-load.txt"
    sleep 2
done
wait "$BENCH_PID"
BENCH_PID=
read -r l_min l_med l_max < <(stats <"$WORK/snap-load.txt")
for i in $(seq 1 $n); do cds volume snapshot-rm vol1 "u$i" >/dev/null; done

# --- rollback of 1 GiB changed, under the same load ---------------------
cds volume snapshot vol1 before >/dev/null
head -c 1G /dev/urandom >"$WORK/b.img"
# The changed GiB is the second one: the load below writes the first.
cds volume write vol1 --file "$WORK/b.img" --offset 1073741824 >/dev/null
cds volume snapshots vol1 --json >"$WORK/snaps.json"
changed=$(json "$WORK/snaps.json" 'j["head_bytes"]')
abandoned=$(json "$WORK/snaps.json" 'j["head"]')
bench "${SECS}s" >"$WORK/during-rollback.json" &
BENCH_PID=$!
sleep 3
t0=$(now_ms)
rb_ms=$(cds volume rollback vol1 before | ms_of)
# The abandoned head's own slices (the changed GiB and the load's
# writes before the rollback) go back to the free list.
left=1
while [ "$left" != 0 ] && [ $(($(now_ms) - t0)) -lt 120000 ]; do
    cds volume snapshots vol1 --json >"$WORK/snaps.json"
    left=$(json "$WORK/snaps.json" "j['gone_versions'].get('$abandoned', 0)")
    [ "$left" = 0 ] || sleep 0.2
done
reclaim_ms=$(($(now_ms) - t0))
[ "$left" = 0 ] || reclaim_ms="over 120000 ($left bytes left)"
wait "$BENCH_PID"
BENCH_PID=
# The head reads the snapshot where the load did not write.
cds volume read vol1 --offset 1073741824 --length 16777216 --out "$WORK/head.bin" >/dev/null
cds volume read vol1@before --offset 1073741824 --length 16777216 --out "$WORK/snap.bin" >/dev/null
cmp -s "$WORK/head.bin" "$WORK/snap.bin" && ! cmp -s "$WORK/head.bin" <(head -c 16777216 "$WORK/b.img") &&
    rb_check="the head reads the snapshot" || rb_check="WRONG: the head does not read the snapshot"

# --- space: 10% rewritten after a snapshot --------------------------------
space_row() {
    local vol=$1 how=$2
    local head_bytes
    head_bytes=$(cds volume snapshots "$vol" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["head_bytes"])')
    python3 -c 'import sys; h=int(sys.argv[2]); print("| %s | %.1f MiB | %.1f%% |" % (sys.argv[1], h/2**20, 100*h/2**30))' "$how" "$head_bytes"
}
ten=$(((1 << 30) / 10))
for v in vol2 vol3; do
    cds volume create "$v" --size 1GiB >/dev/null
    cds volume write "$v" --file "$WORK/a.img" --offset 0 >/dev/null
    cds volume snapshot "$v" s >/dev/null
done
# vol2: 1 MiB runs at random offsets, each once, 10% of the volume.
python3 -c '
import random, sys
random.seed(7)
for o in sorted(random.sample(range(1024), 102)): print(o * 1048576)' >"$WORK/offsets.txt"
head -c 1M /dev/urandom >"$WORK/1m.img"
while read -r off; do cds volume write vol2 --file "$WORK/1m.img" --offset "$off" >/dev/null; done <"$WORK/offsets.txt"
# vol3: 4 KiB random writes over NBD, each 4 KiB once (fio's random map).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cds nbd serve vol3 --listen "127.0.0.1:$port" >/dev/null 2>&1 &
NBD_PID=$!
for _ in $(seq 1 100); do
    python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),1)' "$port" 2>/dev/null && break
    sleep 0.1
done
fio --name=rewrite --ioengine=nbd --uri="nbd://127.0.0.1:$port" --rw=randwrite --bs=4k \
    --iodepth=32 --size=1G --io_size="$ten" --randseed=7 >/dev/null 2>&1
kill "$NBD_PID"
wait "$NBD_PID" 2>/dev/null || true
NBD_PID=

# --- report -----------------------------------------------------------------
row() {
    python3 -c '
import json, sys
r = json.load(open(sys.argv[2]))
print("| %s | %.0f | %.2f | %.2f | %.1f |" % (sys.argv[1], r["iops"], r["p50_us"] / 1000,
      r["p99_us"] / 1000, r["max_us"] / 1000))' "$1" "$2"
}
echo "## Snapshots and rollback ($(date -u +%Y-%m-%d), $(nproc) cores, $GROUPS_N groups, 3 BlockServers)"
echo
echo "| what | figure |"
echo "|---|---|"
echo "| snapshot of a 10 GiB volume ($blocks blocks allocated), idle: min / median / max | $s_min / $s_med / $s_max ms |"
echo "| snapshot under 4 KiB QD32 random writes ($n taken): min / median / max | $l_min / $l_med / $l_max ms |"
echo "| rollback of $((changed >> 20)) MiB changed, under load: every group took it | $rb_ms ms ($rb_check) |"
echo "| rollback: the abandoned data reclaimed in the background | $reclaim_ms ms |"
echo
echo "| 4 KiB random writes, QD32, ${SECS}s | IOPS | p50 ms | p99 ms | max ms |"
echo "|---|---|---|---|---|"
row "alone" "$WORK/alone.json"
row "a snapshot every 2 s" "$WORK/during-snap.json"
row "a rollback 3 s in" "$WORK/during-rollback.json"
python3 -c '
import json, sys
a, s, r = (json.load(open(f))["p99_us"] for f in sys.argv[1:4])
print()
print("p99 during snapshots: %.2fx alone; during the rollback: %.2fx alone (goal: under 2x)" % (s / a, r / a))' \
    "$WORK/alone.json" "$WORK/during-snap.json" "$WORK/during-rollback.json"
echo
echo "| 1 GiB volume, snapshot, then 10% rewritten | the head's copied slices | of the volume |"
echo "|---|---|---|"
space_row vol2 "102 runs of 1 MiB"
space_row vol3 "26214 random 4 KiB writes (fio over NBD)"
