// The processes of the browser tests: redis-server, `wavecast serve`,
// nginx (deploy/nginx.conf with the test's ports and paths) and the
// browsers. Each is started on a free 127.0.0.1 port and stopped by the PID
// this process started it with: on purpose by the test, and on any exit
// (a failed assertion, an exception, Ctrl-C) by the handler below.
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
/** The API key every test server gets. */
export const KEY = "browser-test-key";
/** The script-tag bundle of clients/js. */
export const BUNDLE = process.env.WAVECAST_BUNDLE || path.join(ROOT, "clients/js/dist/wavecast.min.js");
/** Screenshots and logs of a run (target/ is not tracked). */
export const ARTIFACTS = path.join(ROOT, "target/browser-tests");
/** The test pages, served by nginx under /test/. */
export const PAGES = path.join(ROOT, "tests/browser/pages");

/** A path as a message shows it: relative to the repository when inside it. */
export const shown = (p) => (path.relative(ROOT, p).startsWith("..") ? p : path.relative(ROOT, p));

/** The wavecast binary: $WAVECAST_BIN, else target/debug (what `cargo build -p wavecast` makes). */
export function wavecastBinary() {
  const bin = process.env.WAVECAST_BIN || path.join(ROOT, "target/debug/wavecast");
  if (!fs.existsSync(bin)) throw new Error(`no wavecast binary at ${bin}: run \`cargo build -p wavecast\` (or set WAVECAST_BIN)`);
  return bin;
}

// ---------------------------------------------------------------------------
// Processes

/** Every process started and not known to have exited: killed on exit. */
const live = new Set();
/** Temporary directories: removed on exit (the processes using them are gone by then). */
const dirs = new Set();
process.on("exit", () => {
  for (const p of live) {
    try {
      process.kill(p.group ? -p.pid : p.pid, "SIGKILL");
    } catch {}
  }
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) process.once(sig, () => process.exit(128 + os.constants.signals[sig]));

/** Registers a process that something else spawned (a browser): killed with its group on exit. */
export function track(name, pid, group = false) {
  const entry = { name, pid, group };
  live.add(entry);
  return () => live.delete(entry);
}

/** Is the process `pid` still there (not yet reaped counts as there)? */
function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A child process with its output kept (the last lines) for failure messages. */
export class Proc {
  constructor(name, cmd, args, { group = false, env } = {}) {
    this.name = name;
    this.lines = [];
    this.child = spawn(cmd, args, {
      stdio: ["ignore", "pipe", "pipe"],
      detached: group,
      env: env ? { ...process.env, ...env } : process.env,
    });
    this.pid = this.child.pid;
    this.exitCode = undefined;
    const entry = { name, pid: this.pid, group };
    if (this.pid) live.add(entry);
    this.exited = new Promise((resolve) => {
      this.child.once("exit", (code, signal) => {
        live.delete(entry);
        this.exitCode = signal || code;
        resolve(this.exitCode);
      });
      this.child.once("error", (e) => {
        live.delete(entry);
        this.exitCode = "error";
        this.lines.push(`cannot start ${cmd}: ${e.message}`);
        resolve("error");
      });
    });
    this.group = group;
    for (const s of [this.child.stdout, this.child.stderr]) {
      let rest = "";
      s.setEncoding("utf8");
      s.on("data", (d) => {
        const parts = (rest + d).split("\n");
        rest = parts.pop();
        for (const line of parts) this._line(line);
      });
    }
  }

  _line(line) {
    // eslint-disable-next-line no-control-regex
    this.lines.push(line.replace(/\x1b\[[0-9;]*m/g, ""));
    if (this.lines.length > 300) this.lines.shift();
    for (const w of this._waiters || []) w(line);
  }

  /** Resolves with the first output line that starts with `prefix`. */
  waitLine(prefix, ms = 30000) {
    const found = this.lines.find((l) => l.startsWith(prefix));
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const done = (f) => {
        clearTimeout(t);
        this._waiters = this._waiters.filter((x) => x !== w);
        f();
      };
      const w = (line) => line.startsWith(prefix) && done(() => resolve(line));
      (this._waiters ||= []).push(w);
      const t = setTimeout(() => done(() => reject(new Error(`${this.name}: no line "${prefix}" within ${ms} ms\n${this.tail()}`))), ms);
      this.exited.then((code) => done(() => reject(new Error(`${this.name} exited (${code}) before printing "${prefix}"\n${this.tail()}`))));
    });
  }

  tail(n = 40) {
    return this.lines.slice(-n).map((l) => `  ${this.name}| ${l}`).join("\n");
  }

  get running() {
    return this.exitCode === undefined && alive(this.pid);
  }

  signal(sig) {
    if (this.exitCode !== undefined) return;
    try {
      process.kill(this.group ? -this.pid : this.pid, sig);
    } catch {}
  }

  /** Sends `sig`, waits up to `ms` for the exit, then SIGKILL. */
  async stop(sig = "SIGTERM", ms = 10000) {
    if (this.exitCode !== undefined) return this.exitCode;
    this.signal(sig);
    if ((await within(this.exited, ms)) === TIMEOUT) {
      this.signal("SIGKILL");
      await this.exited;
    }
    return this.exitCode;
  }

  kill() {
    return this.stop("SIGKILL");
  }
}

