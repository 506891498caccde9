#!/usr/bin/env bash
# Builds the visualizer page into target/viz (or the directory given):
# the Rust crate for wasm32, wasm-bindgen's JavaScript glue, and the static
# files of viz-wasm/www. `cdsctl viz` serves the result.
#
# Needs the wasm32 target and the wasm-bindgen CLI at the crate's pinned
# version; installs them when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

OUT=${1:-target/viz}
# Must equal the `wasm-bindgen = "=..."` pin in viz-wasm/Cargo.toml.
WASM_BINDGEN_VERSION=$(sed -n 's/^wasm-bindgen = "=\(.*\)"/\1/p' viz-wasm/Cargo.toml)

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    rustup target add wasm32-unknown-unknown
fi
if ! wasm-bindgen --version 2>/dev/null | grep -q " $WASM_BINDGEN_VERSION\$"; then
    # `--locked` fails for this tool here (see ../shared/TOOLCHAIN.md).
    cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi

cargo build --release --target wasm32-unknown-unknown -p viz-wasm
rm -rf "$OUT"
mkdir -p "$OUT/pkg"
# `no-modules`: classic scripts, which a page opened from disk (file://) may
# load, where module scripts are refused. The book is read that way.
wasm-bindgen --target no-modules --no-typescript --out-dir "$OUT/pkg" \
    target/wasm32-unknown-unknown/release/viz_wasm.wasm
# From disk the page cannot fetch the .wasm either: the same bytes as a
# script (base64), loaded only when the page is opened from file://.
{
    printf 'window.VIZ_WASM_BASE64 = "'
    base64 -w0 "$OUT/pkg/viz_wasm_bg.wasm"
    printf '";\n'
} >"$OUT/pkg/viz_wasm_bg.wasm.js"
# A syntax error in the page's script would only show in a browser: refuse
# it here when Node is present (CI has it; the browser tests would catch it
# too, later and less clearly).
if command -v node >/dev/null 2>&1; then
    node --check viz-wasm/www/viz.js
fi
cp viz-wasm/www/* "$OUT/"
wasm_bytes=$(stat -c %s "$OUT/pkg/viz_wasm_bg.wasm")
echo "visualizer built in $OUT ($wasm_bytes bytes of wasm)"
