// Starting the real `wavecast serve` (target/debug/wavecast) and
// redis-server on 127.0.0.1, reading the server's listening line from its
// stdout, and stopping every process by the PID it was started with.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import WS from "ws";
import { Wavecast } from "../../dist/index.mjs";

const repo = fileURLToPath(new URL("../../../../", import.meta.url));
export const BINARY = process.env.WAVECAST_BIN || join(repo, "target/debug/wavecast");
export const API_KEY = "test-api-key";
const LISTENING = "wavecast listening on ";

if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: run cargo build -p wavecast first`);

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `f()` is truthy (polling), or fails after `ms` saying `what`. */
export async function until(f, what, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * A TCP proxy on 127.0.0.1 in front of `port`: `stall()` stops reading
 * what the server sends (as a client that does not read would), `flow()`
 * passes it on again.
 */
export function proxy(port, { refuseUpgrades = false } = {}) {
  const pairs = new Set();
  let stalled = false;
  const sockets = new Set();
  const srv = createServer((down) => {
    sockets.add(down);
    down.on("close", () => sockets.delete(down));
    if (refuseUpgrades) {
      // As a proxy that does not pass WebSocket upgrades: 403 to them.
      return down.once("data", (head) => {
        if (/^upgrade:\s*websocket/im.test(head.toString("latin1"))) {
          down.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        } else {
          const up = connect(port, "127.0.0.1");
          up.write(head);
          pipePair(up, down);
        }
      });
    }
    pipePair(connect(port, "127.0.0.1"), down);
  });
  const pipePair = (up, down) => {
    const pair = { up, down };
    pairs.add(pair);
    down.pipe(up);
    if (!stalled) up.pipe(down);
    else up.pause();
    const end = () => (up.destroy(), down.destroy(), pairs.delete(pair));
    up.on("error", end).on("close", () => down.end());
    down.on("error", end).on("close", end);
  };
  return new Promise((resolve) =>
    srv.listen(0, "127.0.0.1", () =>
      resolve({
        port: srv.address().port,
        stall() {
          stalled = true;
          for (const { up, down } of pairs) up.unpipe(down), up.pause();
        },
        flow() {
          stalled = false;
          for (const { up, down } of pairs) up.pipe(down);
        },
        close: () =>
          new Promise((r) => {
            srv.close(r);
            pairs.forEach(({ up }) => up.destroy());
            sockets.forEach((s) => s.destroy());
          }),
      }),
    ),
  );
}

/** A port that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const running = new Set();
process.on("exit", () => {
  for (const p of running) {
    try {
      process.kill(p.pid, "SIGKILL");
    } catch {}
  }
});

/** Ends a process by its PID and waits for it. */
async function stopProcess(child, signal) {
  if (child.exitCode != null || child.signalCode != null) return;
  const done = new Promise((r) => child.once("exit", r));
  try {
    process.kill(child.pid, signal);
  } catch {}
  let timer;
  await Promise.race([done, new Promise((r) => (timer = setTimeout(r, 10000)))]);
  clearTimeout(timer);
  if (child.exitCode == null && child.signalCode == null) {
    process.kill(child.pid, "SIGKILL");
    await done;
  }
  running.delete(child);
}

/**
 * A wavecast server: `serve --listen 127.0.0.1:PORT` (0: a free one) with
 * `args`; resolves once it printed its listening line. `config` (TOML
 * text) is passed with --config.
 */
export async function startServer({ port = 0, args = [], config } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "wavecast-js-"));
  const all = ["serve", "--listen", `127.0.0.1:${port}`, "--api-key", API_KEY, ...args];
  if (config) {
    writeFileSync(join(dir, "config.toml"), config);
    all.push("--config", join(dir, "config.toml"));
  }
  const child = spawn(BINARY, all, { stdio: ["ignore", "pipe", "pipe"] });
  running.add(child);
  let stderr = "";
  child.stderr.on("data", (d) => (stderr = (stderr + d).slice(-4000)));
  const addr = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`the server did not start: ${stderr}`)), 30000);
    child.stdout.on("data", (d) => {
      out += d;
      const line = out.split("\n").find((l) => l.startsWith(LISTENING));
      if (line) clearTimeout(timer), resolve(line.slice(LISTENING.length).trim());
    });
    child.once("exit", (code) => reject(new Error(`the server exited (${code}): ${stderr}`)));
  });
  child.stdout.resume();
  const [, p] = addr.split(":");
  const server = {
    addr,
    port: Number(p),
    child,
    url: `ws://${addr}/ws`,
    http: `http://${addr}`,
    args,
    config,
    stderr: () => stderr,
    /** SIGTERM: a graceful shutdown (clients are closed with 4000). */
    stop: () => stopProcess(child, "SIGTERM").finally(() => rmSync(dir, { recursive: true, force: true })),
    /** SIGKILL: a crash (clients see the connection drop, 1006). */
    kill: () => stopProcess(child, "SIGKILL").finally(() => rmSync(dir, { recursive: true, force: true })),
    /** The same server again, on the same port. */
    restart: () => startServer({ port: server.port, args, config }),
  };
  return server;
}

