#!/usr/bin/env bash
# natter's cluster benchmark: fanout-large (1 000 subscribers, 10 publishers
# at 50 msg/s each, 10 s) against N nodes sharing one Redis (--broker), with
# subscribers and publishers spread round-robin over the nodes by the
# tester (`--url` repeated). For each node count and run: a fresh
# redis-server on a free port (persistence off) and fresh nodes; server CPU
# is summed over the nodes (`--server-pid` repeated); Redis's own CPU is
# read from /proc before and after. Prints bench/table.py's table of
# medians, then Redis's CPU.
#
#   bench/cluster.sh [REPEATS] [NODES...]      (default: 3 runs of 1 2 3)
#
# With SCENARIO=… another bench/run.sh fanout scenario's load (e.g.
# SCENARIO=fanout-small). Everything runs on loopback, is bounded by
# natter load's own deadlines plus `timeout`, and stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

repeats=${1:-3}
shift || true
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(1 2 3)
scenario=${SCENARIO:-fanout-large}
command -v redis-server > /dev/null || { echo "bench/cluster.sh needs redis-server (apt-get install redis-server)" >&2; exit 1; }

cargo build --release -q -p natter-server -p natter
load_bin=target/release/natter
server_bin=target/release/natter-server
out_dir=bench/results/$(date -u +%Y%m%dT%H%M%SZ)-cluster
mkdir -p "$out_dir"
# The load of bench/run.sh's scenario of that name.
args=$(bash bench/run.sh --print-args "$scenario")

pids=()
redis_pid=
stop_all() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2> /dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2> /dev/null || true
  done
  pids=()
  if [ -n "$redis_pid" ]; then
    kill -TERM "$redis_pid" 2> /dev/null || true
    wait "$redis_pid" 2> /dev/null || true
    redis_pid=
  fi
}
trap stop_all EXIT

# utime + stime of a process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

for n in "${counts[@]}"; do
  name="$scenario@$n"
  for i in $(seq "$repeats"); do
    port=$(free_port)
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --dir "$out_dir" > "$out_dir/redis-$name-$i.log" 2>&1 &
    redis_pid=$!
    for _ in $(seq 100); do redis-cli -p "$port" ping > /dev/null 2>&1 && break; sleep 0.05; done
    urls=() pid_args=()
    for k in $(seq "$n"); do
      log="$out_dir/node$k-$name-$i"
      "$server_bin" --listen 127.0.0.1:0 --rate 0 --max-connections 19500 --queue 4096 \
        --max-rooms 10000 --broker "redis://127.0.0.1:$port" --node-id "n$k" \
        > "$log.out" 2> "$log" &
      pids+=($!)
      url=
      for _ in $(seq 100); do
        url=$(grep -o 'ws://[^ ]*' "$log.out" 2> /dev/null || true)
        [ -n "$url" ] && break
        sleep 0.05
      done
      [ -n "$url" ] || { echo "node $k did not start; see $log" >&2; exit 1; }
      urls+=(--url "$url") pid_args+=(--server-pid "${pids[-1]}")
    done
    before=$(cpu_ticks "$redis_pid") started=$(date +%s.%N)
    echo "== $name run $i: natter load $args ${urls[*]}" >&2
    # shellcheck disable=SC2086
    timeout 600 "$load_bin" load $args "${urls[@]}" "${pid_args[@]}" --json --quiet \
      > "$out_dir/$name-$i.json" || true
    after=$(cpu_ticks "$redis_pid") ended=$(date +%s.%N)
    # Redis's own time per script call (all of natter's requests are
    # EVALSHA; in a say-heavy run, says dominate) and per PUBLISH.
    redis-cli -p "$port" info commandstats | grep -E 'cmdstat_(evalsha|publish):' \
      > "$out_dir/$name-$i.redis-commandstats" || true
    python3 -c "import os,sys; t=os.sysconf('SC_CLK_TCK'); print(round(($after-$before)/t/($ended-$started), 3))" \
      > "$out_dir/$name-$i.redis-cores"
    stop_all
  done
done

names=()
for n in "${counts[@]}"; do names+=("$scenario@$n"); done
python3 bench/table.py "$out_dir" "${names[@]}"
for name in "${names[@]}"; do
  echo "$name: Redis CPU (cores, over the whole run): $(cat "$out_dir/$name"-*.redis-cores | sort -n | tr '\n' ' ')"
  for f in "$out_dir/$name"-*.redis-commandstats; do
    echo "  $(basename "$f" .redis-commandstats): $(tr '\n' ' ' < "$f")"
  done
done
echo "raw results: $out_dir" >&2
