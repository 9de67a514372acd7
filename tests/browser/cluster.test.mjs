// Real browsers (Debian's chromium and firefox-esr) through deploy/nginx.conf
// in front of three `wavecast serve --redis` servers on one redis-server:
//
// A. the script-tag bundle's page is subscribed over WebSocket; the server
//    it is connected to is killed (SIGKILL) mid-stream; it reconnects
//    through nginx to another server and sees every offset once, in order;
// B. nginx refuses WebSocket upgrades: the page falls back to SSE and sees
//    every publication once, in order (B2: and again through a server kill;
//    B3: its calls, publish, history and presence, go over HTTP);
// C. a plain `new EventSource("/sse?channel=...")` page, no SDK: the server
//    behind it restarts; the browser reconnects with Last-Event-ID and the
//    page sees every offset once, in order;
// D. Redis restarted without persistence mid-stream (the streams and their
//    epoch are lost): the SDK page (D1) and the EventSource page (D2) get a
//    `gap` event, then every publication of the new epoch once, in order.
//
// A, B*, D1 need clients/js/dist/wavecast.min.js (build clients/js); B*, C,
// D2 need the server's `GET /sse` (B3 also its `POST /sse/{publish,
// history,presence}`, the calls of the client's SSE transport). Each is
// skipped, saying so, only when its prerequisite is missing.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { BROWSERS, close, launch, newPage, screenshot } from "./lib/browsers.mjs";
import { check, checkAcked, publishSteadily, ranges } from "./lib/delivery.mjs";
import { BUNDLE, Cluster, KEY, PAGES, eventually, request, shown, sseAvailable } from "./lib/harness.mjs";

const N = 300; // publications per SDK scenario
const EVERY = 15; // ms between them: 300 take 4.5 s
const haveBundle = fs.existsSync(BUNDLE);
const NO_BUNDLE = `no ${shown(BUNDLE)}: build clients/js (cd clients/js && npm ci && npm run build)`;
const NO_SSE = "the server does not serve GET /sse yet (docs/PROTOCOL.md \"Server-Sent Events\")";

const www = Object.fromEntries(fs.readdirSync(PAGES).map((f) => [f, path.join(PAGES, f)]));
if (haveBundle) www["wavecast.min.js"] = BUNDLE;

let cluster, front, refusing, haveSse;

before(async () => {
  cluster = await Cluster.start();
  front = await cluster.nginx({ www });
  haveSse = await sseAvailable(cluster.servers[0].port);
  refusing = await cluster.nginx({ www, refuseUpgrades: true });
});

after(async () => {
  await cluster?.stop();
});

/** A fresh channel for one test. */
const fresh = (what, b) => `test:${what}-${b.name}-${Date.now().toString(36)}`;

/** The page's record, and a failure message with everything useful. */
async function state(page, name = "wc") {
  return page.evaluate((n) => {
    const w = window[n];
    if (!w) return null;
    const { client, source, ...rest } = w;
    return JSON.parse(JSON.stringify(rest));
  }, name);
}

function explain(s, log) {
  const pubs = s?.log?.filter((e) => e.t === "pub") || [];
  const summary = s
    ? {
        ...s,
        log: `${pubs.length} publications (offsets ${ranges(pubs.map((p) => p.offset))}); gaps ${JSON.stringify(s.log.filter((e) => e.t === "gap"))}`,
      }
    : "no record on the page";
  return `\npage: ${JSON.stringify(summary, null, 1)}\n${log.slice(-30).join("\n")}\nprocesses:\n${cluster.tails()}`;
}

/** Waits until the page's log has a publication with offset `n` (or `ms` passed). */
async function waitLast(page, n, name = "wc", ms = 20000) {
  await eventually(
    `the page to see offset ${n}`,
    () => page.evaluate((n, name) => window[name].log.some((e) => e.t === "pub" && e.offset === n), n, name),
    ms,
    100,
  ).catch(() => {});
  // A little longer: anything delivered twice after the last would show.
  await new Promise((r) => setTimeout(r, 300));
}

/**
 * Publishes `{i, try}` for i in 1..n (the last with `final`) through
 * `server`, retrying while the backbone is unavailable (503), and restarts
 * Redis (SIGKILL, then the same port, empty) after publication `at`, once
 * every server reports not ready. Returns what checkAcked needs.
 */