/** redis-server on a free port (or `port`), without persistence; `stop()` by PID, `restart()` on the same port. */
export async function startRedis(port) {
  port ||= await freePort();
  const dir = mkdtempSync(join(tmpdir(), "wavecast-js-redis-"));
  const child = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
    { stdio: "ignore" },
  );
  running.add(child);
  await until(() => redisPing(port), "redis-server to answer PING");
  const redis = {
    port,
    url: `redis://127.0.0.1:${port}`,
    stop: () => stopProcess(child, "SIGKILL").finally(() => rmSync(dir, { recursive: true, force: true })),
    restart: async () => (await redis.stop(), startRedis(port)),
  };
  return redis;
}

function redisPing(port) {
  return new Promise((resolve) => {
    const s = connect(port, "127.0.0.1");
    s.setTimeout(1000);
    s.on("connect", () => s.write("PING\r\n"));
    s.on("data", (d) => (s.destroy(), resolve(d.toString().startsWith("+PONG"))));
    s.on("error", () => resolve(false));
    s.on("timeout", () => (s.destroy(), resolve(false)));
  });
}

/** POST /api/METHOD with the API key; returns [status, body]. */
export async function api(server, method, body) {
  const r = await fetch(`${server.http}/api/${method}`, {
    method: "POST",
    headers: { Authorization: `apikey ${API_KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return [r.status, await r.json().catch(() => null)];
}

/** Publishes through the HTTP API; returns the offset (throws on a refusal). */
export async function publish(server, channel, data) {
  let [status, body] = await api(server, "publish", { channel, data });
  // 503: the backbone is not there (yet): a restarted server joins Redis.
  for (let i = 0; status == 503 && i < 100; i++) {
    await sleep(100);
    [status, body] = await api(server, "publish", { channel, data });
  }
  if (status != 200) throw new Error(`publish: ${status} ${JSON.stringify(body)}`);
  return body.offset;
}

/** An HS256 JWT signed with `secret`. */
export function sign(claims, secret) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = b64({ alg: "HS256", typ: "JWT" }) + "." + b64(claims);
  return head + "." + createHmac("sha256", secret).update(head).digest("base64url");
}

export const now = () => Math.floor(Date.now() / 1000);

/** A client of `server` over the `ws` package's WebSocket. */
export function client(server, options = {}) {
  return new Wavecast(server.url, { WebSocket: WS, transports: ["websocket"], ...options });
}

/** Resolves with the next event `name` of `emitter` (that `pred` accepts). */
export function next(emitter, name, pred = () => true, ms = 20000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => (off(), reject(new Error(`no ${name} event in ${ms} ms`))), ms);
    const off = emitter.on(name, (e) => {
      if (pred(e)) clearTimeout(timer), off(), resolve(e);
    });
  });
}

/**
 * Records what a subscription delivers and checks the contract as it
 * goes: every offset once, in order (the previous plus one in the same
 * epoch), or a `gap` event first. `violations` lists any breach.
 */
export function watch(sub) {
  const w = { offsets: [], data: [], gaps: [], subscribed: [], violations: [], pos: null };
  sub.on("subscribed", (e) => {
    w.subscribed.push(e);
    if (!w.pos) w.pos = { epoch: e.epoch, offset: e.offset };
    else if (!e.recovered) w.pendingGap = true;
  });
  sub.on("gap", (e) => {
    w.gaps.push(e);
    w.pendingGap = false;
    w.pos = { epoch: e.epoch, offset: e.offset };
  });
  sub.on("publication", (p) => {
    if (w.pendingGap) w.violations.push(`publication ${p.offset} after a not-recovered subscribe without a gap event`);
    if (p.offset != w.pos.offset + 1) w.violations.push(`offset ${p.offset} after ${w.pos.offset} (epoch ${w.pos.epoch})`);
    w.pos.offset = p.offset;
    w.offsets.push(p.offset);
    w.data.push(p.data);
  });
  return w;
}
