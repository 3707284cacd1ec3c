#!/usr/bin/env bash
# natter's standard benchmark: builds release binaries, and for each
# scenario starts a fresh natter-server (rate limiting off, caps raised),
# runs `natter load` against it REPEATS times, stops only the server it
# started (bench/lib.sh), and prints a markdown table of medians.
#
#   bench/run.sh [REPEATS] [SCENARIO...]
#
# A/B: with SERVERS="LABEL=BINARY LABEL=BINARY ..." in the environment,
# each scenario's runs alternate between those server binaries (same
# tester, same minutes, so a slow period of the host hits all of them
# alike), and one table per label is printed.
#
# Scenarios: fanout-small fanout-large fanout-xl rooms says conns conns-10k
# ramp (default: all of these). Any fanout scenario with `+disk` appended
# (e.g. says+disk, fanout-large+disk) runs the same load against a server
# with durable history (--data-dir, a fresh directory per run under the
# results folder, whose store size is recorded next to the run's JSON).
# Likewise `+tls` (e.g. fanout-large+tls, conns-10k+tls) runs it over TLS:
# the server gets a throw-away certificate (made with openssl) through
# --tls-cert/--tls-key, and the tester connects to wss:// with --ca.
# Raw JSON of every run goes to bench/results/<timestamp>/.
# Everything runs on loopback, is bounded by natter load's own deadlines
# plus `timeout`, and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

# `bench/run.sh --print-args SCENARIO` prints that scenario's load
# arguments (bench/cluster.sh runs the same loads against several nodes).
if [ "${1:-}" = --print-args ]; then
  print_only=$2
  set -- 1 "$2"
fi
repeats=${1:-3}
shift || true
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(fanout-small fanout-large fanout-xl rooms says conns conns-10k ramp)


args_for() {
  case "$1" in
    fanout-small) echo "fanout --subs 100 --pubs 10 --rate 100 --duration 10" ;;
    fanout-large) echo "fanout --subs 1000 --pubs 10 --rate 50 --duration 10" ;;
    fanout-xl)    echo "fanout --subs 1000 --pubs 10 --rate 100 --duration 10" ;;
    # 100 rooms of 20 members (10 listening, 10 speaking at 2 msg/s: 20 msg/s
    # into each room; the speakers' own receipts are not counted).
    rooms)        echo "fanout --rooms 100 --subs 1000 --pubs 1000 --rate 2 --duration 10" ;;
    # Says into one room: 50 speakers at 100 msg/s each (5 000 says/s) and
    # 10 listeners; what a say costs, and its ok round trip.
    says)         echo "fanout --subs 10 --pubs 50 --rate 100 --duration 10" ;;
    # As many idle connections as one process's descriptor limit allows.
    conns)        echo "conns --count 19000 --hold 5 --source-ips 2" ;;
    # The issue's connect-latency point: 10 000 connections.
    conns-10k)    echo "conns --count 10000 --hold 5 --source-ips 2" ;;
    # 100 000 held at once: more than one process may open (20 000 files),
    # so 6 tester processes (--workers) of 2 source addresses each, against
    # several nodes (bench/cluster.sh 1 6: 6 nodes sharing one Redis);
    # every connection gets welcome, 1 000 spread over all answer a `who`.
    conns-100k)   echo "conns --count 100000 --hold 10 --workers 6 --source-ips 2" ;;
    # Up to the most one process may hold (the tester's sockets count
    # against its own 20 000-descriptor limit too). Presence makes a growing
    # room quadratic (every join is announced to every member): a run takes
    # a few minutes.
    ramp)         echo "ramp --step 1000 --max-clients 19000 --limit-ms 500 --source-ips 2" ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
  esac
}

if [ -n "${print_only:-}" ]; then
  args_for "$print_only"
  exit 0
fi

cargo build --release -q -p natter-server -p natter
load_bin=target/release/natter
out_dir=bench/results/$(date -u +%Y%m%dT%H%M%SZ)
servers=(${SERVERS:-current=target/release/natter-server})
for s in "${servers[@]}"; do mkdir -p "$out_dir/${s%%=*}"; done

# shellcheck source=bench/lib.sh
. bench/lib.sh
trap stop_server EXIT

tls_cert=$out_dir/cert.pem tls_key=$out_dir/key.pem
case " ${scenarios[*]} " in
  *+tls*)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
      -addext basicConstraints=critical,CA:FALSE \
      -keyout "$tls_key" -out "$tls_cert" 2>/dev/null ;;
esac

for scenario in "${scenarios[@]}"; do
  base=${scenario%+disk}
  base=${base%+tls}
  args=$(args_for "$base")
  for i in $(seq "$repeats"); do
    for s in "${servers[@]}"; do
      label=${s%%=*} server_bin=${s#*=} dir=$out_dir/${s%%=*}
      durable=() tls=() trust=()
      if [ "$scenario" != "${scenario%+disk}" ]; then
        durable=(--data-dir "$dir/data-$scenario-$i")
      fi
      if [ "$scenario" != "${scenario%+tls}" ]; then
        tls=(--tls-cert "$tls_cert" --tls-key "$tls_key") trust=(--ca "$tls_cert")
      fi
      start_server "$dir/server-$scenario-$i" "$server_bin" --listen 127.0.0.1:0 --rate 0 \
        --max-connections 19500 --queue 4096 --max-rooms 10000 "${durable[@]}" "${tls[@]}"
      echo "== $scenario run $i ($label): natter load $args ${durable[*]} ${trust[*]} $url" >&2
      # shellcheck disable=SC2086
      timeout 600 "$load_bin" load $args "$url" "${trust[@]}" --server-pid "$server_pid" \
        --json --quiet > "$dir/$scenario-$i.json" || true
      stop_server
      if [ ${#durable[@]} -gt 0 ]; then
        stat -c %s "${durable[1]}/natter.redb" > "$dir/$scenario-$i.store-bytes"
        rm -rf "${durable[1]}"
      fi
    done
  done
done

for s in "${servers[@]}"; do
  [ ${#servers[@]} -eq 1 ] || echo "### ${s%%=*} (${s#*=})"
  python3 bench/table.py "$out_dir/${s%%=*}" "${scenarios[@]}"
done
echo "raw results: $out_dir" >&2
