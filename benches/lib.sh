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
