#!/usr/bin/env bash
# benches/compression.sh: permessage-deflate side by side, in one run:
# bytes on the wire and server CPU per delivery for JSON publications,
# compression off and on, for wavecast and for peers that offer it (ws,
# Socket.IO, NATS; set up as in benches/peers/), at each subscriber count
# and payload size.
#
# Starts the release build of wavecast with --compression and each peer
# with compression on, on free loopback ports; for each (subscribers,
# payload) pair runs one `wavecast bench compare` that alternates, round by
# round, every target with its subscribers not offering the extension
# (NAME) and offering it (NAME+deflate), so "off" and "on" are the same
# server; server CPU is read from /proc by PID. Then stops every server it
# started by its PID.
#
#   benches/compression.sh                      # 1,000 and 10,000 subscribers, 1 KiB and 4 KiB
#   SUBS="1000" PAYLOADS="4096" PEERS=ws benches/compression.sh
#
# Environment (defaults in brackets):
#   SUBS ["1000 10000"]   PAYLOADS ["1024 4096"] bytes of JSON data
#   PUBS_1000 [200] PUBS_10000 [100]: publications per run by subscriber
#     count (PUBS for any other count [200]); sent as fast as acknowledged
#   ROUNDS [2]   PEERS [ws socketio nats]
#   OUT [target/bench] directory for compression-SUBS-PAYLOAD.json
#   PEERS_DIR [/work/shared/peers] the peers' install (for run-peer's npm set)
#   PEERS_HOME [~/.cache/wavecast-peers] where run-peer installs them
#   NO_BUILD=1 skips `cargo build --release`
#   BIN [target/release/wavecast]
set -euo pipefail
cd "$(dirname "$0")/.."

SUBS=${SUBS:-1000 10000}
PAYLOADS=${PAYLOADS:-1024 4096}
ROUNDS=${ROUNDS:-2}
PEERS=${PEERS:-ws socketio nats}
OUT=${OUT:-target/bench}
PEERS_DIR=${PEERS_DIR:-/work/shared/peers}
home=${PEERS_HOME:-$HOME/.cache/wavecast-peers}

if [[ -z ${NO_BUILD:-} ]]; then
  cargo build --release -p wavecast
fi
bin=${BIN:-target/release/wavecast}
mkdir -p "$OUT" "$home"
ulimit -n "$(ulimit -Hn)"

# shellcheck source=benches/lib.sh
source benches/lib.sh

node_ready() { # ws and socket.io, as run-peer installs them
  exec 9>"$home/.node.lock"
  flock 9
  if [[ ! -d $home/node/node_modules/ws || ! -d $home/node/node_modules/socket.io ]]; then
    mkdir -p "$home/node"
    cp "$PEERS_DIR/node/package.json" "$home/node/"
    (cd "$home/node" && npm install --no-audit --no-fund --silent >&2)
  fi
  cp benches/peers/*.js "$home/node/"
  flock -u 9
}

targets=()
pidlist=()

port=$(free_port 10000)
"$bin" serve --listen "127.0.0.1:$port" --compression \
  --client-command-rate 0 --client-publish-rate 0 >"$OUT/wavecast-deflate.log" 2>&1 &
pids+=($!)
wait_listening "$port" $! wavecast
targets+=("wavecast=ws://127.0.0.1:$port/ws" "wavecast+deflate=ws://127.0.0.1:$port/ws")
pidlist+=("wavecast=$!")

for peer in $PEERS; do
  port=$(free_port 10000)
  case $peer in
    ws)
      node_ready
      node "$home/node/ws-deflate.js" "$port" >"$OUT/ws-deflate.log" 2>&1 &
      url="ws://127.0.0.1:$port/" ;;
    socketio)
      node_ready
      node "$home/node/socketio-deflate.js" "$port" >"$OUT/socketio-deflate.log" 2>&1 &
      url="ws://127.0.0.1:$port/socket.io/?EIO=4&transport=websocket" ;;
    nats)
      if ! command -v nats-server >/dev/null; then
        apt-get install -y -qq nats-server >&2 || { apt-get update -qq >&2 && apt-get install -y -qq nats-server >&2; }
      fi
      conf=$home/nats-deflate-$port.conf
      sed -e "s/port: 9003/port: $port/" -e "s/^port: 14222/port: $((port + 10000))/" \
        benches/peers/nats-ws-deflate.conf >"$conf"
      nats-server -c "$conf" >"$OUT/nats-deflate.log" 2>&1 &
      url="ws://127.0.0.1:$port/" ;;
    *)
      echo "compression.sh: no compressing set-up for peer '$peer' (ws, socketio, nats)" >&2
      exit 2 ;;
  esac
  pids+=($!)
  wait_listening "$port" $! "$peer"
  targets+=("$peer=$url" "$peer+deflate=$url")
  pidlist+=("$peer=$!")
done

for subs in $SUBS; do
  pubs_var=PUBS_$subs
  pubs=${!pubs_var:-${PUBS:-200}}
  for payload in $PAYLOADS; do
    echo "== $subs subscribers, $payload B JSON publications, $pubs publications"
    "$bin" bench compare \
      --targets "$(join "${targets[@]}")" \
      --pids "$(join "${pidlist[@]}")" \
      --rounds "$ROUNDS" --subscribers "$subs" --publications "$pubs" \
      --payload "$payload" --json-data --max \
      --json "$OUT/compression-$subs-$payload.json"
  done
done
