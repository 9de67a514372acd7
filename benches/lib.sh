# benches/lib.sh: what compare.sh and cluster.sh share. Sourced, not run.
#
# Every process a script starts goes into `pids`; on exit they are stopped
# by PID, newest first (servers before the Redis they use), and waited for.

pids=()
cleanup() {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

listening() { ss -Htln "sport = :$1" | grep -q .; }

# wait_listening PORT PID NAME: until something listens on PORT, failing if
# the process PID (the server NAME) exits first or after 300 s.
wait_listening() {
  local me
  me=$(basename "$0")
  for _ in $(seq 1 600); do
    listening "$1" && return 0
    kill -0 "$2" 2>/dev/null || { echo "$me: $3 exited before listening" >&2; return 1; }
    sleep 0.5
  done
  echo "$me: $3 is not listening on $1 after 300 s" >&2
  return 1
}
in_use() { ss -Htan "sport = :$1" | grep -q .; }

# free_port [OFFSET]: a port no socket uses (and, given OFFSET, port+OFFSET
# too), below the kernel's ephemeral range (32768 and up), where the load
# tool's own connections would take it.
free_port() {
  local p
  while :; do
    p=$((10000 + RANDOM % 12000))
    if ! in_use "$p" && { [[ -z ${1:-} ]] || ! in_use $((p + $1)); }; then
      echo "$p"
      return
    fi
  done
}

join() {
  local IFS=,
  echo "$*"
}
