#!/usr/bin/env bash
# benches/cluster.sh: fan-out over a cluster of wavecast processes on this
# machine sharing one Redis, measured by one `wavecast bench fanout`.
#
# Starts its own redis-server on a free loopback port, SERVERS wavecast
# processes joined to it (each on a port the kernel picks), then spreads
# SUBS subscribers evenly over the servers (connection i to server i mod
# SERVERS; one publisher on the first server), so the latency to the last
# subscriber includes the trip through Redis. Server memory is summed over
# the servers' PIDs. Every process it started is stopped by its PID on exit.
#
#   benches/cluster.sh                                  # 100,000 subscribers, 6 servers
#   SUBS=3000 SERVERS=3 PUBS=20 RATE=5 benches/cluster.sh
#   NO_BUILD=1 BIN=/tmp/wc-bench BENCH_ARGS="--workers 14" benches/cluster.sh
#
# Environment (defaults in brackets):
#   SUBS [100000] subscribers   SERVERS [6] wavecast processes
#   PUBS [50] publications      RATE [2] publications per second, or "max"
#   OUT [target/bench] directory for cluster.json and the server logs
#   NO_BUILD=1 skips `cargo build --release -p wavecast`
#   BIN [target/release/wavecast] the binary (a copy is immune to rebuilds mid-run)
#   REDIS_SERVER [redis-server]   BENCH_ARGS: more flags for `wavecast bench fanout`
#   SERVER_ARGS: more flags for each `wavecast serve` (e.g. "--workers 1")
set -euo pipefail
cd "$(dirname "$0")/.."

SUBS=${SUBS:-100000}
SERVERS=${SERVERS:-6}
PUBS=${PUBS:-50}
RATE=${RATE:-2}
OUT=${OUT:-target/bench}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
BENCH_ARGS=${BENCH_ARGS:-}
SERVER_ARGS=${SERVER_ARGS:-}

die() {
  echo "cluster.sh: $*" >&2
  exit 2
}
[[ $SUBS =~ ^[0-9]+$ && $SUBS -gt 0 ]] || die "SUBS must be a positive integer"
[[ $SERVERS =~ ^[0-9]+$ && $SERVERS -gt 0 ]] || die "SERVERS must be a positive integer"

if [[ -z ${NO_BUILD:-} ]]; then
  cargo build --release -p wavecast
fi
bin=${BIN:-target/release/wavecast}
[[ -x $bin ]] || die "no executable at $bin"
mkdir -p "$OUT"

# Every server holds one file per subscriber; the machine allows 20,000 per
# process. The load tool raises its own limit and keeps each of its worker
# processes under 9,000 connections by itself.
files=20000
hard=$(ulimit -Hn)
if [[ $hard != unlimited && $hard -lt $files ]]; then
  files=$hard
fi
ulimit -n "$files"
per_server=$(((SUBS + SERVERS - 1) / SERVERS))
# Spare files per server: listener, Redis connections, the publisher, stdio.
if ((per_server + 100 > files)); then
  die "$SUBS subscribers over $SERVERS servers is $per_server per server," \
    "over the $files open files a process may hold: raise SERVERS"
fi

# shellcheck source=benches/lib.sh
source benches/lib.sh

redis_port=$(free_port)
"$REDIS_SERVER" --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize no >"$OUT/cluster-redis.log" 2>&1 &
redis_pid=$!
# Stopped last: cleanup walks the list backwards.
pids+=("$redis_pid")
for _ in $(seq 1 100); do
  listening "$redis_port" && break
  kill -0 "$redis_pid" 2>/dev/null || die "redis-server exited (see $OUT/cluster-redis.log)"
  sleep 0.1
done
listening "$redis_port" || die "redis-server is not listening on $redis_port after 10 s"

urls=()
server_pids=()
for k in $(seq 1 "$SERVERS"); do
  log="$OUT/cluster-server-$k.log"
  # The benchmark's one publisher sends far over the per-connection
  # publish limit (a server setting for real clients): no limits here.
  # shellcheck disable=SC2086 # SERVER_ARGS is a list of flags
  "$bin" serve --listen 127.0.0.1:0 --redis "redis://127.0.0.1:$redis_port" \
    --max-connections 30000 --client-command-rate 0 --client-publish-rate 0 \
    $SERVER_ARGS >"$log" 2>&1 &
  pid=$!
  pids+=("$pid")
  server_pids+=("$pid")
  # The server prints "wavecast listening on ADDR" once it accepts.
  addr=
  for _ in $(seq 1 300); do
    addr=$(sed -n 's/^wavecast listening on \(127\.0\.0\.1:[0-9][0-9]*\)$/\1/p' "$log" | head -n 1)
    [[ -n $addr ]] && break
    kill -0 "$pid" 2>/dev/null || die "server $k exited before listening (see $log)"
    sleep 0.1
  done
  [[ -n $addr ]] || die "server $k is not listening after 30 s (see $log)"
  urls+=("ws://$addr/ws")
done

if [[ $RATE == max ]]; then rate=(--max); else rate=(--rate "$RATE"); fi

echo "cluster.sh: redis 127.0.0.1:$redis_port (pid $redis_pid), servers $(join "${urls[@]}") (pids $(join "${server_pids[@]}"))"
status=0
# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
"$bin" bench fanout \
  --url "$(join "${urls[@]}")" \
  --subscribers "$SUBS" --publications "$PUBS" "${rate[@]}" \
  --server-pid "$(join "${server_pids[@]}")" \
  --json "$OUT/cluster.json" $BENCH_ARGS || status=$?
exit "$status"
