#!/usr/bin/env bash
# Snapshots a 2 GiB state machine under put load, sends the snapshot to a
# new member over TCP and installs it there; reports put latency at 64
# clients with and without the concurrent save, and each process's peak
# resident set above its idle figure (the issue asks < 128 MiB on both
# sides and p99 while saving < 2x p99 without). Figures, not pass/fail;
# not part of CI. Needs about 6 GiB free in $TMPDIR (or --dir DIR).
#
#   bench/snapshot-2g.sh [--link] [--seconds N] [--clients N] [--bytes N] [--dir DIR]
#
# By default the state machine's snapshot job copies its 2 GiB state file
# through a 1 MiB buffer (a state machine that must write its state);
# --link hard-links it instead (a state machine whose state is files).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p raft-core --features runtime --example snapshot_bench
exec target/release/examples/snapshot_bench --bytes $((2 << 30)) "$@"