export const TIMEOUT = Symbol("timeout");

/** `p`, or TIMEOUT once `ms` passed (the timer does not keep the process alive after). */
export function within(p, ms) {
  let t;
  return Promise.race([p, new Promise((r) => (t = setTimeout(r, ms, TIMEOUT)))]).finally(() => clearTimeout(t));
}

/** A port that was free a moment ago (bound to port 0, then released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Waits until `f()` returns something truthy (or throws after `ms`). */
export async function eventually(what, f, ms = 20000, every = 50) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await f();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}${last ? `: ${last.message}` : ""}`);
    await sleep(every);
  }
}

function tempDir(name) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `wavecast-browser-${name}-`));
  // nginx's workers may run as another user (nobody, when started as root).
  fs.chmodSync(dir, 0o755);
  dirs.add(dir);
  return dir;
}

// ---------------------------------------------------------------------------
// HTTP

/** One HTTP request on a fresh connection (no pool: servers get killed). */
export function request(port, { method = "GET", path: p = "/", headers = {}, body, timeout = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method, path: p, headers, agent: false, timeout }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d) => (text += d));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, text }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`${method} ${p} on port ${port}: no answer within ${timeout} ms`)));
    req.on("error", reject);
    req.end(body);
  });
}

/** `POST /api/METHOD` with the API key; resolves with the JSON answer, throws on anything but 200. */
export async function api(port, method, body = {}, key = KEY) {
  const r = await request(port, {
    method: "POST",
    path: `/api/${method}`,
    headers: { Authorization: `apikey ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  if (r.status !== 200) throw new Error(`POST /api/${method} on port ${port}: ${r.status} ${r.text}`);
  return JSON.parse(r.text);
}

// ---------------------------------------------------------------------------
// Redis

