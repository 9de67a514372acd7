#!/usr/bin/env python3
# Usage: redis_restart.py WAVECAST_BINARY [aof|none|rdb ...]
#
# What a restart of Redis costs subscribers, with and without persistence
# (docs/OPERATIONS.md, "Redis persistence"). For each mode: start
# redis-server on a free port in a fresh directory (aof: --appendonly yes
# --appendfsync everysec; none: --appendonly no --save ""; rdb: snapshots
# only, --appendonly no --save "1 1"), a wavecast
# server on it, subscribe a client to a channel, publish 20 (the client
# reads them all), close the client, wait 1.5 s (an rdb snapshot is
# taken), publish 10 more (which it misses),
# SIGKILL redis by its PID and start it again with the same port and
# directory, wait for the server's /readyz, then reconnect the client
# with `recover` from the last position it saw. Prints one JSON line per
# mode: recovered, how many publications came back, whether the epoch is
# the one before the restart, and how long the server took to be ready
# again after redis answered.
#
# Processes are stopped by the PIDs started here. Loopback only.
import base64, json, os, shutil, socket, subprocess, sys, tempfile, time, urllib.request

KEY = "restart-key"
CHANNEL = "news"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def start_redis(port, directory, mode):
    persist = {
        "aof": ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
        "none": ["--appendonly", "no", "--save", ""],
        "rdb": ["--appendonly", "no", "--save", "1 1"],
    }[mode]
    p = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                          "--dir", directory] + persist,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(7) == b"+PONG\r\n":
                    return p
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit("redis-server did not answer PING")


def start_server(binary, redis_port, log):
    p = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--api-key", KEY,
                          "--redis", f"redis://127.0.0.1:{redis_port}", "--workers", "1",
                          "--client-publish-rate", "0", "--client-command-rate", "0"],
                         stdout=subprocess.PIPE, stderr=log, text=True)
    line = p.stdout.readline()
    prefix = "wavecast listening on "
    if not line.startswith(prefix):
        raise SystemExit(f"no listening line: {line!r}")
    host, port = line[len(prefix):].strip().rsplit(":", 1)
    return p, int(port)


def http(port, method, path, body=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"apikey {KEY}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def wait_ready(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if http(port, "GET", "/readyz")[0] == 200:
            return
        time.sleep(0.01)
    raise SystemExit("the server did not become ready")


class Ws:
    """A minimal WebSocket client (text frames, masked), enough for JSON
    commands and replies."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall((f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.s.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise SystemExit(f"handshake refused: {head!r}")

    def send(self, obj):
        data = json.dumps(obj).encode()
        mask = os.urandom(4)
        n = len(data)
        hdr = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
        self.s.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise SystemExit("connection closed")
            self.buf += chunk

    def recv(self):
        while True:
            self._need(2)
            op, n = self.buf[0] & 0x0F, self.buf[1] & 0x7F
            off = 2
            if n == 126:
                self._need(4); n = int.from_bytes(self.buf[2:4], "big"); off = 4
            elif n == 127:
                self._need(10); n = int.from_bytes(self.buf[2:10], "big"); off = 10
            self._need(off + n)
            payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
            if op == 0x1:
                return json.loads(payload)
            if op == 0x9:  # ping: answer
                mask = os.urandom(4)
                self.s.sendall(bytes([0x8A, 0x80 | len(payload)]) + mask +
                               bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
            if op == 0x8:
                raise SystemExit(f"closed by the server: {payload!r}")

    def reply(self, rid):
        while True:
            m = self.recv()
            if m.get("id") == rid:
                return m

    def close(self):
        self.s.close()


def run(binary, mode):
    directory = tempfile.mkdtemp(prefix=f"wavecast-redis-restart-{mode}-")
    redis_port = free_port()
    log = open(os.path.join(directory, "wavecast.log"), "w")
    redis = start_redis(redis_port, directory, mode)
    server, port = start_server(binary, redis_port, log)
    try:
        wait_ready(port)
        c = Ws(port)
        c.send({"id": 1, "subscribe": {"channel": CHANNEL}})
        sub = c.reply(1)["subscribe"]
        epoch, offset = sub["epoch"], sub["offset"]
        for i in range(20):
            status, _ = http(port, "POST", "/api/publish", {"channel": CHANNEL, "data": {"i": i}})
            assert status == 200, status
        seen = 0
        while seen < 20:
            m = c.recv()
            if "push" in m and "pub" in m["push"]:
                offset = m["push"]["pub"]["offset"]
                seen += 1
        c.close()
        time.sleep(1.5)
        for i in range(20, 30):
            status, _ = http(port, "POST", "/api/publish", {"channel": CHANNEL, "data": {"i": i}})
            assert status == 200, status
        redis.kill()
        redis.wait()
        redis = start_redis(redis_port, directory, mode)
        t = time.time()
        wait_ready(port)
        ready_after = time.time() - t
        c = Ws(port)
        c.send({"id": 2, "subscribe": {"channel": CHANNEL,
                                        "recover": {"epoch": epoch, "offset": offset}}})
        r = c.reply(2)
        c.close()
        sub = r.get("subscribe", {})
        got = [p["data"]["i"] for p in sub.get("publications", [])]
        persistence_log = [json.loads(l)["fields"]["message"] if l.startswith("{") else l.strip()
                           for l in open(os.path.join(directory, "wavecast.log"))
                           if "persist" in l]
        print(json.dumps({
            "mode": mode,
            "recovered": sub.get("recovered"),
            "publications_recovered": len(got),
            "missed": 10,
            "recovered_data": got,
            "same_epoch": sub.get("epoch") == epoch,
            "ready_after_redis_restart_s": round(ready_after, 3),
            "persistence_log": persistence_log,
        }))
    finally:
        server.terminate()
        server.wait()
        redis.kill()
        redis.wait()
        log.close()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    binary = sys.argv[1]
    for mode in sys.argv[2:] or ["aof", "none"]:
        run(binary, mode)
