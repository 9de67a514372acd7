// The three builds: the script-tag bundle's global, CommonJS, ESM, and the
// package's exports map.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import vm from "node:vm";

const dist = (f) => new URL(`../../dist/${f}`, import.meta.url);

test("dist/wavecast.min.js exposes a global Wavecast: the client class, with the rest on it", () => {
  const ctx = vm.createContext({ URL, setTimeout, clearTimeout });
  vm.runInContext(readFileSync(dist("wavecast.min.js"), "utf8"), ctx);
  const W = ctx.Wavecast;
  assert.equal(typeof W, "function");
  const c = new W("ws://127.0.0.1:1/ws");
  assert.equal(c.state, "disconnected");
  assert.equal(typeof c.subscribe, "function");
  for (const name of ["UnauthorizedError", "WavecastError", "Subscription"]) assert.equal(typeof W[name], "function", name);
  assert.equal(W.TIMEOUT, 1);
});

test("CommonJS and ESM builds, through the package's own name", async () => {
  const require = createRequire(import.meta.url);
  const cjs = require("@wavecast/client");
  const esm = await import("@wavecast/client");
  for (const m of [cjs, esm]) {
    assert.equal(typeof m.Wavecast, "function");
    assert.ok(new m.UnauthorizedError() instanceof Error);
  }
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url)));
  assert.deepEqual(Object.keys(pkg.exports["."]), ["types", "import", "require"], "types first");
  assert.equal(pkg.sideEffects, false);
  assert.deepEqual(Object.keys(pkg.dependencies || {}), [], "no runtime dependencies");
  assert.ok(readFileSync(dist("index.d.ts"), "utf8").includes("Wavecast"));
});
