// The SSE transport with a fake fetch: what it asks, and how the stream's
// events become the client's states and events.
import { test, beforeEach, afterEach, mock } from "node:test";
import assert from "node:assert/strict";
import { Wavecast } from "../../dist/index.mjs";
import { flush, record, setup, teardown, tick } from "./fake.mjs";

let reqs;
beforeEach(() => {
  setup();
  reqs = [];
  mock.method(globalThis, "fetch", (url, init = {}) => {
    const r = { url: new URL(url), init };
    reqs.push(r);
    return new Promise((resolve, reject) => {
      let ctl;
      r.stream = () =>
        resolve(new Response(new ReadableStream({ start: (c) => (ctl = c) }), { status: 200, headers: { "content-type": "text/event-stream" } }));
      r.send = (name, data, id = "x") => ctl.enqueue(new TextEncoder().encode(`id: ${id}\nevent: ${name}\ndata: ${JSON.stringify(data)}\n\n`));
      r.comment = () => ctl.enqueue(new TextEncoder().encode(":\n\n"));
      r.end = () => ctl.close();
      r.answer = (status, body) => resolve(new Response(JSON.stringify(body), { status }));
      r.answerText = (status, text) => resolve(new Response(text, { status }));
      init.signal?.addEventListener("abort", () => {
        r.aborted = true;
        reject(new DOMException("aborted", "AbortError"));
        try {
          ctl?.error(new DOMException("aborted", "AbortError"));
        } catch {}
      });
    });
  });
});
afterEach(teardown);

const sseClient = (options = {}) => new Wavecast("ws://h:8000/ws", { transports: ["sse"], ...options });
const streams = () => reqs.filter((r) => r.url.pathname == "/sse");
const last = () => streams().at(-1);
const EVENTS = ["subscribed", "publication", "gap", "unsubscribed", "error"];

test("the stream is asked with every channel, the positions as since, the token as a header; open is the connect reply", async () => {
  const c = sseClient({ token: "T" });
  const a = c.subscribe("a", { since: { epoch: "E.1", offset: 3 } });
  const b = c.subscribe("b");
  const la = record(a, EVENTS);
  const lb = record(b, EVENTS);
  const info = record(c, ["connected"]);
  c.connect();
  await tick(0);
  const r = last();
  assert.equal(r.url.origin, "http://h:8000");
  assert.deepEqual(r.url.searchParams.getAll("channel"), ["a", "b"]);
  assert.equal(r.url.searchParams.get("since"), "E%2E1.3,");
  assert.equal(r.init.headers.Authorization, "Bearer T");
  assert.equal(c.state, "connecting");
  r.stream();
  r.send("open", { client: "c1", user: "u", expires: false, channels: { a: { epoch: "E.1", offset: 3, recovered: true }, b: { epoch: "F", offset: 9 } } });
  r.send("pub", { channel: "a", offset: 4, data: "x" });
  r.send("pub", { channel: "b", offset: 10, data: "y", info: { client: "c2", user: "v" } });
  await flush();
  assert.equal(c.state, "connected");
  assert.deepEqual(info[0][1], { client: "c1", user: "u", transport: "sse", data: undefined });
  assert.deepEqual(la.map(([n, e]) => [n, e.offset, e.recovered]), [["subscribed", 3, true], ["publication", 4, undefined]]);
  assert.deepEqual(lb.map(([n, e]) => [n, e.offset]), [["subscribed", 9], ["publication", 10]]);
  assert.deepEqual(lb[1][1].info, { client: "c2", user: "v" });
  c.disconnect();
  assert.ok(r.aborted);
});

test("a channel not recovered gets its reply with the gap event; a later gap is a gap event", async () => {
  const c = sseClient();
  const a = c.subscribe("a", { since: { epoch: "E", offset: 3 } });
  const la = record(a, EVENTS);
  c.connect();
  await tick(0);
  last().stream();
  last().send("open", { client: "c1", user: "", channels: { a: { epoch: "E", offset: 3, recovered: false } } });
  last().send("gap", { channel: "a", epoch: "G", offset: 7, reason: "epoch changed" });
  last().send("pub", { channel: "a", offset: 8, data: 1 });
  last().send("gap", { channel: "a", epoch: "G", offset: 20, reason: "history expired" });
  last().send("pub", { channel: "a", offset: 21, data: 2 });
  await flush();
  assert.deepEqual(
    la.map(([n, e]) => [n, e.epoch, e.offset]),
    [["subscribed", "G", 7], ["gap", "G", 7], ["publication", undefined, 8], ["gap", "G", 20], ["publication", undefined, 21]],
  );
  assert.deepEqual(a.position(), { epoch: "G", offset: 21 });
  c.disconnect();
});

