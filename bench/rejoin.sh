#!/usr/bin/env bash
# Re-join amplification against another member's round trip (issue #10,
# CPU fairness): starts SERVER_BINARY (default: this tree's release
# natter-server) with default options, runs the ignored benchmark in
# tests/tests/rejoin_bench.rs against it (which reads the server's CPU
# from /proc), and stops only the server it started.
#
#   bench/rejoin.sh [SERVER_BINARY] [SECONDS_PER_PHASE]
#
# A/B: build the other server in its own target dir and pass its binary.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
server_bin=${1:-}
if [ -z "$server_bin" ]; then
  cargo build --release -q -p natter-server
  server_bin=$target/release/natter-server
fi
secs=${2:-10}
cargo test --release -q -p natter-tests --test rejoin_bench --no-run

# shellcheck source=bench/lib.sh
. bench/lib.sh
trap stop_server EXIT
log_dir=$(mktemp -d)
start_server "$log_dir/server" "$server_bin" --listen 127.0.0.1:0
echo "== $server_bin (pid $server_pid), $secs s a phase" >&2
NATTER_BENCH_URL=$url NATTER_BENCH_PID=$server_pid NATTER_BENCH_SECS=$secs \
  timeout $((secs * 4 + 120)) cargo test --release -q -p natter-tests --test rejoin_bench \
  -- --ignored --nocapture 2>&1 | grep -v '^$'
