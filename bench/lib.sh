# Shared by bench/run.sh and bench/peers/ramp-node.sh (sourced, not run):
# start one server in the background and find its URL, stop only that one.

server_pid=

# SIGTERM, then SIGKILL if it is still there 10 s later (twice the default
# shutdown grace).
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  server_pid=
}

# start_server LOG COMMAND...: runs COMMAND with stdout to LOG.out and
# stderr to LOG; sets server_pid, and url from the "listening on ws://…"
# (or wss://…) line (waits up to 5 s for it).
start_server() {
  local log=$1
  shift
  "$@" > "$log.out" 2> "$log" &
  server_pid=$!
  for _ in $(seq 100); do
    url=$(grep -o 'wss\?://[^ ]*' "$log.out" 2>/dev/null || true)
    [ -n "$url" ] && return 0
    sleep 0.05
  done
  echo "server did not start; see $log" >&2
  exit 1
}
