#!/usr/bin/env bash
# Side-by-side benchmark of the cds-raft KV cluster and etcd 3.4 on this
# machine, in one run, with the same load tool (wrk), the same value size
# and the same cluster shape (3 members on loopback, every write fsynced).
#
#   bench/compare-etcd.sh [--duration 20s] [--out FILE.md]
#
# It installs what is missing (Debian's etcd-server and etcd-client, and
# wrk, through apt-get), builds cdsctl in release mode, and then measures,
# for each system:
#
#   put-64    PUTs of 256-byte values from 64 connections (throughput)
#   put-1     PUTs from one connection (p50 latency)
#   get-64    linearizable reads from 64 connections (throughput)
#
# etcd is driven through its JSON gateway (`POST /v3/kv/put`, `POST
# /v3/kv/range`, which is linearizable unless `serializable` is set); the KV
# cluster through `PUT /kv/KEY` and `GET /kv/KEY` (ReadIndex). Both clusters
# run on this machine at the same time as wrk, so the figures are for a
# shared 2-core box, not for dedicated hosts. Results are printed as a
# Markdown table (and written to --out when given).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=20s
OUT=""
while [[ $# -gt 0 ]]; do
    case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done

VALUE_SIZE=256
KEYS=1000
WORK=$(mktemp -d)
ETCD_PIDS=()
CDSCTL=target/release/cdsctl

cleanup() {
    for pid in "${ETCD_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [[ -f $WORK/kv/cluster.json ]]; then
        "$CDSCTL" kv down --dir "$WORK/kv" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# ----- tools ---------------------------------------------------------------

need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v wrk >/dev/null || need+=(wrk)
if [[ ${#need[@]} -gt 0 ]]; then
    echo "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
etcd --version | head -1
cargo build --release -p cdsctl 2>&1 | tail -1

# free_port: a TCP port nothing listens on right now.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# ----- wrk scripts ---------------------------------------------------------

# Lua for wrk: a base64 encoder (etcd's gateway wants base64 keys and values)
# and one request builder per workload. Keys cycle over $KEYS names.
cat >"$WORK/common.lua" <<EOF
local b = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
function b64(data)
  return ((data:gsub('.', function(x)
    local r, byte = '', x:byte()
    for i = 8, 1, -1 do r = r .. (byte % 2 ^ i - byte % 2 ^ (i - 1) > 0 and '1' or '0') end
    return r
  end) .. '0000'):gsub('%d%d%d?%d?%d?%d?', function(x)
    if #x < 6 then return '' end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == '1' and 2 ^ (6 - i) or 0) end
    return b:sub(c + 1, c + 1)
  end) .. ({ '', '==', '=' })[#data % 3 + 1])
end
value = string.rep('v', $VALUE_SIZE)
keys = $KEYS
counter = 0
EOF

cat >"$WORK/kv-put.lua" <<EOF
dofile("$WORK/common.lua")
request = function()
  counter = counter + 1
  return wrk.format("PUT", "/kv/k" .. (counter % keys), nil, value)
end
EOF
cat >"$WORK/kv-get.lua" <<EOF
dofile("$WORK/common.lua")
request = function()
  counter = counter + 1
  return wrk.format("GET", "/kv/k" .. (counter % keys))
end
EOF
cat >"$WORK/etcd-put.lua" <<EOF
dofile("$WORK/common.lua")
local bodies = {}
for i = 0, keys - 1 do
  bodies[i] = '{"key":"' .. b64("k" .. i) .. '","value":"' .. b64(value) .. '"}'
end
request = function()
  counter = counter + 1
  return wrk.format("POST", "/v3/kv/put", nil, bodies[counter % keys])
end
EOF
cat >"$WORK/etcd-get.lua" <<EOF
dofile("$WORK/common.lua")
local bodies = {}
for i = 0, keys - 1 do bodies[i] = '{"key":"' .. b64("k" .. i) .. '"}' end
request = function()
  counter = counter + 1
  return wrk.format("POST", "/v3/kv/range", nil, bodies[counter % keys])
end
EOF
# wrk itself counts answers other than 2xx or 3xx ("Non-2xx or 3xx
# responses"), so a run full of errors cannot pass for a fast one.

# run_wrk NAME CONNS SCRIPT URL: runs wrk and appends "NAME rps p50 p99 errors"
# to $WORK/results.
run_wrk() {
    local name=$1 conns=$2 script=$3 url=$4 threads=2
    [[ $conns -lt 2 ]] && threads=1
    wrk -t"$threads" -c"$conns" -d"$DURATION" --latency -s "$script" "$url" >"$WORK/$name.txt" 2>&1
    local rps p50 p99 errs
    rps=$(awk '/^Requests\/sec:/ { print $2 }' "$WORK/$name.txt")
    p50=$(awk '$1 == "50%" { print $2 }' "$WORK/$name.txt")
    p99=$(awk '$1 == "99%" { print $2 }' "$WORK/$name.txt")
    errs=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$WORK/$name.txt")
    echo "$name ${rps:-0} ${p50:-?} ${p99:-?} ${errs:-0}" | tee -a "$WORK/results"
}

# ----- etcd ----------------------------------------------------------------

echo "starting etcd (3 members)"
declare -a EC EP
for i in 1 2 3; do
    EC[$i]=$(free_port)
    EP[$i]=$(free_port)
done
initial=""
for i in 1 2 3; do initial+="e$i=http://127.0.0.1:${EP[$i]},"; done
initial=${initial%,}
for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$WORK/etcd$i" \
        --listen-client-urls "http://127.0.0.1:${EC[$i]}" \
        --advertise-client-urls "http://127.0.0.1:${EC[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${EP[$i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${EP[$i]}" \
        --initial-cluster "$initial" --initial-cluster-state new \
        --initial-cluster-token "bench-$$" \
        >"$WORK/etcd$i.log" 2>&1 &
    ETCD_PIDS+=($!)
done
ENDPOINTS="127.0.0.1:${EC[1]},127.0.0.1:${EC[2]},127.0.0.1:${EC[3]}"
for _ in $(seq 1 100); do
    if ETCDCTL_API=3 etcdctl --endpoints "$ENDPOINTS" endpoint status >/dev/null 2>&1; then break; fi
    sleep 0.2
done
# Load the leader, as the KV benchmark loads its leader.
ETCD_LEADER=""
for i in 1 2 3; do
    if ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:${EC[$i]}" endpoint status -w json 2>/dev/null |
        python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["Status"]; sys.exit(0 if s["leader"]==s["header"]["member_id"] else 1)'; then
        ETCD_LEADER="http://127.0.0.1:${EC[$i]}"
    fi
done
[[ -n $ETCD_LEADER ]] || { echo "etcd elected no leader; logs in $WORK" >&2; exit 1; }
echo "etcd leader at $ETCD_LEADER"

run_wrk etcd-put-64 64 "$WORK/etcd-put.lua" "$ETCD_LEADER"
run_wrk etcd-put-1 1 "$WORK/etcd-put.lua" "$ETCD_LEADER"
run_wrk etcd-get-64 64 "$WORK/etcd-get.lua" "$ETCD_LEADER"
for pid in "${ETCD_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
for pid in "${ETCD_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
ETCD_PIDS=()

# ----- cds-raft KV -----------------------------------------------------------

echo "starting the cds-raft KV cluster (3 nodes)"
"$CDSCTL" kv up --nodes 3 --dir "$WORK/kv" >"$WORK/kv-up.txt"
cat >"$WORK/leader.py" <<'PY'
import json, sys, urllib.request
for n in json.load(open(sys.argv[1]))["nodes"]:
    s = json.load(urllib.request.urlopen("http://%s/status" % n["http_addr"], timeout=2))
    if s.get("role") == "leader":
        print(n["http_addr"])
        break
PY
KV_LEADER=$(python3 "$WORK/leader.py" "$WORK/kv/cluster.json")
[[ -n $KV_LEADER ]] || { echo "the KV cluster has no leader" >&2; exit 1; }
echo "KV leader at http://$KV_LEADER"

run_wrk kv-put-64 64 "$WORK/kv-put.lua" "http://$KV_LEADER"
run_wrk kv-put-1 1 "$WORK/kv-put.lua" "http://$KV_LEADER"
run_wrk kv-get-64 64 "$WORK/kv-get.lua" "http://$KV_LEADER"

# ----- report ----------------------------------------------------------------

report() {
    awk -v dur="$DURATION" '
    { rps[$1] = $2; p50[$1] = $3; p99[$1] = $4; err[$1] = $5 }
    END {
        printf "| workload (%s each, wrk) | etcd 3.4 | cds-raft KV | ratio |\n", dur
        printf "|---|---|---|---|\n"
        printf "| puts/s, 64 connections | %.0f | %.0f | %.2fx |\n", rps["etcd-put-64"], rps["kv-put-64"], rps["kv-put-64"] / rps["etcd-put-64"]
        printf "| put p50 / p99, 64 connections | %s / %s | %s / %s | |\n", p50["etcd-put-64"], p99["etcd-put-64"], p50["kv-put-64"], p99["kv-put-64"]
        printf "| puts/s, 1 connection | %.0f | %.0f | %.2fx |\n", rps["etcd-put-1"], rps["kv-put-1"], rps["kv-put-1"] / rps["etcd-put-1"]
        printf "| put p50 / p99, 1 connection | %s / %s | %s / %s | |\n", p50["etcd-put-1"], p99["etcd-put-1"], p50["kv-put-1"], p99["kv-put-1"]
        printf "| linearizable reads/s, 64 connections | %.0f | %.0f | %.2fx |\n", rps["etcd-get-64"], rps["kv-get-64"], rps["kv-get-64"] / rps["etcd-get-64"]
        printf "| read p50 / p99, 64 connections | %s / %s | %s / %s | |\n", p50["etcd-get-64"], p99["etcd-get-64"], p50["kv-get-64"], p99["kv-get-64"]
        printf "| non-2xx answers (all runs) | %d | %d | |\n", err["etcd-put-64"] + err["etcd-put-1"] + err["etcd-get-64"], err["kv-put-64"] + err["kv-put-1"] + err["kv-get-64"]
    }' "$WORK/results"
}
echo
report | tee "${OUT:-/dev/null}"
