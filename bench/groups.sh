#!/usr/bin/env bash
# The multi-group host measured: a 3-process cluster hosting many Raft
# groups (every process a member of every group), idle and under load, next
# to a single-group cluster under the same load, in one run.
#
#   bench/groups.sh [--groups 1024] [--idle 30s] [--duration 20s] [--clients 64] [--out FILE.md]
#
# It builds cdsctl in release mode, then:
#
#   idle     starts `kv up --groups N`, waits until every group has a leader
#            and every group is quiescent on every process, then samples
#            each process's CPU time (/proc/PID/stat) and resident memory
#            (VmRSS) over --idle: % of one core, MiB, and KiB per group
#   load     `kv bench` with --clients closed-loop clients over the same
#            cluster (each key goes to its group's leader): puts/s, p50/p99,
#            and the whole-disk log syncs per second per process
#            (cds_host_log_syncs_total) against the groups' log sync
#            requests (cds_host_log_sync_requests_total)
#   single   the same `kv bench` against a fresh single-group cluster
#            (`kv up`), whose log syncs are its own fdatasyncs
#            (cds_log_syncs_total)
#
# Both clusters run on this machine with the load generator, so the
# figures are for a shared box. Results are printed as a Markdown table
# (and written to --out when given).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

GROUPS_N=1024
IDLE=30
DURATION=20s
CLIENTS=64
OUT=""
while [[ $# -gt 0 ]]; do
    case $1 in
    --groups) GROUPS_N=$2; shift 2 ;;
    --idle) IDLE=${2%s}; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done

CDSCTL=target/release/cdsctl
WORK=$(mktemp -d)
cleanup() {
    for c in multi single; do
        if [[ -f $WORK/$c/cluster.json ]]; then
            "$CDSCTL" kv down --dir "$WORK/$c" >/dev/null 2>&1 || true
        fi
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release -p cdsctl >/dev/null

# field FILE INDEX KEY: a field of node INDEX (0-based) in cluster.json.
field() {
    python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['nodes'][int(sys.argv[2])][sys.argv[3]])" "$@"
}

# metric DIR INDEX NAME: a counter from node INDEX's /metrics (0 if absent).
metric() {
    local http
    http=$(field "$1/cluster.json" "$2" http_addr)
    curl -s "http://$http/metrics" | awk -v n="$3" '$1 == n { print $2; found=1 } END { if (!found) print 0 }'
}

# status DIR INDEX KEY: a field of node INDEX's /status.
status() {
    local http
    http=$(field "$1/cluster.json" "$2" http_addr)
    curl -s "http://$http/status" | python3 -c "import json,sys; print(json.load(sys.stdin)['$3'])"
}

# cpu_ticks PID: user + system clock ticks the process used so far.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# bench DIR: runs kv bench; prints "PUTS_PER_S P50_MS P99_MS".
bench() {
    "$CDSCTL" kv bench --clients "$CLIENTS" --duration "$DURATION" --dir "$1" >"$WORK/bench.txt" 2>&1
    awk '/puts\/s/ { for (i = 1; i <= NF; i++) if ($i == "puts/s") t = $(i-1) }
         /latency/ { p50 = $3; p99 = $6 }
         END { print t, p50, p99 }' "$WORK/bench.txt"
}

secs() {
    local d=$1
    case $d in
    *ms) echo "scale=3; ${d%ms} / 1000" | bc ;;
    *s) echo "${d%s}" ;;
    *m) echo "$(( ${d%m} * 60 ))" ;;
    *) echo "$d" ;;
    esac
}

HZ=$(getconf CLK_TCK)

# ----- idle ------------------------------------------------------------------

echo "starting 3 processes hosting $GROUPS_N groups each"
"$CDSCTL" kv up --groups "$GROUPS_N" --timeout 120s --dir "$WORK/multi" >/dev/null
deadline=$((SECONDS + 180))
while :; do
    q=0
    for i in 0 1 2; do
        q=$((q + $(metric "$WORK/multi" $i cds_groups_quiescent)))
    done
    [[ $q -ge $((3 * GROUPS_N)) ]] && break
    if [[ $SECONDS -ge $deadline ]]; then
        echo "only $q of $((3 * GROUPS_N)) group replicas quiescent after 180 s" >&2
        exit 1
    fi
    sleep 1