async function publishAcrossRedisRestart(server, ch, n, at) {
  const acked = new Map();
  const unacked = [];
  let failures = 0,
    restart;
  for (let i = 1; i <= n; i++) {
    if (i === at + 1) {
      restart = (async () => {
        await cluster.redis.proc.kill();
        for (const s of cluster.servers)
          await eventually(`${s.proc.name} not ready without Redis`, async () => (await request(s.port, { path: "/readyz" })).status === 503);
        await cluster.redis.launch();
      })();
      // Awaited at the end; a failure meanwhile must not go unhandled.
      restart.catch(() => {});
    }
    const deadline = Date.now() + 20000;
    for (let attempt = 0; ; attempt++) {
      const data = { i, try: attempt, ...(i === n ? { final: true } : {}) };
      const r = await request(server.port, {
        method: "POST",
        path: "/api/publish",
        headers: { Authorization: `apikey ${KEY}` },
        body: JSON.stringify({ channel: ch, data }),
      });
      if (r.status === 200) {
        const v = JSON.parse(r.text);
        acked.set(`${v.epoch}/${v.offset}`, data);
        break;
      }
      assert.equal(r.status, 503, `publish failed otherwise: ${r.status} ${r.text}`);
      failures++;
      unacked.push(data);
      assert.ok(Date.now() < deadline, "the backbone stayed unavailable for 20 s");
      await new Promise((r) => setTimeout(r, 20));
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  await restart;
  return { acked, unacked, failures };
}

/** Brings `server` back on its port if a test stopped it (nginx's upstream list names the port). */
async function revive(server) {
  if (!server.proc.running) await server.launch(server.port);
}

for (const b of BROWSERS) {
  describe(`${b.name}: three servers behind nginx`, () => {
    let browser;
    const log = [];
    before(async () => {
      browser = await launch(b);
    });
    after(async () => {
      await close(browser);
    });

    test("A: a server killed mid-stream, the page goes on on another with every offset once, in order", async (t) => {
      if (!haveBundle) return t.skip(NO_BUNDLE);
      const ch = fresh("kill", b);
      const page = await newPage(browser, log, "A");
      await page.goto(`${front.origin}/test/sdk.html?channel=${encodeURIComponent(ch)}`);
      await eventually("the page subscribed", () => page.evaluate(() => window.wc?.subscribed.length > 0));
      const first = (await state(page)).connected[0];
      assert.equal(first.transport, "websocket", "through nginx the page uses a WebSocket");
      const victim = cluster.holder(first.client);
      assert.ok(victim, `no server holds ${first.client}`);
      const publisher = cluster.servers.find((s) => s !== victim);
      try {
        await publishSteadily(publisher, ch, N, EVERY, (i) => i === 100 && victim.kill());
        await waitLast(page, N);
        const s = await state(page);
        const r = check(s.log, N);
        assert.deepEqual(r.problems, [], explain(s, log));
        assert.equal(r.gaps.length, 0, "with history in Redis nothing was lost: no gap" + explain(s, log));
        assert.ok(s.connected.length >= 2, "the page reconnected" + explain(s, log));
        const now = s.connected[s.connected.length - 1];
        assert.ok(!victim.holds(now.client) && cluster.holder(now.client), `reconnected to another server: ${now.client}`);
        assert.ok(s.subscribed.slice(1).every((x) => x.recovered), "every resubscribe recovered" + explain(s, log));
        t.diagnostic(`${s.connected.length} connections, ${s.disconnected.map((d) => d.code).join(",")} closes, ${r.seen} publications`);
        await screenshot(page, `sdk-kill-${b.name}`);
      } finally {
        await page.close().catch(() => {});
        await revive(victim);
      }
    });

    test("B: nginx refuses WebSocket upgrades, the page works over SSE: every publication once, in order", async (t) => {
      if (!haveBundle) return t.skip(NO_BUNDLE);
      if (!haveSse) return t.skip(NO_SSE);
      const ch = fresh("sse", b);
      const page = await newPage(browser, log, "B");
      await page.goto(`${refusing.origin}/test/sdk.html?channel=${encodeURIComponent(ch)}`);
      await eventually("the page subscribed", () => page.evaluate(() => window.wc?.subscribed.length > 0));
      const s0 = await state(page);
      assert.equal(s0.connected[0].transport, "sse", "the upgrade was refused: SSE" + explain(s0, log));
      await publishSteadily(cluster.servers[0], ch, N, EVERY);
      await waitLast(page, N);
      const s = await state(page);
      const r = check(s.log, N);
      assert.deepEqual(r.problems, [], explain(s, log));
      assert.equal(r.gaps.length, 0, "no gap" + explain(s, log));
      assert.equal(s.connected.length, 1, "one stream throughout" + explain(s, log));
      await screenshot(page, `sdk-sse-${b.name}`);
      await page.close();
    });

    test("B2: over SSE (upgrades refused), a server killed mid-stream: every offset once, in order", async (t) => {
      if (!haveBundle) return t.skip(NO_BUNDLE);
      if (!haveSse) return t.skip(NO_SSE);
      const ch = fresh("sse-kill", b);
      const page = await newPage(browser, log, "B2");
      await page.goto(`${refusing.origin}/test/sdk.html?channel=${encodeURIComponent(ch)}`);
      await eventually("the page subscribed", () => page.evaluate(() => window.wc?.subscribed.length > 0));
      const first = (await state(page)).connected[0];
      assert.equal(first.transport, "sse");
      const victim = cluster.holder(first.client);
      assert.ok(victim, `no server holds ${first.client}`);
      const publisher = cluster.servers.find((s) => s !== victim);
      try {
        await publishSteadily(publisher, ch, N, EVERY, (i) => i === 100 && victim.kill());
        await waitLast(page, N);
        const s = await state(page);
        const r = check(s.log, N);
        assert.deepEqual(r.problems, [], explain(s, log));
        assert.equal(r.gaps.length, 0, "no gap" + explain(s, log));
        assert.ok(s.connected.length >= 2, "the page reconnected" + explain(s, log));
        assert.ok(s.connected.every((c) => c.transport === "sse"), "over SSE throughout");
        t.diagnostic(`${s.connected.length} streams, ${r.seen} publications`);
      } finally {
        await page.close().catch(() => {});
        await revive(victim);
      }
    });

    test("B3: over SSE (upgrades refused), publish, history and presence go over HTTP", async (t) => {
      if (!haveBundle) return t.skip(NO_BUNDLE);
      if (!haveSse) return t.skip(NO_SSE);
      const ch = fresh("sse-calls", b);
      const page = await newPage(browser, log, "B3");
      const posts = [];
      page.on("response", (r) => r.request().method() === "POST" && posts.push(`${r.status()} ${r.url()}`));
      await page.goto(`${refusing.origin}/test/sdk.html?channel=${encodeURIComponent(ch)}`);
      await eventually("the page subscribed", () => page.evaluate(() => window.wc?.subscribed.length > 0));
      assert.equal((await state(page)).connected[0].transport, "sse");
      await publishSteadily(cluster.servers[0], ch, 5, 0);
      await waitLast(page, 5);
      const call = (name, ...args) =>
        page.evaluate(
          async (name, args) => {
            try {
              return { ok: await window.wc.client[name](...args) };
            } catch (e) {
              return { error: `${e.code} ${e.message}` };
            }
          },
          name,
          args,
        );
      const h = await call("history", ch, { limit: 3, reverse: true });
      assert.ok(h.ok, `history over HTTP: ${h.error} (requests: ${posts.join(", ")})`);
      assert.deepEqual(h.ok.publications.map((p) => p.offset), [5, 4, 3], "the newest first");
      const pr = await call("presence", ch);
      assert.ok(pr.ok, `presence over HTTP: ${pr.error}`);
      assert.ok(Object.keys(pr.ok.clients).length >= 1, `the page's stream is in presence: ${JSON.stringify(pr.ok)}`);
      const p = await call("publish", ch, { i: 6 });
      assert.ok(p.ok, `publish over HTTP: ${p.error}`);
      assert.equal(p.ok.offset, 6);
      await waitLast(page, 6);
      const s = await state(page);
      assert.deepEqual(check(s.log, 6).problems, [], explain(s, log));
      await page.close();
    });

    test("C: a plain EventSource page, the server behind it restarts: Last-Event-ID, every offset once, in order", async (t) => {
      if (!haveSse) return t.skip(NO_SSE);
      const n = 120;
      const ch = fresh("es", b);
      const page = await newPage(browser, log, "C");
      await page.goto(`${front.origin}/test/eventsource.html?channel=${encodeURIComponent(ch)}`);
      await eventually("the stream opened", () => page.evaluate(() => window.es?.opens.length > 0));
      const first = (await state(page, "es")).opens[0];
      assert.equal(first.channels[ch].offset, 0);
      const victim = cluster.holder(first.client);
      assert.ok(victim, `no server holds ${first.client}`);
      const publisher = cluster.servers.find((s) => s !== victim);
      try {
        // Restarted gracefully (SIGTERM, then the same port again): the
        // stream gets `close` 4000 and the browser comes back after `retry`.
        await publishSteadily(publisher, ch, n, 25, (i) => i === 40 && victim.restart("SIGTERM"));
        await waitLast(page, n, "es");
        const s = await state(page, "es");
        const r = check(s.log, n);
        assert.deepEqual(r.problems, [], explain(s, log));
        assert.equal(r.gaps.length, 0, "no gap" + explain(s, log));
        assert.ok(s.opens.length >= 2, "the browser reconnected by itself" + explain(s, log));
        const again = s.opens[1];
        assert.equal(again.channels[ch].recovered, true, "resumed from Last-Event-ID (the URL has no since)" + explain(s, log));
        // It resumed exactly after the last event the browser had: that one's id went back as Last-Event-ID.
        const reopened = s.log.findIndex((e, k) => e.t === "sub" && k > 0);
        const before = s.log.slice(0, reopened).filter((e) => e.t === "pub").pop();
        assert.ok(before, "publications before the restart" + explain(s, log));
        assert.equal(again.channels[ch].offset, before.offset, "resumed from the last event seen" + explain(s, log));
        t.diagnostic(`${s.opens.length} streams; resumed at ${again.channels[ch].offset} on ${again.client}; closes ${JSON.stringify(s.closes)}`);
        await screenshot(page, `eventsource-${b.name}`);
      } finally {
        await page.close().catch(() => {});
        await revive(victim);
      }
    });
    test("D1: Redis restarted without persistence mid-stream: the SDK page gets a gap event, then the new epoch once, in order", async (t) => {
      if (!haveBundle) return t.skip(NO_BUNDLE);
      const ch = fresh("redis", b);
      const page = await newPage(browser, log, "D1");
      await page.goto(`${front.origin}/test/sdk.html?channel=${encodeURIComponent(ch)}`);
      await eventually("the page subscribed", () => page.evaluate(() => window.wc?.subscribed.length > 0));
      const { acked, unacked, failures } = await publishAcrossRedisRestart(cluster.servers[0], ch, 60, 20);
      await eventually("the final publication on the page", () => page.evaluate(() => window.wc.log.some((e) => e.data?.final)), 30000, 100);
      await new Promise((r) => setTimeout(r, 300));
      const s = await state(page);
      const r = checkAcked(s.log, acked, unacked);
      assert.deepEqual(r.problems, [], explain(s, log));
      assert.ok(failures > 0, "publishing failed while Redis was down");
      assert.ok(r.epochs.size >= 2 && r.gaps.length >= 1, "the lost epoch was told with a gap event" + explain(s, log));
      t.diagnostic(`${r.gaps.length} gap event(s): ${JSON.stringify(r.gaps.map((g) => g.reason))}; ${failures} publish attempts refused while Redis was down`);
      await page.close();
    });

    test("D2: Redis restarted without persistence mid-stream: the EventSource page gets a gap event, then the new epoch once, in order", async (t) => {
      if (!haveSse) return t.skip(NO_SSE);
      const ch = fresh("redis-es", b);
      const page = await newPage(browser, log, "D2");
      await page.goto(`${front.origin}/test/eventsource.html?channel=${encodeURIComponent(ch)}`);
      await eventually("the stream opened", () => page.evaluate(() => window.es?.opens.length > 0));
      const { acked, unacked, failures } = await publishAcrossRedisRestart(cluster.servers[0], ch, 60, 20);
      await eventually("the final publication on the page", () => page.evaluate(() => window.es.log.some((e) => e.data?.final)), 30000, 100);
      await new Promise((r) => setTimeout(r, 300));
      const s = await state(page, "es");
      const r = checkAcked(s.log, acked, unacked);
      assert.deepEqual(r.problems, [], explain(s, log));
      assert.ok(failures > 0, "publishing failed while Redis was down");
      assert.ok(r.epochs.size >= 2 && r.gaps.length >= 1, "the lost epoch was told with a gap event" + explain(s, log));
      t.diagnostic(`${r.gaps.length} gap event(s): ${JSON.stringify(r.gaps.map((g) => g.reason))}; ${s.opens.length} stream(s)`);
      await page.close();
    });
  });
}
