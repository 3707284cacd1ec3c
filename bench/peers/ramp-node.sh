#!/usr/bin/env bash
# Runs the same `natter load ramp` against natter-server and against the
# Node `ws` peer (bench/peers/node-ws), REPEATS times each, interleaved, and
# prints each run's largest step under the limit. Needs node and npm (it
# runs `npm ci` in the peer's folder). Loopback only; every run is bounded by
# natter load's deadline plus `timeout`; stops only the servers it started.
#
#   bench/peers/ramp-node.sh [REPEATS] [natter load ramp options...]
set -euo pipefail
cd "$(dirname "$0")/../.."

repeats=${1:-3}
shift || true
ramp_args=("$@")
[ ${#ramp_args[@]} -gt 0 ] || ramp_args=(--step 1000 --max-clients 12000 --limit-ms 500 --source-ips 2)

cargo build --release -q -p natter-server -p natter
(cd bench/peers/node-ws && npm ci --no-audit --no-fund --silent)
out_dir=bench/results/ramp-node-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out_dir"

# shellcheck source=bench/lib.sh
. bench/lib.sh
trap stop_server EXIT

for i in $(seq "$repeats"); do
  for peer in natter node; do
    case $peer in
      natter) start_server "$out_dir/natter-$i" target/release/natter-server \
                --listen 127.0.0.1:0 --rate 0 --max-connections 19500 --queue 4096 ;;
      node)   start_server "$out_dir/node-$i" node bench/peers/node-ws/server.js 0 ;;
    esac
    timeout 1200 target/release/natter load ramp "${ramp_args[@]}" "$url" \
      --server-pid "$server_pid" --json --quiet > "$out_dir/$peer-$i.json" || true
    stop_server
    python3 - "$out_dir/$peer-$i.json" "$peer" <<'PY'
import json, sys
def find(o, key):
    if isinstance(o, dict):
        if key in o:
            return o[key]
        for v in o.values():
            hit = find(v, key)
            if hit is not None:
                return hit
    return None
try:
    r = json.load(open(sys.argv[1]))
except ValueError:
    print(sys.argv[2], "no report (see the raw output)")
    sys.exit(0)
print(sys.argv[2], "largest step under the limit:", find(r, "largest_step_under_limit"),
      "| stopped because:", find(r, "stop_reason"))
PY
  done
done
