// The README's example, as it is written, against the real server.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { startServer } from "./harness.mjs";

test("the README's 10-line example works", { timeout: 30000 }, async () => {
  const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
  const code = readme.split("<!-- example: run by test/integration/readme.test.mjs -->\n```js\n")[1].split("```")[0];
  assert.equal(code.trim().split("\n").filter((l) => l.trim()).length, 10, "ten lines");
  const server = await startServer();
  // Inside the package, so that "@wavecast/client" is this package (its own name).
  const file = new URL("../readme-example.tmp.mjs", import.meta.url);
  writeFileSync(file, code.replace("ws://127.0.0.1:8000/ws", server.url));
  try {
    const out = await new Promise((resolve, reject) =>
      execFile(process.execPath, [file.pathname], { timeout: 20000 }, (e, stdout, stderr) => (e ? reject(new Error(stderr || e.message)) : resolve(stdout))),
    );
    assert.match(out, /\{ offset: 1 \}/);
    assert.match(out, /publications: \[ \{ offset: 1, data:/);
  } finally {
    rmSync(file, { force: true });
    await server.stop();
  }
});