export class Redis {
  static async start() {
    const r = new Redis();
    r.dir = tempDir("redis");
    r.port = await freePort();
    await r.launch();
    return r;
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts redis-server on `this.port` (no persistence files: --save "", no AOF, in a temp dir). */
  async launch() {
    this.proc = new Proc("redis", "redis-server", [
      "--port", String(this.port),
      "--bind", "127.0.0.1",
      "--save", "",
      "--appendonly", "no",
      "--dir", this.dir,
    ]);
    await eventually(`redis-server answering PING on port ${this.port}`, async () => {
      if (this.proc.exitCode !== undefined) throw new Error(`redis-server exited: ${this.proc.tail()} (install redis-server)`);
      return (await this.ping()) === "+PONG";
    });
  }

  ping() {
    return new Promise((resolve) => {
      const s = net.connect(this.port, "127.0.0.1");
      let got = "";
      s.setTimeout(1000, () => s.destroy());
      s.on("connect", () => s.write("PING\r\n"));
      s.on("data", (d) => {
        got += d;
        if (got.includes("\r\n")) s.end(), resolve(got.trim());
      });
      s.on("error", () => resolve(""));
      s.on("close", () => resolve(got.trim()));
    });
  }

  async stop() {
    await this.proc?.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// wavecast

/** The namespaces of the browser tests: `test:` keeps enough history to recover anything a test misses. */
export const CONFIG = `
[channels]
history_size = 100
history_ttl = "5m"

[namespaces.test]
history_size = 1000
history_ttl = "10m"
`;

export const LISTENING = "wavecast listening on ";

export class Wavecast {
  /**
   * `wavecast serve --listen 127.0.0.1:PORT --api-key KEY --config CONFIG ARGS...`,
   * port 0 (a free one) unless given; waits for the listening line and
   * for /readyz (the Redis link, when there is one).
   */
  static async start({ args = [], port = 0, config = CONFIG, name = "wavecast" } = {}) {
    const w = new Wavecast();
    w.name = name;
    w.args = args;
    w.configDir = tempDir("wavecast");
    w.config = path.join(w.configDir, "wavecast.toml");
    fs.writeFileSync(w.config, config);
    await w.launch(port);
    return w;
  }

  async launch(port = this.port || 0) {
    const args = ["serve", "--listen", `127.0.0.1:${port}`, "--api-key", KEY, "--config", this.config, ...this.args];
    this.proc = new Proc(this.name, wavecastBinary(), args);
    const line = await this.proc.waitLine(LISTENING);
    const addr = line.slice(LISTENING.length).trim();
    this.port = Number(addr.split(":").pop());
    this.proc.name = `${this.name}:${this.port}`;
    await eventually(`${this.proc.name} ready`, async () => (await request(this.port, { path: "/readyz" })).status === 200);
    this.instance = (await api(this.port, "info")).instance;
    return this;
  }

  get addr() {
    return `127.0.0.1:${this.port}`;
  }

  /** Does this server hold the client (ids start with the server's instance id)? */
  holds(clientId) {
    return typeof clientId === "string" && clientId.startsWith(this.instance + "-");
  }

  publish(channel, data) {
    return api(this.port, "publish", { channel, data });
  }

  async stop(sig = "SIGTERM") {
    await this.proc?.stop(sig);
  }

  kill() {
    return this.proc.kill();
  }

  /** Starts the server again on the same port (so nginx's upstream line still names it). */
  async restart(sig = "SIGTERM") {
    await this.stop(sig);
    await eventually(`port ${this.port} free again`, () => this.launch(this.port).then(() => true), 15000, 200);
  }

  cleanup() {
    fs.rmSync(this.configDir, { recursive: true, force: true });
  }
}

/** Is `GET /sse` served (the SSE endpoint of docs/PROTOCOL.md)? */
export async function sseAvailable(port) {
  return new Promise((resolve) => {
    const req = http.get({ host: "127.0.0.1", port, path: "/sse?channel=probe", agent: false, timeout: 5000 }, (res) => {
      resolve(res.statusCode === 200 && String(res.headers["content-type"]).startsWith("text/event-stream"));
      req.destroy();
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(false));
  });
}

// ---------------------------------------------------------------------------
// nginx

/**
 * nginx running deploy/nginx.conf with the test's ports and paths
 * substituted (exactly as tests/cluster.rs `Nginx::start` does), plus:
 * the files of `www` (name -> path) served under /test/, and with
 * `refuseUpgrades` every WebSocket upgrade answered 403 (a proxy that does
 * not pass WebSockets).
 */
export class Nginx {
  static async start({ upstreams, www = {}, refuseUpgrades = false }) {
    const n = new Nginx();
    n.port = await freePort();
    n.dir = tempDir("nginx");
    const d = n.dir;
    const wwwDir = path.join(d, "www");
    fs.mkdirSync(wwwDir, { mode: 0o755 });
    for (const [name, file] of Object.entries(www)) fs.copyFileSync(file, path.join(wwwDir, name));
    const template = fs.readFileSync(path.join(ROOT, "deploy/nginx.conf"), "utf8");
    let out = "",
      inServers = false,
      refused = false;
    for (const line of template.split("\n")) {
      const t = line.trim();
      if (t.startsWith("# BEGIN upstream servers")) {
        inServers = true;
        for (const u of upstreams) out += `        server ${u} max_fails=1 fail_timeout=2s;\n`;
        continue;
      }
      if (t.startsWith("# END upstream servers")) {
        inServers = false;
        continue;
      }
      if (inServers) continue;
      let l = line;
      if (t === "worker_processes auto;") l = "worker_processes 1;";
      else if (t.startsWith("pid ")) l = `pid ${d}/nginx.pid;\nerror_log ${d}/error.log;`;
      else if (t === "listen 8000;")
        l =
          `listen 127.0.0.1:${n.port};\n` +
          // The test pages and the bundle, from the same origin as /ws and /sse.
          `        location /test/ {\n            alias ${wwwDir}/;\n            add_header Cache-Control no-store;\n        }`;
      else if (t === "worker_connections 65536;") l = "worker_connections 1024;";
      else if (t === "http {")
        l =
          `http {\n access_log off;\n client_body_temp_path ${d}/body;\n proxy_temp_path ${d}/proxy;\n fastcgi_temp_path ${d}/fastcgi;\n uwsgi_temp_path ${d}/uwsgi;\n scgi_temp_path ${d}/scgi;\n` +
          ` types { text/html html; text/css css; text/javascript js mjs; image/png png; }\n default_type application/octet-stream;`;
      else if (t === "location / {" && refuseUpgrades) {
        l = `${line}\n            if ($http_upgrade) {\n                return 403;\n            }`;
        refused = true;
      }
      out += l + "\n";
    }
    if (!out.includes(`listen 127.0.0.1:${n.port};`) || inServers || (refuseUpgrades && !refused))
      throw new Error("deploy/nginx.conf no longer has the lines this test substitutes");
    n.conf = path.join(d, "nginx.conf");
    fs.writeFileSync(n.conf, out);
    n.proc = new Proc(`nginx:${n.port}`, "nginx", ["-p", d, "-e", path.join(d, "error.log"), "-c", n.conf, "-g", "daemon off;"], {
      // Its own process group: a SIGKILL on exit reaches the workers too.
      group: true,
    });
    await eventually(`nginx listening on ${n.port}`, async () => {
      if (n.proc.exitCode !== undefined)
        throw new Error(`nginx exited (${n.proc.exitCode}): ${n.errors()} ${n.proc.tail()} (install nginx)`);
      return new Promise((resolve) => {
        const s = net.connect(n.port, "127.0.0.1", () => (s.destroy(), resolve(true)));
        s.on("error", () => resolve(false));
      });
    });
    return n;
  }

  get origin() {
    return `http://127.0.0.1:${this.port}`;
  }

  errors() {
    try {
      return fs.readFileSync(path.join(this.dir, "error.log"), "utf8");
    } catch {
      return "";
    }
  }

  async stop() {
    await this.proc?.stop("SIGTERM");
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// A cluster: Redis, three servers, nginx in front

export class Cluster {
  static async start({ servers = 3, args = [] } = {}) {
    const c = new Cluster();
    c.redis = await Redis.start();
    c.servers = await Promise.all(
      Array.from({ length: servers }, (_, i) =>
        Wavecast.start({ name: `wavecast${i + 1}`, args: ["--redis", c.redis.url, "--redis-presence-ttl", "3s", ...args] }),
      ),
    );
    c.nginxes = [];
    return c;
  }

  get upstreams() {
    return this.servers.map((s) => s.addr);
  }

  async nginx(opts = {}) {
    const n = await Nginx.start({ upstreams: this.upstreams, ...opts });
    this.nginxes.push(n);
    return n;
  }

  /** The server that holds `clientId`. */
  holder(clientId) {
    return this.servers.find((s) => s.holds(clientId));
  }

  /** Output of every process, for a failure message. */
  tails() {
    return [...this.servers.map((s) => s.proc.tail(15)), ...this.nginxes.map((n) => n.errors().split("\n").slice(-10).join("\n"))].join("\n");
  }

  async stop() {
    await Promise.all(this.nginxes.map((n) => n.stop()));
    await Promise.all(this.servers.map((s) => s.stop().then(() => s.cleanup())));
    await this.redis?.stop();
  }
}