test("a new channel reopens the stream with the others' positions; unsubscribing one reopens it without", async () => {
  const c = sseClient();
  const a = c.subscribe("a");
  c.connect();
  await tick(0);
  last().stream();
  last().send("open", { client: "c1", user: "", channels: { a: { epoch: "E", offset: 0 } } });
  last().send("pub", { channel: "a", offset: 1, data: 1 });
  await flush();
  const first = last();
  const b = c.subscribe("b");
  await tick(0);
  assert.ok(first.aborted);
  assert.deepEqual(last().url.searchParams.getAll("channel"), ["a", "b"]);
  assert.equal(last().url.searchParams.get("since"), "E.1,");
  last().stream();
  last().send("open", { client: "c1", user: "", channels: { a: { epoch: "E", offset: 1, recovered: true }, b: { epoch: "B", offset: 5 } } });
  await flush();
  assert.equal(b.state, "subscribed");
  a.unsubscribe();
  await tick(0);
  assert.deepEqual(last().url.searchParams.getAll("channel"), ["b"]);
  assert.equal(last().url.searchParams.get("since"), "B.5");
  c.disconnect();
});

test("a refused channel ends that subscription; the stream goes on with the others", async () => {
  const c = sseClient();
  const a = c.subscribe("a");
  const x = c.subscribe("secret:x");
  const lx = record(x, EVENTS);
  c.connect();
  await tick(0);
  last().answer(403, { error: { code: 104, message: "permission denied", channel: "secret:x" } });
  await tick(0);
  await tick(0);
  assert.deepEqual(last().url.searchParams.getAll("channel"), ["a"]);
  last().stream();
  last().send("open", { client: "c1", user: "", channels: { a: { epoch: "E", offset: 0 } } });
  await flush();
  assert.equal(c.state, "connected");
  assert.equal(a.state, "subscribed");
  assert.equal(x.state, "unsubscribed");
  assert.deepEqual(lx.map(([n, e]) => [n, e.code]), [["error", 104], ["unsubscribed", 104]]);
  c.disconnect();
});

test("refusals and ends of the stream are close codes: 401 expired gets a new token, a close event says what to do", async () => {
  let n = 0;
  const c = sseClient({ token: "OLD", getToken: async () => "NEW" + ++n });
  const downs = record(c, ["disconnected"]);
  c.subscribe("a");
  c.connect();
  await tick(0);
  last().answer(401, { error: { code: 111, message: "token expired" } });
  await tick(0);
  assert.deepEqual(downs[0][1], { code: 4005, reason: "token expired", reconnect: true });
  await tick(1000);
  await tick(0);
  assert.equal(last().init.headers.Authorization, "Bearer NEW1");
  last().stream();
  last().send("open", { client: "c1", user: "", channels: { a: { epoch: "E", offset: 0 } } });
  last().comment();
  last().send("close", { code: 4501, reason: "disconnected, do not reconnect" }, undefined);
  last().end();
  await flush();
  assert.deepEqual(downs[1][1], { code: 4501, reason: "disconnected, do not reconnect", reconnect: false });
  assert.equal(c.state, "disconnected");
  const before = reqs.length;
  await tick(60000);
  assert.equal(reqs.length, before);
});

test("calls go over HTTP with the token; a stream that ends without a word is 1006 and reconnects", async () => {
  const c = sseClient({ token: "T", httpUrl: "http://api.example:9/base" });
  c.connect();
  await tick(0);
  await tick(0);
  assert.equal(c.state, "connected", "no channel: nothing to stream, connected at once");
  const p = c.publish("news", { text: "hi" });
  const r = reqs.at(-1);
  assert.equal(r.url.href, "http://api.example:9/base/sse/publish");
  assert.equal(r.init.method, "POST");
  assert.equal(r.init.headers.Authorization, "Bearer T");
  assert.deepEqual(JSON.parse(r.init.body), { channel: "news", data: { text: "hi" } });
  r.answer(200, { offset: 7 });
  assert.deepEqual(await p, { offset: 7 });
  const h = c.history("news", { limit: 2, reverse: true });
  reqs.at(-1).answer(403, { error: { code: 104, message: "permission denied" } });
  await assert.rejects(h, (e) => e.code == 104);
  // A proxy's error page, not JSON: rejected with its status.
  const pr = c.presence("news");
  reqs.at(-1).answerText(502, "<html>Bad Gateway</html>");
  await assert.rejects(pr, (e) => e.code == 100 && /HTTP 502/.test(e.message));
  const s = c.subscribe("a");
  await tick(0);
  last().stream();
  last().send("open", { client: "c1", user: "", channels: { a: { epoch: "E", offset: 0 } } });
  await flush();
  assert.equal(s.state, "subscribed");
  last().end();
  await flush();
  assert.equal(c.state, "connecting");
  assert.equal(s.state, "subscribing");
  c.disconnect();
});
