#!/usr/bin/env node
// One command for the chat: starts a wavecast server (target/release or
// target/debug) and the backend (server.mjs), and prints the address.
//
//   node examples/chat/run.mjs [--port 3000] [--wavecast-port 8000]
//
// Port 0 picks a free one. Ctrl-C stops both. The API key and the token
// secret are fresh random ones unless WAVECAST_API_KEY and
// WAVECAST_TOKEN_HMAC_SECRET are set.
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.join(here, "../..");
const arg = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const fail = (msg) => {
  console.error(msg);
  process.exit(1);
};

const bin =
  process.env.WAVECAST_BIN ||
  ["release", "debug"].map((p) => path.join(root, "target", p, "wavecast")).find((f) => fs.existsSync(f));
if (!bin || !fs.existsSync(bin)) fail("no wavecast binary: build it with `cargo build --release -p wavecast` (or set WAVECAST_BIN)");
const bundle = path.join(root, "clients/js/dist/wavecast.min.js");
if (!process.env.WAVECAST_BUNDLE && !fs.existsSync(bundle))
  fail("no clients/js/dist/wavecast.min.js: build it with `cd clients/js && npm ci && npm run build`");

const env = {
  ...process.env,
  WAVECAST_API_KEY: process.env.WAVECAST_API_KEY || crypto.randomBytes(24).toString("hex"),
  WAVECAST_TOKEN_HMAC_SECRET: process.env.WAVECAST_TOKEN_HMAC_SECRET || crypto.randomBytes(32).toString("hex"),
};

const children = [];
const stopAll = (code) => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGTERM");
  process.exitCode = code;
};
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(sig, () => stopAll(0));

/** Starts a child and resolves with the rest of its first stdout line that starts with `prefix`. */
function start(name, cmd, args) {
  const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "inherit"] });
  children.push(child);
  child.on("exit", (code, signal) => {
    if (process.exitCode === undefined) {
      console.error(`${name} exited (${signal || code}); stopping`);
      stopAll(1);
    }
  });
  return (prefix) =>
    new Promise((resolve) => {
      let buf = "";
      child.stdout.setEncoding("utf8");
      child.stdout.on("data", (d) => {
        const lines = (buf + d).split("\n");
        buf = lines.pop();
        for (const line of lines) if (line.startsWith(prefix)) resolve(line.slice(prefix.length).trim());
      });
    });
}

const wavecastAddr = await start("wavecast", bin, [
  "serve",
  "--listen", `127.0.0.1:${arg("--wavecast-port", "0")}`,
  "--config", path.join(here, "wavecast.toml"),
])("wavecast listening on ");
env.WAVECAST_URL = `http://${wavecastAddr}`;
const url = await start("chat backend", process.execPath, [path.join(here, "server.mjs"), "--port", arg("--port", "3000")])(
  "chat listening on ",
);
console.log(`wavecast on ${wavecastAddr}, the chat backend on ${url}`);
console.log(`chat ready: ${url}`);
console.log("Open it in two browser tabs; Ctrl-C stops everything.");
