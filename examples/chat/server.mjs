#!/usr/bin/env node
// The chat's backend, with no dependencies: it serves the page, mints
// connection tokens (HS256 JWTs signed with the secret the wavecast server
// verifies them with), and publishes messages through wavecast's HTTP API
// with the API key, so that browsers never need permission to publish.
//
//   WAVECAST_URL=http://127.0.0.1:8000 WAVECAST_API_KEY=... \
//   WAVECAST_TOKEN_HMAC_SECRET=... node examples/chat/server.mjs [--port 3000]
//
// run.mjs starts it together with a wavecast server.
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const arg = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const port = Number(arg("--port", process.env.PORT || 3000));
const wavecast = new URL(process.env.WAVECAST_URL || "http://127.0.0.1:8000");
const apiKey = process.env.WAVECAST_API_KEY;
const secret = process.env.WAVECAST_TOKEN_HMAC_SECRET;
const bundle = process.env.WAVECAST_BUNDLE || path.join(here, "../../clients/js/dist/wavecast.min.js");
const ROOM = "chat:lobby";
const TOKEN_TTL = 600; // seconds; the client refreshes at about 80% of it
if (!apiKey || !secret) {
  console.error("set WAVECAST_API_KEY and WAVECAST_TOKEN_HMAC_SECRET (the wavecast server's --api-key and --token-hmac-secret)");
  process.exit(2);
}

// --- tokens: a JWT is base64url(header).base64url(claims).base64url(HMAC-SHA256 of the two)
const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
const mac = (data) => crypto.createHmac("sha256", secret).update(data).digest("base64url");
function sign(claims) {
  const data = b64({ alg: "HS256", typ: "JWT" }) + "." + b64(claims);
  return data + "." + mac(data);
}
/** The claims of a token this backend signed and that has not expired, else null. */
function verify(token) {
  const [head, body, sig] = String(token).split(".");
  if (!sig) return null;
  const want = Buffer.from(mac(head + "." + body)), got = Buffer.from(sig);
  if (want.length !== got.length || !crypto.timingSafeEqual(want, got)) return null;
  const claims = JSON.parse(Buffer.from(body, "base64url"));
  return claims.exp > Date.now() / 1000 ? claims : null;
}

// --- wavecast's HTTP API (docs/PROTOCOL.md "HTTP API")
async function api(method, body) {
  const r = await fetch(new URL("/api/" + method, wavecast), {
    method: "POST",
    headers: { Authorization: "apikey " + apiKey, "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await r.json();
  if (!r.ok) throw new Error(`${method}: ${r.status} ${JSON.stringify(answer)}`);
  return answer;
}

// --- HTTP
const files = {
  "/": [path.join(here, "index.html"), "text/html"],
  "/chat.js": [path.join(here, "chat.js"), "text/javascript"],
  "/chat.css": [path.join(here, "chat.css"), "text/css"],
  "/wavecast.min.js": [bundle, "text/javascript"],
};

const send = (res, status, body, type = "application/json") => {
  res.writeHead(status, { "Content-Type": type, "Cache-Control": "no-store" });
  res.end(typeof body === "string" || Buffer.isBuffer(body) ? body : JSON.stringify(body));
};

async function readJson(req) {
  let s = "";
  for await (const chunk of req) if ((s += chunk).length > 10000) throw new Error("too large");
  return JSON.parse(s || "{}");
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, "http://x");
    if (req.method === "GET" && files[url.pathname]) {
      const [file, type] = files[url.pathname];
      return send(res, 200, fs.readFileSync(file), type + "; charset=utf-8");
    }
    if (req.method === "GET" && url.pathname === "/config") {
      // Where browsers find wavecast: its address as this page's visitor reaches it.
      const ws = new URL("/ws", wavecast);
      ws.protocol = wavecast.protocol === "https:" ? "wss:" : "ws:";
      return send(res, 200, { url: ws.href, room: ROOM });
    }
    if (req.method === "POST" && url.pathname === "/token") {
      // A real application takes the user from its session; the demo trusts the name.
      const { name } = await readJson(req);
      const user = String(name || "").trim();
      if (!user || user.length > 32) return send(res, 400, { error: "a name of 1 to 32 characters" });
      const now = Math.floor(Date.now() / 1000);
      return send(res, 200, { token: sign({ sub: user, iat: now, exp: now + TOKEN_TTL }) });
    }
    if (req.method === "POST" && url.pathname === "/send") {
      const claims = verify((req.headers.authorization || "").replace(/^Bearer /, ""));
      if (!claims) return send(res, 401, { error: "no valid token" });
      const { text } = await readJson(req);
      const t = String(text || "").trim().slice(0, 500);
      if (!t) return send(res, 400, { error: "empty message" });
      const r = await api("publish", { channel: ROOM, data: { user: claims.sub, text: t, at: Date.now() } });
      return send(res, 200, { offset: r.offset });
    }
    send(res, 404, { error: "not found" });
  } catch (e) {
    send(res, 500, { error: String(e.message || e) });
  }
});

server.listen(port, "127.0.0.1", () => {
  console.log(`chat listening on http://127.0.0.1:${server.address().port}/`);
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => server.close(() => process.exit(0)).closeAllConnections());
