import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { client, next, publish, startServer, watch, until } from "./harness.mjs";

let server;
before(async () => (server = await startServer()));
after(() => server.stop());

test("connect, subscribe, publish, history (newest first with reverse), presence, against the real server", async () => {
  const c = client(server);
  const connected = next(c, "connected");
  c.connect();
  const info = await connected;
  assert.equal(c.state, "connected");
  assert.equal(info.user, "");
  assert.equal(info.transport, "websocket");
  assert.ok(info.client);

  const sub = c.subscribe("room");
  const w = watch(sub);
  await next(sub, "subscribed");
  assert.equal(sub.state, "subscribed");
  const offsets = [];
  for (let i = 0; i < 5; i++) offsets.push((await c.publish("room", { i })).offset);
  await publish(server, "room", { i: 5 });
  await until(() => w.offsets.length == 6, "6 publications");
  assert.deepEqual(w.data, [0, 1, 2, 3, 4, 5].map((i) => ({ i })));
  assert.deepEqual(w.violations, []);
  assert.deepEqual(sub.position(), { epoch: w.subscribed[0].epoch, offset: offsets[0] + 5 });
  // A client's publication carries its sender.
  const own = await new Promise((resolve) => {
    sub.on("publication", resolve);
    c.publish("room", "mine");
  });
  assert.equal(own.info.client, info.client);

  const h = await c.history("room", { limit: 3, reverse: true });
  assert.deepEqual(
    h.publications.map((p) => p.offset),
    [offsets[0] + 6, offsets[0] + 5, offsets[0] + 4],
    "reverse: the newest first",
  );
  const fwd = await c.history("room", { since: { epoch: h.epoch, offset: offsets[0] + 3 } });
  assert.deepEqual(fwd.publications.map((p) => p.offset), [offsets[0] + 4, offsets[0] + 5, offsets[0] + 6]);

  const pr = await c.presence("room");
  assert.ok(pr.clients[info.client]);

  await assert.rejects(c.publish("bad name", 1), (e) => e.code == 109);
  c.disconnect();
  assert.equal(c.state, "disconnected");
});

test("a page reload: a new client subscribed with since recovers exactly what it missed", async () => {
  const a = client(server);
  a.connect();
  const sub = a.subscribe("reload");
  await next(sub, "subscribed");
  const got = next(sub, "publication");
  await publish(server, "reload", 1);
  await got;
  const stored = sub.position();
  a.disconnect();
  for (const n of [2, 3, 4]) await publish(server, "reload", n);

  const b = client(server);
  b.connect();
  const again = b.subscribe("reload", { since: stored });
  const w = watch(again);
  const s = await next(again, "subscribed");
  assert.equal(s.recovered, true);
  await until(() => w.offsets.length == 3, "the 3 missed");
  assert.deepEqual(w.data, [2, 3, 4]);
  b.disconnect();
});
