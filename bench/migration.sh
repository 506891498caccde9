#!/usr/bin/env bash
# Smooth migration: the latency an NBD client sees while the Master moves
# every replica off a node (a drain), against the same job with nothing
# moving, in one run on one cluster:
#
#   (a) fio 4 KiB randwrite at QD8 over NBD on a CDS volume, nothing moving;
#   (b) the same job while `cdsctl cds drain b6` moves b6's replicas to the
#       other nodes (add learner, snapshot install or log, change voters).
#
#   bench/migration.sh [--runtime 40] [--span 512M] [--groups 24] [--out FILE.md]
#
# The cluster is `cds up --topology default` (6 BlockServers over 3 zones).
# The volume is written whole over --span first, so every group holds
# data to move. Reports IOPS, p50, p99 and max latency, fio's error
# count, the p99 ratio (goal: under 2x, no IO error), and how long the
# drain took. Needs libnbd-bin and fio (.ci/run installs them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

RUNTIME=40
SPAN=512M
NGROUPS=24
OUT=""
while [[ $# -gt 0 ]]; do
    case $1 in
    --runtime) RUNTIME=$2; shift 2 ;;
    --span) SPAN=$2; shift 2 ;;
    --groups) NGROUPS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
for t in fio nbdinfo python3; do
    command -v "$t" >/dev/null || { echo "$t is not installed (libnbd-bin, fio)" >&2; exit 1; }
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

"$CDSCTL" cds up --dir "$WORK/cds" --topology default --groups "$NGROUPS" >/dev/null
"$CDSCTL" volume create bench --size 1GiB --dir "$WORK/cds" >/dev/null
PORT=$(free_port)
"$CDSCTL" nbd serve bench --listen "127.0.0.1:$PORT" --dir "$WORK/cds" >/dev/null &
PIDS+=($!)
URI="nbd://127.0.0.1:$PORT/bench"
wait_nbd "$URI"
fio --name=fill --ioengine=nbd --uri="$URI" --rw=write --bs=1M --iodepth=8 --size="$SPAN" >/dev/null 2>&1

# job: "IOPS p50_ms p99_ms max_ms errors".
job() {
    fio --name=job --ioengine=nbd --uri="$URI" --rw=randwrite --bs=4k --iodepth=8 \
        --size="$SPAN" --time_based --runtime="$RUNTIME" --output-format=json 2>/dev/null |
        python3 -c '
import json, sys
t = sys.stdin.read()
j = json.loads(t[t.index("{"):])["jobs"][0]
s = j["write"]
p = s["clat_ns"]["percentile"]
print("%.0f %.2f %.2f %.1f %d" % (s["iops"], p["50.000000"] / 1e6, p["99.000000"] / 1e6,
      s["clat_ns"]["max"] / 1e6, j["error"]))'
}

# Replicas on b6 and replica moves under way.
b6_state() {
    "$CDSCTL" cds status --json --dir "$WORK/cds" | python3 -c '
import json, sys
v = json.load(sys.stdin)["cluster"]
on = sum(1 for g in v["groups"] if 6 in g["replicas"])
moving = sum(1 for g in v["groups"] if g.get("moving"))
print(on, moving)'
}

read -r ai a50 a99 amax aerr < <(job)
read -r before _ < <(b6_state)

job >"$WORK/b.out" &
JOB=$!
sleep 2
START=$(date +%s.%N)
"$CDSCTL" cds drain b6 --dir "$WORK/cds" >/dev/null
DRAINED=""
while kill -0 "$JOB" 2>/dev/null; do
    read -r on moving < <(b6_state)
    if [[ -z $DRAINED && $on == 0 && $moving == 0 ]]; then
        DRAINED=$(python3 -c "import time; print('%.1f' % (time.time() - $START))")
    fi
    sleep 0.5
done
wait "$JOB"
read -r bi b50 b99 bmax berr <"$WORK/b.out"
if [[ -z $DRAINED ]]; then
    read -r on _ < <(b6_state)
    DRAINED="not done within the job ($on replicas left)"
else
    DRAINED="$DRAINED s"
fi

{
    echo "## fio randwrite 4k QD8 over NBD during a drain ($(date -u +%Y-%m-%d), $(nproc) cores, ${RUNTIME}s per job, $NGROUPS groups, span $SPAN)"
    echo
    echo "| job | IOPS | p50 ms | p99 ms | max ms | fio errors |"
    echo "|---|---|---|---|---|---|"
    echo "| nothing moving | $ai | $a50 | $a99 | $amax | $aerr |"
    echo "| draining b6 ($before replicas) | $bi | $b50 | $b99 | $bmax | $berr |"
    echo
    python3 -c "print('p99 during the drain: %.2fx the p99 with nothing moving (goal: under 2x, no IO error).' % ($b99 / max($a99, 0.001)))"
    echo "b6 drained in: $DRAINED."
} | tee "${OUT:-/dev/null}"
