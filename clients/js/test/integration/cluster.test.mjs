// Three servers on one Redis; the client on one of them, the publisher on
// another; Redis restarted mid-stream (losing everything: no persistence).
// Every publication is delivered once, in order, or a gap event says what
// could not be.
import { test } from "node:test";
import assert from "node:assert/strict";
import { client, next, publish, sleep, startRedis, startServer, until, watch } from "./harness.mjs";

test("Redis restarted under three servers: every publication once, in order, or a gap event", { timeout: 120000 }, async () => {
  let redis = await startRedis();
  const servers = [];
  for (let i = 0; i < 3; i++) servers.push(await startServer({ args: ["--redis", redis.url] }));
  const c = client(servers[0]);
  c.connect();
  const sub = c.subscribe("cluster");
  const w = watch(sub);
  await next(sub, "subscribed");
  const accepted = [];
  try {
    let stop = false;
    const publisher = (async () => {
      for (let i = 0; !stop; i++) {
        try {
          accepted.push([i, await publish(servers[1 + (i % 2)], "cluster", { i })]);
        } catch {
          // Redis is down: the API answers 503.
        }
        await sleep(20);
      }
    })();
    await until(() => w.offsets.length >= 20, "20 publications");
    redis = await redis.restart();
    await until(() => w.offsets.length >= 10 + accepted.length / 2 && accepted.length > 60, "publications after the restart", 60000);
    stop = true;
    await publisher;
    const last = accepted.at(-1);
    await until(() => w.data.some((d) => d.i == last[0]), "the last publication", 30000);
    assert.deepEqual(w.violations, [], "each offset once, in order, or a gap event first");
    // Every accepted publication arrived, except where a gap was said.
    const got = new Set(w.data.map((d) => d.i));
    const missing = accepted.filter(([i]) => !got.has(i));
    assert.ok(missing.length == 0 || w.gaps.length > 0, `${missing.length} missing without a gap event`);
    const is = w.data.map((d) => d.i);
    assert.deepEqual(is, [...is].sort((a, b) => a - b), "in publishing order");
  } finally {
    c.disconnect();
    for (const s of servers) await s.stop();
    await redis.stop();
  }
});
