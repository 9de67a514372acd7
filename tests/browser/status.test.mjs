// The status page (`wavecast serve --status`) in headless Chromium against
// a server under load: SSE subscribers on three channels (2, 8 and 40 of
// them), one of them reconnecting every half second (so closes happen),
// and API publications to each channel several times a second. The page
// is opened with HTTP Basic credentials (the API key); the test waits for
// the figures to appear, checks they change between two refreshes, and
// saves docs/images/status.png (rewritten when missing or with
// UPDATE_SCREENSHOTS=1; every run saves it to target/browser-tests/ too).
// Chromium only: puppeteer's page.authenticate is a CDP feature.
import assert from "node:assert/strict";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { ALL, close, launch, newPage, screenshot } from "./lib/browsers.mjs";
import { KEY, ROOT, Wavecast, api, eventually, request } from "./lib/harness.mjs";

const DOC_IMAGE = path.join(ROOT, "docs/images/status.png");
const chromium = ALL.find((b) => b.name === "chromium");
const wanted = !process.env.BROWSERS || process.env.BROWSERS.split(",").includes("chromium");

/** An SSE stream on `channel`; resolves once its first bytes arrived. */
function stream(port, channel) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path: `/sse?channel=${channel}`, agent: false }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`/sse?channel=${channel}: ${res.statusCode}`));
      res.once("data", () => resolve(req));
      res.on("data", () => {});
      res.on("error", () => {});
    });
    req.on("error", () => {});
  });
}

describe("chromium: the status page", { skip: !wanted }, () => {
  let server, browser, load;
  const streams = [], churn = [];
  const log = [];

  before(async () => {
    server = await Wavecast.start({ name: "status", args: ["--status"] });
    for (const [channel, n] of [["prices", 40], ["news", 6], ["alerts", 2]])
      for (let i = 0; i < n; i++) streams.push(await stream(server.port, channel));
    for (let i = 0; i < 2; i++) churn.push(await stream(server.port, "news"));
    let tick = 0;
    load = setInterval(async () => {
      tick++;
      try {
        await api(server.port, "publish", { channel: "prices", data: { tick, price: 100 + Math.sin(tick) } });
        if (tick % 2 === 0) await api(server.port, "publish", { channel: "news", data: { tick } });
        if (tick % 5 === 0) await api(server.port, "publish", { channel: "alerts", data: { tick } });
        if (tick % 4 === 0) {
          // Churn: one news reader leaves and comes back.
          churn.shift().destroy();
          churn.push(await stream(server.port, "news"));
        }
      } catch {}
    }, 120);
    browser = await launch(chromium);
  });

  after(async () => {
    clearInterval(load);
    for (const s of [...streams, ...churn]) s.destroy();
    await close(browser);
    await server?.stop();
    server?.cleanup();
  });

  test("the figures appear, change between refreshes, and the page is saved as docs/images/status.png", async (t) => {
    // Without credentials the page is not served.
    assert.equal((await request(server.port, { path: "/status" })).status, 401);

    const page = await newPage(browser, log, "status");
    await page.setViewport({ width: 1360, height: 1010 });
    await page.authenticate({ username: "ops", password: KEY });
    const r = await page.goto(`http://127.0.0.1:${server.port}/status`);
    assert.equal(r.status(), 200, log.join("\n"));

    const figures = () =>
      page.evaluate(() => {
        const q = (sel) => document.querySelector(sel)?.textContent.trim();
        return {
          refreshes: Number(document.body.dataset.refreshes),
          connections: q(".fig-connections .value"),
          memory: q(".fig-memory"),
          publications: q(".fig-publications"),
          deliveries: q(".fig-deliveries"),
          pubrate: q(".fig-pubrate"),
          bars: document.querySelectorAll(".fig-fanout svg rect").length,
          closed: document.querySelectorAll(".closed tbody tr").length,
          channels: [...document.querySelectorAll(".server .card")].find((c) => c.textContent.includes("Channels by subscribers"))?.textContent,
        };
      });
    // Two refreshes give rates; the fan-out chart has bars; closes listed.
    const first = await eventually(
      "the figures on the page",
      async () => {
        const f = await figures();
        return f.refreshes >= 2 && f.bars > 0 && f.closed > 0 && f.pubrate !== "–" ? f : null;
      },
      30000,
      200,
    );
    assert.match(first.connections, /^\d+ \/ [\d,]+$/, `connections against the limit: ${first.connections}`);
    assert.ok(Number(first.connections.split(" ")[0]) >= 50, `the load's streams: ${first.connections}`);
    assert.match(first.memory, /(B|KiB|MiB)$/, `memory per connection: ${first.memory}`);
    for (const channel of ["prices", "news", "alerts"]) assert.ok(first.channels.includes(channel), first.channels);

    // The next refresh shows the load moving.
    const next = await eventually(
      "a later refresh",
      async () => {
        const f = await figures();
        return f.refreshes > first.refreshes ? f : null;
      },
      15000,
      200,
    );
    assert.notEqual(next.publications, first.publications, "publications move");
    assert.notEqual(next.deliveries, first.deliveries, "deliveries move");
    assert.ok(next.closed >= first.closed, "closes accumulate");
    assert.deepEqual(log.filter((l) => l.includes("pageerror")), [], "no script errors");
    // A few more refreshes, so the screenshot's rate lines have a shape.
    await eventually("more refreshes", async () => (await figures()).refreshes >= next.refreshes + 3, 20000, 200);

    const shot = await screenshot(page, "status-chromium");
    if (!fs.existsSync(DOC_IMAGE) || process.env.UPDATE_SCREENSHOTS === "1") {
      fs.mkdirSync(path.dirname(DOC_IMAGE), { recursive: true });
      fs.copyFileSync(shot, DOC_IMAGE);
      t.diagnostic(`saved ${path.relative(ROOT, DOC_IMAGE)}`);
    }
    await page.close();
  });
});
