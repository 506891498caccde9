#!/usr/bin/env bash
# Measures the visualizer in headless Chromium on a large simulator trace:
# load time, seek time, frame rate while playing, and the size of the wasm.
#
#   viz-wasm/perf.sh [STEPS]   (default 100000 steps: about 100,000 events)
#
# Timings come from the page itself (`?perf=1`), in real time; they depend
# on this machine and are printed, not checked.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STEPS=${1:-100000}
WORK=$(mktemp -d)
SERVER=""
trap '[[ -n $SERVER ]] && kill $SERVER 2>/dev/null; rm -rf "$WORK"' EXIT

[[ -f target/viz/index.html ]] || bash viz-wasm/build.sh
cargo build --release -p cdsctl --quiet
target/release/cdsctl raft sim --nodes 5 --seed 7 --steps "$STEPS" --faults all --reconfig --compact \
    --trace "$WORK/big.rtrace" >/dev/null
events=$(($(wc -l <"$WORK/big.rtrace") - 1))
target/release/cdsctl viz "$WORK/big.rtrace" --page target/viz >"$WORK/url" 2>/dev/null &
SERVER=$!
for _ in $(seq 1 50); do [[ -s $WORK/url ]] && break; sleep 0.1; done
url="$(head -1 "$WORK/url")&perf=1"
perf=$(node --experimental-websocket --no-warnings viz-wasm/tools/cdp.mjs "$url" \
    "wait:document.getElementById('perf')" "print:document.getElementById('perf').textContent")
echo "trace: $events events ($(stat -c %s "$WORK/big.rtrace") bytes)"
echo "wasm: $(stat -c %s target/viz/pkg/viz_wasm_bg.wasm) bytes"
echo "page: $perf"
