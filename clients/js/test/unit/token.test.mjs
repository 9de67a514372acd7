import { test, beforeEach, afterEach, mock } from "node:test";
import assert from "node:assert/strict";
import { UnauthorizedError, Wavecast } from "../../dist/index.mjs";
import { FakeWS, connected, flush, jwt, record, setup, sock, teardown, tick } from "./fake.mjs";

beforeEach(setup);
afterEach(teardown);

/** A getToken whose calls the test resolves (or rejects) by hand. */
function manualTokens() {
  const calls = [];
  const getToken = () => new Promise((resolve, reject) => calls.push({ resolve, reject }));
  return { calls, getToken };
}

test("getToken is called when no token is held, and the token goes in connect", async () => {
  const t = manualTokens();
  const c = new Wavecast("ws://h/ws", { WebSocket: FakeWS, transports: ["websocket"], getToken: t.getToken });
  c.connect();
  await flush();
  assert.equal(t.calls.length, 1);
  assert.equal(FakeWS.all.length, 0, "no socket before the token");
  t.calls[0].resolve("T1");
  await flush();
  sock().open();
  assert.deepEqual(sock().last("connect").connect, { token: "T1", ping: true });
  c.disconnect();
});

test("refreshed at about 80% of the ttl, with jitter, then at 80% of the new one", async () => {
  const t = manualTokens();
  const c = await connected({ token: "T0", getToken: t.getToken }, { client: "c", user: "u", expires: true, ttl: 100 });
  await tick(74_900);
  assert.equal(t.calls.length, 0, "not before 75%");
  await tick(10_200);
  assert.equal(t.calls.length, 1, "by 85%");
  t.calls[0].resolve("T1");
  await flush();
  assert.deepEqual(sock().last("refresh").refresh, { token: "T1" });
  sock().reply("refresh", { expires: true, ttl: 10 });
  await tick(8_600);
  assert.equal(t.calls.length, 2);
  c.disconnect();
});

test("the jitter spreads refreshes of many clients", async () => {
  const delays = new Set();
  for (let i = 0; i < 20; i++) {
    FakeWS.all = [];
    const t = manualTokens();
    const c = await connected({ token: "T0", getToken: t.getToken }, { client: "c", user: "u", expires: true, ttl: 1000 });
    let at = 0;
    while (!t.calls.length) await tick(1000), (at += 1000);
    delays.add(at);
    c.disconnect();
  }
  assert.ok(delays.size >= 10, `refreshes at ${[...delays]}`);
  for (const d of delays) assert.ok(d >= 750_000 && d <= 851_000, `${d}`);
});

test("one refresh in flight: a second timer of the same connection does not start another", async () => {
  const t = manualTokens();
  const c = await connected({ token: "T0", getToken: t.getToken }, { client: "c", user: "u", expires: true, ttl: 10 });
  await tick(9000);
  assert.equal(t.calls.length, 1);
  // The application is slow; a refresh is asked again (e.g. by a reply
  // that scheduled one): still one in flight.
  c._refresh(c._gen);
  await flush();
  assert.equal(t.calls.length, 1);
  c.disconnect();
});

test("the token-refresh race: a refresh resolving after a reconnect starts no second chain", async () => {
  const t = manualTokens();
  const c = await connected({ token: "T0", getToken: t.getToken }, { client: "c", user: "u", expires: true, ttl: 10 });
  const first = sock();
  await tick(9000);
  assert.equal(t.calls.length, 1, "the first connection's refresh is in flight");
  // The connection drops while the application is still getting a token.
  first.drop(1006);
  await tick(600);
  const second = sock();
  assert.notEqual(first, second);
  second.open();
  second.reply("connect", { client: "c2", user: "u", expires: true, ttl: 10 });
  await flush();
  // Now the old refresh resolves: nothing is sent, nothing scheduled.
  t.calls[0].resolve("LATE");
  await flush();
  assert.equal(second.cmds("refresh").length, 0, "the late token is not sent on the new connection");
  assert.equal(first.cmds("refresh").length, 0);
  // The new connection's own chain: exactly one getToken per period.
  await tick(8_600);
  assert.equal(t.calls.length, 2);
  t.calls[1].resolve("T2");
  await flush();
  assert.equal(second.cmds("refresh").length, 1);
  second.reply("refresh", { expires: true, ttl: 10 });
  await tick(8_600);
  assert.equal(t.calls.length, 3, "one chain: one call per period, not two");
  await tick(3_000);
  assert.equal(t.calls.length, 3);
  c.disconnect();
});

