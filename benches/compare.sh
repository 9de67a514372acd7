#!/usr/bin/env bash
# benches/compare.sh: wavecast against its peers, side by side, in one run.
#
# Starts the release build of wavecast and each peer ($PEERS_DIR/run-peer)
# on free loopback ports, runs `wavecast bench compare` against all of them
# (alternating them round by round, server memory read from /proc by PID),
# then stops every server it started by its PID.
#
#   benches/compare.sh                          # 1,000 subscribers, every peer
#   SUBS=10000 PUBS=200 benches/compare.sh      # 10,000 subscribers
#   PEERS="ws nats" ROUNDS=3 benches/compare.sh
#
# Environment (defaults in brackets):
#   SUBS [1000] subscribers   PUBS [500] publications   PAYLOAD [64] bytes
#   RATE [max] publications per second, or "max" for as fast as acknowledged
#   ROUNDS [2]   PEERS [ws socketio nats tungstenite]
#   OUT [target/bench] directory for compare-SUBS.json and compare-SUBS.svg
#   PEERS_DIR [/work/shared/peers] where the peer servers are installed (outside this repository)
#   NO_BUILD=1 skips `cargo build --release`
#   BIN [target/release/wavecast] the binary (a copy is immune to rebuilds mid-run)
#   EXTRA: more flags for `wavecast bench compare` (e.g. "--workers 2")
set -euo pipefail
cd "$(dirname "$0")/.."

SUBS=${SUBS:-1000}
PUBS=${PUBS:-500}
PAYLOAD=${PAYLOAD:-64}
RATE=${RATE:-max}
ROUNDS=${ROUNDS:-2}
PEERS=${PEERS:-ws socketio nats tungstenite}
OUT=${OUT:-target/bench}
PEERS_DIR=${PEERS_DIR:-/work/shared/peers}
EXTRA=${EXTRA:-}

if [[ -z ${NO_BUILD:-} ]]; then
  cargo build --release -p wavecast
fi
bin=${BIN:-target/release/wavecast}
mkdir -p "$OUT"
# Every server and the tool hold one file per connection.
ulimit -n "$(ulimit -Hn)"

# shellcheck source=benches/lib.sh
source benches/lib.sh

targets=()
pidlist=()

port=$(free_port 10000)
# No per-connection rate limits: the publisher sends as fast as it is
# acknowledged, as it does to every peer.
"$bin" serve --listen "127.0.0.1:$port" --client-command-rate 0 --client-publish-rate 0 \
  >"$OUT/wavecast.log" 2>&1 &
pids+=($!)
wait_listening "$port" $! wavecast
targets+=("wavecast=ws://127.0.0.1:$port/ws")
pidlist+=("wavecast=$!")

for peer in $PEERS; do
  port=$(free_port 10000)
  # run-peer execs the server, so this PID is the server's own.
  "$PEERS_DIR/run-peer" "$peer" "$port" >"$OUT/$peer.log" 2>&1 &
  pids+=($!)
  wait_listening "$port" $! "$peer"
  case $peer in
    socketio) url="ws://127.0.0.1:$port/socket.io/?EIO=4&transport=websocket" ;;
    *) url="ws://127.0.0.1:$port/" ;;
  esac
  targets+=("$peer=$url")
  pidlist+=("$peer=$!")
done

if [[ $RATE == max ]]; then rate=(--max); else rate=(--rate "$RATE"); fi

# shellcheck disable=SC2086 # EXTRA is a list of flags
"$bin" bench compare \
  --targets "$(join "${targets[@]}")" \
  --pids "$(join "${pidlist[@]}")" \
  --rounds "$ROUNDS" --subscribers "$SUBS" --publications "$PUBS" \
  --payload "$PAYLOAD" "${rate[@]}" \
  --json "$OUT/compare-$SUBS.json" --plot "$OUT/compare-$SUBS.svg" $EXTRA
