import { test, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { connected, flush, record, setup, sock, teardown, tick } from "./fake.mjs";

beforeEach(setup);
afterEach(teardown);

const EVENTS = ["subscribed", "publication", "gap", "unsubscribed", "subscribing"];
/** What the application saw, shortly. */
const seen = (log) =>
  log.map(([n, e]) =>
    n == "publication" ? e.offset : n == "gap" ? `gap ${e.epoch}:${e.offset} ${e.reason}` : n == "subscribed" ? `subscribed ${e.epoch}:${e.offset}${e.recovered ? " recovered" : ""}` : n,
  );
const pub = (offset) => ({ pub: { offset, data: { n: offset } } });

test("publications arrive once each, in order; duplicates and pushes before the reply are dropped", async () => {
  const c = await connected();
  const sub = c.subscribe("news");
  const log = record(sub, EVENTS);
  await flush();
  const ws = sock();
  assert.deepEqual(ws.last("subscribe").subscribe, { channel: "news" });
  ws.push("news", pub(5)); // before the reply: not this subscription's
  ws.reply("subscribe", { epoch: "E", offset: 4 });
  for (const o of [5, 6, 6, 3, 7]) ws.push("news", pub(o));
  assert.deepEqual(seen(log), ["subscribed E:4", 5, 6, 7]);
  assert.deepEqual(sub.position(), { epoch: "E", offset: 7 });
  const p = log.find(([n]) => n == "publication")[1];
  assert.deepEqual(p, { channel: "news", offset: 5, data: { n: 5 }, info: undefined });
  c.disconnect();
});

test("the gap detector: a hole the server did not announce becomes a resubscribe with recover, and nothing is skipped", async () => {
  const c = await connected();
  const sub = c.subscribe("news");
  const log = record(sub, EVENTS);
  const errors = record(sub, ["error"]);
  await flush();
  const ws = sock();
  ws.reply("subscribe", { epoch: "E", offset: 0 });
  ws.push("news", pub(1));
  ws.push("news", pub(2));
  ws.push("news", pub(4)); // 3 is missing
  await flush();
  assert.equal(errors.length, 1, "the violation is reported");
  const sent = ws.sent.slice(-2);
  assert.deepEqual(sent[0].unsubscribe, { channel: "news" });
  assert.deepEqual(sent[1].subscribe, { channel: "news", recover: { epoch: "E", offset: 2 } });
  assert.equal(sub.state, "subscribing");
  ws.push("news", pub(5)); // while resubscribing: dropped, recovery brings it
  ws.reply("subscribe", { epoch: "E", offset: 5, recovered: true, publications: [3, 4, 5].map((o) => pub(o).pub) });
  ws.push("news", pub(6));
  assert.deepEqual(seen(log), ["subscribed E:0", 1, 2, "subscribing", "subscribed E:5 recovered", 3, 4, 5, 6]);
  c.disconnect();
});

test("a recovery the server could not do is a gap event, then the stream goes on", async () => {
  const c = await connected();
  const sub = c.subscribe("news", { since: { epoch: "E", offset: 10 } });
  const log = record(sub, EVENTS);
  await flush();
  assert.deepEqual(sock().last("subscribe").subscribe.recover, { epoch: "E", offset: 10 });
  sock().reply("subscribe", { epoch: "F", offset: 3, recovered: false, publications: [] });
  sock().push("news", pub(4));
  assert.deepEqual(seen(log), ["subscribed F:3", "gap F:3 not_recovered", 4]);
  assert.deepEqual(log[1][1], { channel: "news", epoch: "F", offset: 3, reason: "not_recovered" });
  c.disconnect();
});

for (const [what, reply] of [
  ["a hole in the recovered publications", { epoch: "E", offset: 13, recovered: true, publications: [11, 13].map((o) => pub(o).pub) }],
  ["another epoch", { epoch: "X", offset: 12, recovered: true, publications: [11, 12].map((o) => pub(o).pub) }],
  ["not up to the top", { epoch: "E", offset: 20, recovered: true, publications: [11, 12].map((o) => pub(o).pub) }],
  ["no recovered field at all", { epoch: "E", offset: 20 }],
]) {
  test(`a recovery that does not continue the position is not trusted: ${what}`, async () => {
    const c = await connected();
    const sub = c.subscribe("news", { since: { epoch: "E", offset: 10 } });
    const log = record(sub, EVENTS);
    await flush();
    sock().reply("subscribe", reply);
    const gaps = log.filter(([n]) => n == "gap");
    assert.equal(gaps.length, 1, JSON.stringify(log));
    assert.ok(!log.some(([n]) => n == "publication"), "nothing of a broken recovery is delivered");
    assert.deepEqual(sub.position(), { epoch: reply.epoch, offset: reply.offset });
    c.disconnect();
  });
}

test("every subscription is resumed after a reconnect with recover from its last position", async () => {
  const c = await connected();
  const a = c.subscribe("a");
  const b = c.subscribe("b");
  const la = record(a, EVENTS);
  await flush();
  sock().reply("subscribe", { epoch: "EB", offset: 7 });
  const first = sock().cmds("subscribe");
  sock().recv({ id: first[0].id, subscribe: { epoch: "EA", offset: 1 } });
  sock().push("a", pub(2));
  sock().drop(1006);
  assert.equal(a.state, "subscribing");
  assert.equal(b.state, "subscribing");
  await tick(500);
  sock().open();
  sock().reply("connect", { client: "c2", user: "" });
  await flush();
  const again = Object.fromEntries(sock().cmds("subscribe").map((m) => [m.subscribe.channel, m.subscribe.recover]));
  assert.deepEqual(again, { a: { epoch: "EA", offset: 2 }, b: { epoch: "EB", offset: 7 } });
  const ida = sock().cmds("subscribe").find((m) => m.subscribe.channel == "a").id;
  sock().recv({ id: ida, subscribe: { epoch: "EA", offset: 4, recovered: true, publications: [3, 4].map((o) => pub(o).pub) } });
  sock().push("a", pub(5));
  assert.deepEqual(seen(la), ["subscribed EA:1", 2, "subscribing", "subscribed EA:4 recovered", 3, 4, 5]);
  c.disconnect();
});

test("unsubscribe pushes: 2500 resubscribes with recover, 2000 and 2001 end it", async () => {
  const c = await connected();
  const sub = c.subscribe("news");
  const log = record(sub, EVENTS);
  await flush();
  sock().reply("subscribe", { epoch: "E", offset: 1 });
  sock().push("news", { unsubscribe: { code: 2500, reason: "insufficient state" } });
  await flush();
  assert.deepEqual(sock().last("subscribe").subscribe.recover, { epoch: "E", offset: 1 });
  sock().reply("subscribe", { epoch: "E", offset: 1, recovered: true, publications: [] });
  sock().push("news", { unsubscribe: { code: 2001, reason: "permission revoked" } });
  assert.equal(sub.state, "unsubscribed");
  assert.equal(c.getSubscription("news"), undefined);
  assert.deepEqual(log[log.length - 1], ["unsubscribed", { channel: "news", code: 2001, reason: "permission revoked" }]);
  sock().drop(1006);
  await tick(500);
  sock().open();
  sock().reply("connect", { client: "c", user: "" });
  await flush();
  assert.equal(sock().cmds("subscribe").length, 0, "an ended subscription is not restored");
  c.disconnect();
});

test("sub.unsubscribe() sends unsubscribe; a reply to the old subscribe changes nothing", async () => {
  const c = await connected();
  const sub = c.subscribe("news");
  const log = record(sub, EVENTS);
  await flush();
  sub.unsubscribe();
  assert.deepEqual(sock().last("unsubscribe").unsubscribe, { channel: "news" });
  sock().reply("subscribe", { epoch: "E", offset: 1 });
  sock().push("news", pub(2));
  assert.deepEqual(seen(log), ["unsubscribed"]);
  assert.equal(sub.state, "unsubscribed");
  // Subscribing again is a new subscription.
  const again = c.subscribe("news");
  assert.notEqual(again, sub);
  assert.throws(() => c.subscribe("news"), /already subscribed/);
  c.disconnect();
});

test("a refused subscribe ends it with the code; 108 is tried again", async () => {
  const c = await connected();
  const sub = c.subscribe("busy");
  const log = record(sub, [...EVENTS, "error"]);
  await flush();
  sock().reply("subscribe", { error: { code: 108, message: "not now" } });
  await tick(600);
  assert.equal(sock().cmds("subscribe").length, 2);
  sock().reply("subscribe", { error: { code: 104, message: "permission denied" } });
  assert.equal(sub.state, "unsubscribed");
  assert.deepEqual(log.map(([n, e]) => n + (e.code ? " " + e.code : "")), ["error 108", "error 104", "unsubscribed 104"]);
  c.disconnect();
});

test("server-side subscriptions of the connect reply: tracked, compared with the last position, not subscribed by the client", async () => {
  const c = await connected({}, { client: "c", user: "u", subs: { news: { epoch: "E", offset: 5 } } });
  assert.equal(sock().cmds("subscribe").length, 0);
  const sub = c.subscribe("news");
  assert.equal(sub.state, "subscribed");
  const log = record(sub, EVENTS);
  sock().push("news", pub(6));
  sock().drop(1006);
  await tick(500);
  sock().open();
  sock().reply("connect", { client: "c", user: "u", subs: { news: { epoch: "E", offset: 9 } } });
  await flush();
  assert.equal(sock().cmds("subscribe").length, 0);
  assert.deepEqual(seen(log), [6, "subscribing", "subscribed E:9", "gap E:9 missed"]);
  c.disconnect();
});

test("a subscription made in a connected listener is subscribed once", async () => {
  const { Wavecast } = await import("../../dist/index.mjs");
  const { FakeWS } = await import("./fake.mjs");
  const c = new Wavecast("ws://h/ws", { WebSocket: FakeWS, transports: ["websocket"] });
  let sub;
  c.on("connected", () => (sub = c.subscribe("late")));
  c.connect();
  await flush();
  sock().open();
  sock().reply("connect", { client: "c", user: "" });
  await flush();
  assert.equal(sock().cmds("subscribe").length, 1);
  sock().reply("subscribe", { epoch: "E", offset: 0 });
  assert.equal(sub.state, "subscribed");
  c.disconnect();
});