test("a getToken throwing UnauthorizedError stops reconnecting and says why", async () => {
  const c = new Wavecast("ws://h/ws", {
    WebSocket: FakeWS,
    transports: ["websocket"],
    getToken: async () => {
      throw new UnauthorizedError("logged out");
    },
  });
  const log = record(c, ["error", "disconnected"]);
  c.connect();
  await flush();
  assert.equal(c.state, "disconnected");
  assert.equal(FakeWS.all.length, 0);
  assert.ok(log[0][1] instanceof UnauthorizedError);
  assert.deepEqual(log[1], ["disconnected", { code: 4503, reason: "unauthorized", reconnect: false }]);
  await tick(60_000);
  assert.equal(FakeWS.all.length, 0);
});

test("UnauthorizedError during a refresh stops the client too", async () => {
  const t = manualTokens();
  const c = await connected({ token: "T0", getToken: t.getToken }, { client: "c", user: "u", expires: true, ttl: 10 });
  const ws = sock();
  await tick(9000);
  t.calls[0].reject(new UnauthorizedError());
  await flush();
  assert.equal(c.state, "disconnected");
  assert.equal(ws.closed, 1000);
  await tick(60_000);
  assert.equal(FakeWS.all.length, 1);
});

test("a getToken failing otherwise is retried with backoff", async () => {
  mock.method(Math, "random", () => 0.5);
  let n = 0;
  const c = new Wavecast("ws://h/ws", {
    WebSocket: FakeWS,
    transports: ["websocket"],
    getToken: async () => {
      if (++n < 3) throw new Error("backend down");
      return "T";
    },
  });
  const errors = record(c, ["error"]);
  c.connect();
  await flush();
  assert.equal(n, 1);
  assert.equal(c.state, "connecting");
  await tick(400);
  assert.equal(n, 2);
  await tick(700);
  assert.equal(n, 3);
  assert.equal(FakeWS.all.length, 1);
  assert.equal(errors.length, 2);
  c.disconnect();
});

test("an expired token (111 to connect) gets a new one; close 4005 too", async () => {
  const t = manualTokens();
  const c = new Wavecast("ws://h/ws", { WebSocket: FakeWS, transports: ["websocket"], token: "OLD", getToken: t.getToken });
  c.connect();
  await flush();
  sock().open();
  sock().reply("connect", { error: { code: 111, message: "token expired" } });
  await tick(600);
  assert.equal(t.calls.length, 1);
  t.calls[0].resolve("NEW");
  await flush();
  assert.equal(sock().last("connect").connect.token, "NEW");
  assert.equal(FakeWS.all.length, 1, "on the same socket");
  sock().reply("connect", { client: "c", user: "u", expires: true, ttl: 3600 });
  await flush();
  assert.equal(c.state, "connected");
  sock().drop(4005, "token expired");
  await tick(1000); // the second attempt since the connection did not stay up: up to 1 s
  assert.equal(t.calls.length, 2, "4005: the held token is not used again");
  c.disconnect();
});

test("a subscription token is refreshed before it expires (sub_refresh), and 2501 gets a new one and resubscribes with recover", async () => {
  const now = () => Math.floor(Date.now() / 1000);
  const asked = [];
  const c = await connected();
  const sub = c.subscribe("vip:a", {
    getToken: async ({ channel }) => (asked.push(channel), jwt({ sub: "u", channel, exp: now() + 100 })),
  });
  await flush();
  assert.deepEqual(asked, ["vip:a"]);
  const s1 = sock().last("subscribe");
  assert.ok(s1.subscribe.token);
  sock().reply("subscribe", { epoch: "E", offset: 3 });
  await tick(86_000);
  assert.equal(asked.length, 2, "refreshed by 85% of the token's life");
  assert.equal(sock().last("sub_refresh").sub_refresh.channel, "vip:a");
  sock().reply("sub_refresh", { expires: true, ttl: 100 });
  sock().push("vip:a", { pub: { offset: 4, data: "x" } });
  // The server says the token expired after all.
  sock().push("vip:a", { unsubscribe: { code: 2501, reason: "token expired" } });
  await flush();
  assert.equal(asked.length, 3);
  const s2 = sock().last("subscribe");
  assert.notEqual(s2.id, s1.id);
  assert.deepEqual(s2.subscribe.recover, { epoch: "E", offset: 4 });
  assert.equal(sub.state, "subscribing");
  c.disconnect();
});
