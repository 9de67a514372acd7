// The SSE transport against the real server's GET /sse, behind a proxy
// that refuses WebSocket upgrades: the client falls back by itself,
// reopens the stream with its positions when its channel set changes, and
// resumes exactly after a restart (Redis) or says gap (in memory); its
// calls (publish, history, presence) go over HTTP as the token's user.
import { test } from "node:test";
import assert from "node:assert/strict";
import WS from "ws";
import { Wavecast } from "../../dist/index.mjs";
import { next, now, proxy, publish, sign, sleep, startRedis, startServer, until, watch } from "./harness.mjs";

const behind = (tcp, options = {}) => new Wavecast(`ws://127.0.0.1:${tcp.port}/ws`, { WebSocket: WS, ...options });

test("WebSocket upgrades refused: the client goes over SSE; channels added and removed reopen the stream with nothing lost", { timeout: 60000 }, async () => {
  const server = await startServer();
  const tcp = await proxy(server.port, { refuseUpgrades: true });
  const c = behind(tcp);
  const seen = [];
  c.on("connecting", (e) => seen.push(e.transport));
  const a = c.subscribe("a");
  const wa = watch(a);
  c.connect();
  const info = await next(c, "connected");
  try {
    assert.equal(info.transport, "sse");
    assert.deepEqual(seen, ["websocket", "sse"]);
    assert.ok(info.client, "the stream's client id");
    await until(() => a.state == "subscribed", "a subscribed");
    for (let i = 0; i < 5; i++) await publish(server, "a", { i });
    await until(() => wa.offsets.length == 5, "5 on a");
    // A second channel: the stream is reopened with a's position.
    const b = c.subscribe("b");
    const wb = watch(b);
    const pubs = (async () => {
      for (let i = 5; i < 25; i++) await publish(server, "a", { i }), await sleep(5);
    })();
    await next(b, "subscribed");
    await publish(server, "b", "hello b");
    await pubs;
    await until(() => wa.offsets.length == 25 && wb.offsets.length == 1, "all of a and b");
    assert.deepEqual(wa.data.map((d) => d.i), [...Array(25).keys()], "a: nothing lost or repeated across the reopen");
    // Removing one reopens it again.
    b.unsubscribe();
    assert.equal(b.state, "unsubscribed");
    for (let i = 25; i < 30; i++) await publish(server, "a", { i });
    await publish(server, "b", "not for us");
    await until(() => wa.offsets.length == 30, "the rest of a");
    assert.equal(wb.offsets.length, 1, "nothing for b after its unsubscribe");
    assert.deepEqual(wa.violations, []);
    assert.deepEqual(wa.gaps, []);
    assert.equal(wa.subscribed.length, 1, "reopening is invisible to a subscription");
  } finally {
    c.disconnect();
    await tcp.close();
    await server.stop();
  }
});

test("over SSE, a server restart with Redis resumes every channel exactly; in memory it says gap", { timeout: 90000 }, async () => {
  const redis = await startRedis();
  let server = await startServer({ args: ["--redis", redis.url] });
  const tcp = await proxy(server.port, { refuseUpgrades: true });
  const c = behind(tcp, { transports: ["sse"] });
  const sub = c.subscribe("feed");
  const w = watch(sub);
  c.connect();
  try {
    await until(() => sub.state == "subscribed", "subscribed");
    for (let i = 0; i < 5; i++) await publish(server, "feed", { i });
    await until(() => w.offsets.length == 5, "5 publications");
    await server.kill();
    server = await server.restart();
    for (let i = 5; i < 10; i++) await publish(server, "feed", { i });
    await until(() => w.offsets.length == 10, "the 5 published while it was away");
    assert.deepEqual(w.data.map((d) => d.i), [...Array(10).keys()]);
    assert.deepEqual(w.violations, []);
    assert.deepEqual(w.gaps, []);
  } finally {
    c.disconnect();
    await tcp.close();
    await server.stop();
    await redis.stop();
  }

  let mem = await startServer();
  const tcp2 = await proxy(mem.port, { refuseUpgrades: true });
  const c2 = behind(tcp2, { transports: ["sse"] });
  const sub2 = c2.subscribe("m");
  const w2 = watch(sub2);
  c2.connect();
  try {
    await until(() => sub2.state == "subscribed", "subscribed");
    await publish(mem, "m", 1);
    await until(() => w2.offsets.length == 1, "1 publication");
    await mem.kill();
    mem = await mem.restart();
    const gap = await next(sub2, "gap");
    assert.equal(gap.reason, "not_recovered");
    await publish(mem, "m", 2);
    await until(() => w2.offsets.length == 2, "the publication after the gap");
    assert.deepEqual(w2.violations, []);
  } finally {
    c2.disconnect();
    await tcp2.close();
    await mem.stop();
  }
});

test("over SSE, publish, history and presence go over HTTP as the token's user; a refused call rejects with the server's code", { timeout: 60000 }, async () => {
  const secret = "a-test-secret-that-is-long-enough-for-hs256";
  const server = await startServer({
    args: ["--token-hmac-secret", secret],
    config: '[channels]\nallow_publish = "authenticated"\n\n[namespaces.ro]\nallow_publish = "none"\n',
  });
  const tcp = await proxy(server.port, { refuseUpgrades: true });
  const c = behind(tcp, { token: sign({ sub: "ann", exp: now() + 600 }, secret) });
  const sub = c.subscribe("room");
  const w = watch(sub);
  const infos = [];
  sub.on("publication", (p) => infos.push(p.info));
  c.connect();
  try {
    assert.equal((await next(c, "connected")).transport, "sse");
    await until(() => sub.state == "subscribed", "subscribed");
    for (let i = 1; i <= 3; i++) assert.deepEqual(await c.publish("room", { i }), { offset: i });
    await until(() => w.offsets.length == 3, "its own publications, over the stream");
    assert.deepEqual(w.data.map((d) => d.i), [1, 2, 3]);
    assert.equal(infos[0].user, "ann", "the publication names the token's user");
    const h = await c.history("room", { limit: 2, reverse: true });
    assert.deepEqual(h.publications.map((p) => p.offset), [3, 2], "the newest first");
    const p = await c.presence("room");
    assert.deepEqual(Object.values(p.clients).map((x) => x.user), ["ann"], "the stream is in presence");
    await assert.rejects(c.publish("ro:x", 1), (e) => e.code == 104);
    await assert.rejects(c.history("bad:", {}), (e) => e.code == 109 || e.code == 103);
    assert.deepEqual(w.violations, []);
  } finally {
    c.disconnect();
    await tcp.close();
    await server.stop();
  }
});
