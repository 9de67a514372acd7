import { test, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import { FakeWS, connected, record, setup, sock, teardown, tick } from "./fake.mjs";

beforeEach(setup);
afterEach(teardown);

test("connect asks for pings; a silence of the interval + 10 s is a dead connection", async () => {
  const c = await connected({}, { client: "c", user: "", ping: 5 });
  const ws = sock();
  const log = record(c, ["disconnected"]);
  assert.equal(ws.sent[0].connect.ping, true);
  for (let i = 0; i < 5; i++) {
    await tick(5000);
    ws.recv({ push: { ping: {} } });
  }
  await tick(14_900);
  assert.equal(ws.closed, null, "alive: 14.9 s of silence");
  await tick(200);
  assert.equal(ws.closed, 1000, "dead after 15 s");
  assert.equal(log[0][1].code, 1006);
  assert.equal(log[0][1].reconnect, true);
  await tick(500);
  assert.equal(FakeWS.all.length, 2, "and reconnected");
  c.disconnect();
});

test("without an interval in the reply, 25 s + 10 s; any message counts", async () => {
  const c = await connected({}, { client: "c", user: "", ping: undefined });
  const ws = sock();
  await tick(30_000);
  ws.push("x", { pub: { offset: 1, data: 1 } });
  await tick(34_900);
  assert.equal(ws.closed, null);
  await tick(200);
  assert.equal(ws.closed, 1000);
  c.disconnect();
});

test("a server that never answers connect is dead too", async () => {
  const c = new (await import("../../dist/index.mjs")).Wavecast("ws://h/ws", { WebSocket: FakeWS, transports: ["websocket"] });
  c.connect();
  await tick(0);
  sock().open();
  await tick(35_100);
  assert.equal(sock().closed, 1000);
  c.disconnect();
});
