import { test, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { DISCONNECTED, QUEUE_FULL, TIMEOUT, Wavecast, WavecastError } from "../../dist/index.mjs";
import { FakeWS, connected, flush, setup, sock, teardown, tick } from "./fake.mjs";

beforeEach(setup);
afterEach(teardown);

const settled = (p) => {
  const s = { done: false };
  p.then((v) => Object.assign(s, { done: true, value: v }), (e) => Object.assign(s, { done: true, error: e }));
  return s;
};

test("publish, history and presence send their commands and resolve with the reply", async () => {
  const c = await connected();
  const p = c.publish("news", { text: "hi" });
  assert.deepEqual(sock().last("publish").publish, { channel: "news", data: { text: "hi" } });
  sock().reply("publish", { offset: 46 });
  assert.deepEqual(await p, { offset: 46 });
  const h = c.history("chat:room", { limit: 50, reverse: true });
  assert.deepEqual(sock().last("history").history, { channel: "chat:room", limit: 50, reverse: true });
  sock().reply("history", { epoch: "E", offset: 2, publications: [{ offset: 2, data: 1 }, { offset: 1, data: 0 }] });
  assert.equal((await h).publications[0].offset, 2);
  const pr = c.presence("news");
  sock().reply("presence", { clients: {} });
  assert.deepEqual(await pr, { clients: {} });
  const bad = c.publish("x", 1);
  sock().reply("publish", { error: { code: 104, message: "permission denied" } });
  await assert.rejects(bad, (e) => e instanceof WavecastError && e.code == 104 && e.message == "permission denied");
  c.disconnect();
});

test("a call made while disconnected waits at most `timeout`, then rejects", async () => {
  const c = new Wavecast("ws://h/ws", { WebSocket: FakeWS, transports: ["websocket"], timeout: 3000 });
  const s = settled(c.publish("news", 1));
  await tick(2999);
  assert.equal(s.done, false);
  await tick(1);
  assert.equal(s.error.code, TIMEOUT);
});

test("a call waiting for the connection is sent once connected, and its timeout counts from the call", async () => {
  const c = new Wavecast("ws://h/ws", { WebSocket: FakeWS, transports: ["websocket"] });
  c.connect();
  await flush();
  const s = settled(c.history("news"));
  await tick(3000);
  sock().open();
  sock().reply("connect", { client: "c", user: "" });
  assert.deepEqual(sock().last("history").history, { channel: "news" });
  await tick(1999);
  assert.equal(s.done, false);
  await tick(1);
  assert.equal(s.error.code, TIMEOUT, "5 s after the call, not after sending");
  c.disconnect();
});

test("nothing is buffered without bound: at most 100 calls wait, more are refused at once", async () => {
  const c = new Wavecast("ws://h/ws", { WebSocket: FakeWS, transports: ["websocket"] });
  const waiting = Array.from({ length: 100 }, (_, i) => settled(c.publish("news", i)));
  const over = settled(c.publish("news", "one too many"));
  await flush();
  assert.equal(over.error.code, QUEUE_FULL);
  assert.ok(waiting.every((s) => !s.done));
  // Expired calls leave room.
  await tick(5000);
  assert.ok(waiting.every((s) => s.error.code == TIMEOUT));
  const later = settled(c.publish("news", "room again"));
  await flush();
  assert.equal(later.done, false);
  await tick(5000);
});

test("a call in flight when the connection drops rejects with DISCONNECTED; disconnect() rejects the waiting ones", async () => {
  const c = await connected();
  const inFlight = settled(c.publish("news", 1));
  sock().drop(1006);
  await flush();
  assert.equal(inFlight.error.code, DISCONNECTED);
  const waiting = settled(c.presence("news"));
  c.disconnect();
  await flush();
  assert.equal(waiting.error.code, DISCONNECTED);
});

test("a reply after the timeout is dropped", async () => {
  const c = await connected();
  const s = settled(c.publish("news", 1));
  await tick(5000);
  assert.equal(s.error.code, TIMEOUT);
  sock().reply("publish", { offset: 1 });
  await flush();
  assert.equal(s.value, undefined);
  c.disconnect();
});