done
echo "every group quiescent on every process; sampling for ${IDLE}s"
pids=()
for i in 0 1 2; do pids+=("$(field "$WORK/multi/cluster.json" $i pid)"); done
before=()
for p in "${pids[@]}"; do before+=("$(cpu_ticks "$p")"); done
sleep "$IDLE"
idle_rows=()
for i in 0 1 2; do
    p=${pids[$i]}
    used=$(( $(cpu_ticks "$p") - before[i] ))
    cpu=$(echo "scale=4; 100 * $used / $HZ / $IDLE" | bc | xargs printf "%.2f")
    rss=$(rss_kib "$p")
    idle_rows+=("| $((i + 1)) | $cpu % | $((rss / 1024)) MiB | $((rss / GROUPS_N)) KiB |")
done

# ----- load ------------------------------------------------------------------

echo "load: $CLIENTS clients for $DURATION over $GROUPS_N groups"
syncs0=(); reqs0=()
for i in 0 1 2; do
    syncs0+=("$(metric "$WORK/multi" $i cds_host_log_syncs_total)")
    reqs0+=("$(metric "$WORK/multi" $i cds_host_log_sync_requests_total)")
done
read -r multi_puts multi_p50 multi_p99 < <(bench "$WORK/multi")
d=$(secs "$DURATION")
sync_rows=()
for i in 0 1 2; do
    s=$(( $(metric "$WORK/multi" $i cds_host_log_syncs_total) - syncs0[i] ))
    r=$(( $(metric "$WORK/multi" $i cds_host_log_sync_requests_total) - reqs0[i] ))
    sync_rows+=("| $((i + 1)) | $(echo "scale=0; $s / $d" | bc)/s | $(echo "scale=0; $r / $d" | bc)/s |")
done
"$CDSCTL" kv down --dir "$WORK/multi" >/dev/null

# ----- single ----------------------------------------------------------------

echo "load: $CLIENTS clients for $DURATION over a single-group cluster"
"$CDSCTL" kv up --dir "$WORK/single" >/dev/null
single_syncs0=$(metric "$WORK/single" 0 cds_log_syncs_total)
read -r single_puts single_p50 single_p99 < <(bench "$WORK/single")
single_syncs=$(( $(metric "$WORK/single" 0 cds_log_syncs_total) - single_syncs0 ))
"$CDSCTL" kv down --dir "$WORK/single" >/dev/null

ratio=$(echo "scale=0; 100 * $multi_puts / $single_puts" | bc)

report() {
    echo "## Multi-group host: $GROUPS_N groups on 3 processes ($(date -u +%Y-%m-%d), $(nproc) cores)"
    echo
    echo "Idle, every group quiescent, sampled over ${IDLE} s:"
    echo
    echo "| process | CPU (of one core) | resident | per group |"
    echo "|---|---|---|---|"
    printf '%s\n' "${idle_rows[@]}"
    echo
    echo "Load: \`kv bench --clients $CLIENTS --duration $DURATION\`, 256-byte values:"
    echo
    echo "| cluster | puts/s | p50 | p99 |"
    echo "|---|---|---|---|"
    echo "| $GROUPS_N groups | $multi_puts | $multi_p50 ms | $multi_p99 ms |"
    echo "| 1 group | $single_puts | $single_p50 ms | $single_p99 ms |"
    echo
    echo "$GROUPS_N groups reach $ratio % of the single group's puts/s."
    echo
    echo "Log syncs under load ($GROUPS_N groups; whole-disk syncs against the groups' requests):"
    echo
    echo "| process | syncs | requests |"
    echo "|---|---|---|"
    printf '%s\n' "${sync_rows[@]}"
    echo
    echo "The single group's leader: $(echo "scale=0; $single_syncs / $d" | bc) log fdatasyncs/s."
}
report | tee "${OUT:-/dev/null}"
