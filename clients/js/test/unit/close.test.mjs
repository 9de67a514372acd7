import { test, beforeEach, afterEach, mock } from "node:test";
import assert from "node:assert/strict";
import { shouldReconnect } from "../../dist/index.mjs";
import { FakeWS, connected, record, setup, sock, teardown, tick } from "./fake.mjs";

beforeEach(setup);
afterEach(teardown);

test("the close-code table of docs/PROTOCOL.md", () => {
  const yes = [1001, 1005, 1006, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4001, 4002, 4003, 4004, 4005, 4100, 4499, 4502];
  const no = [1000, 1002, 1003, 1007, 1008, 1009, 1010, 4500, 4501, 4503, 4504, 4600, 4999];
  for (const c of yes) assert.equal(shouldReconnect(c), true, `${c} reconnects`);
  for (const c of no) assert.equal(shouldReconnect(c), false, `${c} does not`);
});

for (const code of [4500, 4501, 4503, 4504, 1000, 1002, 1008, 1009]) {
  test(`after ${code} the client never reconnects`, async () => {
    const c = await connected();
    const log = record(c, ["disconnected", "state"]);
    sock().drop(code, "bye");
    assert.equal(c.state, "disconnected");
    assert.deepEqual(log, [
      ["state", { state: "disconnected", previous: "connected" }],
      ["disconnected", { code, reason: "bye", reconnect: false }],
    ]);
    await tick(10 * 60 * 1000);
    assert.equal(FakeWS.all.length, 1);
  });
}

for (const code of [1006, 1001, 1011, 4001, 4002, 4003, 4004, 4005, 4502]) {
  test(`after ${code} the client reconnects`, async () => {
    const c = await connected();
    const log = record(c, ["disconnected", "connecting"]);
    sock().drop(code, "r");
    assert.equal(c.state, "connecting");
    await tick(500);
    assert.equal(FakeWS.all.length, 2);
    assert.deepEqual(log, [
      ["disconnected", { code, reason: "r", reconnect: true }],
      ["connecting", { transport: "websocket", attempt: 1 }],
    ]);
    c.disconnect();
  });
}

test("after 4000 (server shutdown) the first delay is spread over 0 to 5 s", async () => {
  const firsts = [];
  for (const r of [0, 0.5, 0.999]) {
    mock.method(Math, "random", () => r);
    FakeWS.all = [];
    const c = await connected();
    sock().drop(4000, "server shutdown");
    let t = 0;
    while (FakeWS.all.length == 1 && t < 6000) await tick(10), (t += 10);
    firsts.push(t);
    c.disconnect();
    mock.restoreAll();
  }
  assert.ok(firsts[0] <= 10, `${firsts}`);
  assert.ok(firsts[1] >= 2500 && firsts[1] <= 2510, `${firsts}`);
  assert.ok(firsts[2] >= 4990 && firsts[2] <= 5000, `${firsts}`);
});

test("disconnect() closes with 1000 and does not reconnect", async () => {
  const c = await connected();
  const ws = sock();
  const log = record(c, ["disconnected"]);
  c.disconnect();
  assert.equal(ws.closed, 1000);
  assert.equal(c.state, "disconnected");
  assert.deepEqual(log, [["disconnected", { code: 1000, reason: "disconnect called", reconnect: false }]]);
  await tick(60000);
  assert.equal(FakeWS.all.length, 1);
  // connect() again works.
  c.connect();
  await tick(0);
  assert.equal(FakeWS.all.length, 2);
  c.disconnect();
});

test("the WebSocket is opened with the wavecast.json subprotocol on the given URL", async () => {
  const c = await connected();
  assert.equal(sock().url, "ws://127.0.0.1:1/ws");
  assert.equal(sock().protocol, "wavecast.json");
  assert.deepEqual(sock().sent[0], { id: 1, connect: { ping: true } });
  c.disconnect();
});

test("the online event and a page shown after a long hidden time reconnect at once", async () => {
  const targets = {};
  const doc = { hidden: false, addEventListener: (n, f) => (targets["doc:" + n] = f), removeEventListener: (n) => delete targets["doc:" + n] };
  globalThis.addEventListener = (n, f) => (targets[n] = f);
  globalThis.removeEventListener = (n) => delete targets[n];
  globalThis.document = doc;
  try {
    mock.method(Math, "random", () => 0.999);
    const c = await connected();
    // Attempts fail until the backoff is long (20 s), then it waits.
    const longWait = async () => {
      for (let i = 0; i < 7; i++) sock().drop(1006), await tick(20000);
      sock().drop(1006);
      await tick(100);
      return FakeWS.all.length;
    };
    let n = await longWait();
    await tick(5000);
    assert.equal(FakeWS.all.length, n, "waits its backoff");
    targets.online();
    await tick(0);
    assert.equal(FakeWS.all.length, n + 1, "online: at once");
    n = await longWait();
    doc.hidden = true;
    targets["doc:visibilitychange"]();
    await tick(5000);
    doc.hidden = false;
    targets["doc:visibilitychange"]();
    await tick(0);
    assert.equal(FakeWS.all.length, n, "hidden briefly: keeps waiting");
    doc.hidden = true;
    targets["doc:visibilitychange"]();
    // Hidden for long (no timer ran meanwhile, as in a throttled tab).
    mock.timers.setTime(Date.now() + 60000);
    doc.hidden = false;
    targets["doc:visibilitychange"]();
    await tick(0);
    assert.equal(FakeWS.all.length, n + 1, "shown after a long time: at once");
    c.disconnect();
    assert.deepEqual(Object.keys(targets), [], "listeners removed on disconnect");
  } finally {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
    delete globalThis.document;
  }
});
