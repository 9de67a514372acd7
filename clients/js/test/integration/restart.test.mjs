// The server killed and restarted mid-stream: with Redis (history
// survives) every publication arrives once, in order, no gap; with the
// in-memory backbone (history lost) the client says so with a gap event.
import { test } from "node:test";
import assert from "node:assert/strict";
import { client, next, publish, sleep, startRedis, startServer, until, watch } from "./harness.mjs";

/** Publishes `{i}` for i in [from, to) through the API of whichever server runs, retrying while it is down. */
async function publishAll(getServer, channel, from, to, gap = 15) {
  for (let i = from; i < to; i++) {
    for (;;) {
      try {
        await publish(getServer(), channel, { i });
        break;
      } catch {
        await sleep(50);
      }
    }
    await sleep(gap);
  }
}

test("with Redis: a crash (1006) and a graceful restart (4000) mid-stream lose and repeat nothing", { timeout: 90000 }, async () => {
  const redis = await startRedis();
  let server = await startServer({ args: ["--redis", redis.url] });
  const c = client(server);
  const downs = [];
  c.on("disconnected", (e) => downs.push(e));
  c.connect();
  const sub = c.subscribe("feed");
  const w = watch(sub);
  await next(sub, "subscribed");
  try {
    const N = 90;
    const publisher = publishAll(() => server, "feed", 0, N);
    await until(() => w.offsets.length >= 30, "30 publications");
    await server.kill();
    await sleep(300);
    server = await server.restart();
    await until(() => w.offsets.length >= 60 && c.state == "connected", "60 publications after the crash", 30000);
    await server.stop();
    server = await server.restart();
    await publisher;
    // The publisher may have retried a publication the server had taken
    // before it died: the same {i} twice, at two offsets. Each offset is
    // still delivered once, in order, and every i arrives.
    await until(() => new Set(w.data.map((d) => d.i)).size == N, `all ${N} publications`, 30000);
    assert.deepEqual(w.violations, []);
    assert.deepEqual(w.gaps, [], "nothing was lost: no gap");
    const is = w.data.map((d) => d.i);
    assert.deepEqual([...new Set(is)], [...Array(N).keys()], "in order");
    assert.ok(w.subscribed.length >= 3, "resubscribed after each restart");
    assert.ok(w.subscribed.slice(1).every((s) => s.recovered), "with recover, recovered");
    const codes = downs.map((d) => d.code);
    assert.ok(codes.includes(1006), `a crash: ${codes}`);
    assert.ok(codes.includes(4000), `a shutdown: ${codes}`);
    assert.ok(downs.every((d) => d.reconnect));
  } finally {
    c.disconnect();
    await server.stop();
    await redis.stop();
  }
});

test("in memory: a restart loses the history, and the client says so with a gap event", { timeout: 60000 }, async () => {
  let server = await startServer();
  const c = client(server);
  c.connect();
  const sub = c.subscribe("mem");
  const w = watch(sub);
  await next(sub, "subscribed");
  try {
    for (let i = 0; i < 5; i++) await publish(server, "mem", { i });
    await until(() => w.offsets.length == 5, "5 publications");
    const before = sub.position();
    await server.kill();
    server = await server.restart();
    const gap = await next(sub, "gap");
    assert.equal(gap.channel, "mem");
    assert.equal(gap.reason, "not_recovered");
    assert.notEqual(gap.epoch, before.epoch, "a new epoch");
    await publish(server, "mem", { i: 5 });
    await until(() => w.offsets.length == 6, "the publication after the restart");
    assert.deepEqual(w.violations, []);
    assert.deepEqual(w.data.at(-1), { i: 5 });
    assert.deepEqual(sub.position(), { epoch: gap.epoch, offset: gap.offset + 1 });
  } finally {
    c.disconnect();
    await server.stop();
  }
});
