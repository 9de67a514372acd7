// Tokens against the real server: refreshed before they expire (no
// disconnect), a connection left with an expired token is closed with
// 4005, UnauthorizedError stops the client, subscription tokens refreshed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { UnauthorizedError } from "../../dist/index.mjs";
import { client, next, now, publish, sign, sleep, startServer, until, watch } from "./harness.mjs";

const SECRET = "a-test-secret-that-is-long-enough-for-hs256";
let server;
before(async () => {
  server = await startServer({
    args: ["--token-hmac-secret", SECRET, "--token-leeway", "0s", "--refresh-grace", "1s"],
    config: '[channels]\nallow_publish = "authenticated"\n\n[namespaces.vip]\nallow_subscribe = "token"\n',
  });
});
after(() => server.stop());

test("a connection token is refreshed at about 80% of its life: the connection outlives several tokens", { timeout: 30000 }, async () => {
  let minted = 0;
  const c = client(server, { getToken: async () => (minted++, sign({ sub: "alice", exp: now() + 4 }, SECRET)) });
  const events = [];
  for (const n of ["connected", "disconnected", "error"]) c.on(n, (e) => events.push([n, e]));
  c.connect();
  const sub = c.subscribe("news");
  const w = watch(sub);
  await next(sub, "subscribed");
  await sleep(11000);
  assert.equal(c.state, "connected");
  assert.deepEqual(events.map(([n]) => n), ["connected"], JSON.stringify(events));
  assert.equal(events[0][1].user, "alice");
  assert.ok(minted >= 3, `getToken called ${minted} times`);
  const off = await publish(server, "news", "still here");
  await until(() => sub.position().offset == off, "a publication after the tokens' expiry");
  assert.deepEqual(w.violations, []);
  c.disconnect();
});

test("a token that expires without refresh: closed 4005, and with no way to get another the client stops", { timeout: 30000 }, async () => {
  const c = client(server, { token: sign({ sub: "bob", exp: now() + 2 }, SECRET) });
  const downs = [];
  const errors = [];
  c.on("disconnected", (e) => downs.push(e));
  c.on("error", (e) => errors.push(e));
  c.connect();
  await next(c, "connected");
  await until(() => downs.length >= 2, "two disconnects", 15000);
  assert.deepEqual(downs[0], { code: 4005, reason: "token expired", reconnect: true });
  // Reconnected without a token: refused (112), then closed for good.
  assert.equal(downs[1].code, 4503);
  assert.equal(downs[1].reconnect, false);
  assert.ok(errors.some((e) => e.code == 112), errors.map(String).join());
  assert.equal(c.state, "disconnected");
});

test("an expired token gets a fresh one from getToken on the same connection attempt", { timeout: 30000 }, async () => {
  let minted = 0;
  const c = client(server, {
    token: sign({ sub: "carol", exp: now() - 60 }, SECRET),
    getToken: async () => (minted++, sign({ sub: "carol", exp: now() + 60 }, SECRET)),
  });
  const errors = [];
  c.on("error", (e) => errors.push(e));
  c.connect();
  const info = await next(c, "connected");
  assert.equal(info.user, "carol");
  assert.equal(minted, 1);
  assert.deepEqual(errors.map((e) => e.code), [111]);
  c.disconnect();
});

test("getToken throwing UnauthorizedError stops the client", { timeout: 30000 }, async () => {
  let calls = 0;
  const c = client(server, {
    getToken: async () => {
      if (++calls > 1) throw new UnauthorizedError("logged out");
      return sign({ sub: "dave", exp: now() + 3 }, SECRET);
    },
  });
  const downs = [];
  c.on("disconnected", (e) => downs.push(e));
  c.on("error", () => {});
  c.connect();
  await next(c, "connected");
  await until(() => c.state == "disconnected", "the stop", 10000);
  assert.deepEqual(downs, [{ code: 4503, reason: "unauthorized", reconnect: false }]);
  await sleep(3000);
  assert.equal(calls, 2, "no attempt after it");
});

test("a subscription token is refreshed with sub_refresh: the subscription outlives it", { timeout: 30000 }, async () => {
  let subTokens = 0;
  const c = client(server, { getToken: async () => sign({ sub: "erin", exp: now() + 600 }, SECRET) });
  c.connect();
  const sub = c.subscribe("vip:lounge", {
    getToken: async ({ channel }) => (subTokens++, sign({ sub: "erin", channel, exp: now() + 4 }, SECRET)),
  });
  const w = watch(sub);
  const ended = [];
  sub.on("unsubscribed", (e) => ended.push(e));
  await next(sub, "subscribed");
  await sleep(9000);
  assert.deepEqual(ended, []);
  assert.equal(sub.state, "subscribed");
  assert.equal(w.subscribed.length, 1, "never resubscribed: refreshed in place");
  assert.ok(subTokens >= 3, `${subTokens} subscription tokens`);
  const off = await publish(server, "vip:lounge", "hi");
  await until(() => sub.position().offset == off, "a publication after the first token's expiry");
  c.disconnect();
});
