// examples/chat in real browsers, started the way its README says
// (`node examples/chat/run.mjs`): two tabs join, each sends a message,
// both see both, in the same order; a tab opened later shows them from
// history (`reverse: true`). The chromium tab's screenshot is
// docs/images/chat.png (rewritten when missing or with UPDATE_SCREENSHOTS=1;
// every run saves it to target/browser-tests/ too).
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { BROWSERS, close, launch, newPage, screenshot } from "./lib/browsers.mjs";
import { BUNDLE, Proc, ROOT, eventually, shown, wavecastBinary } from "./lib/harness.mjs";

const haveBundle = fs.existsSync(BUNDLE);
const DOC_IMAGE = path.join(ROOT, "docs/images/chat.png");
let chat, url;

before(async () => {
  if (!haveBundle) return;
  // Its own process group: stopping it (or this process dying) takes the
  // wavecast server and the backend it started along.
  chat = new Proc("chat", process.execPath, [path.join(ROOT, "examples/chat/run.mjs"), "--port", "0"], {
    group: true,
    env: { WAVECAST_BIN: wavecastBinary(), WAVECAST_BUNDLE: BUNDLE },
  });
  url = (await chat.waitLine("chat ready: ")).slice("chat ready: ".length).trim();
});

after(async () => {
  await chat?.stop("SIGTERM");
});

/** Joins the chat as `name` in a new tab. */
async function join(browser, log, name) {
  const page = await newPage(browser, log, name);
  await page.setViewport({ width: 760, height: 520 });
  await page.goto(url);
  await eventually(`${name}: the page loaded`, () => page.evaluate(() => !!window.chat));
  await page.type("#name", name);
  await page.click("#join button");
  await eventually(`${name}: subscribed`, () => page.evaluate(() => window.chat.state().subscription === "subscribed"));
  return page;
}

const texts = (page) => page.evaluate(() => window.chat.state().messages.map((m) => `${m.user}: ${m.text}`));
const listed = (page) => page.$$eval("#messages li", (lis) => lis.map((li) => li.textContent));

for (const b of BROWSERS) {
  describe(`${b.name}: examples/chat`, () => {
    let browser;
    const log = [];
    before(async () => {
      if (haveBundle) browser = await launch(b);
    });
    after(async () => {
      await close(browser);
    });

    test("chat: two tabs send, both see both messages in the same order; a later tab sees them from history", async (t) => {
      if (!haveBundle) return t.skip(`no ${shown(BUNDLE)}: build clients/js (cd clients/js && npm ci && npm run build)`);
      const alice = await join(browser, log, "Alice");
      const bob = await join(browser, log, "Bob");
      const lines = [
        [alice, "Alice", `Hi Bob! Trying wavecast in ${b.name}.`],
        [bob, "Bob", "Hi Alice, I see it here too."],
        [alice, "Alice", "Each message once, in order, in every tab."],
      ];
      const want = [];
      for (const [page, who, text] of lines) {
        // Typing and clicking need a rendered page: chromium renders only the front tab.
        await page.bringToFront();
        await page.type("#text", text);
        await page.click("#send button");
        want.push(`${who}: ${text}`);
        // Wait for it on both tabs before the next one: the order is then known.
        for (const p of [alice, bob])
          await eventually(`"${text}" on both tabs`, async () => (await texts(p)).includes(`${who}: ${text}`), 10000);
      }
      const [a, bb] = [await texts(alice), await texts(bob)];
      assert.deepEqual(a, bb, "both tabs show the same messages in the same order");
      assert.deepEqual(a.slice(-3), want, "the three messages, last, in the order sent");
      const offsets = await alice.evaluate(() => window.chat.state().messages.map((m) => m.offset));
      assert.ok(offsets.every((o, i) => i === 0 || o === offsets[i - 1] + 1), `offsets once each, no hole: ${offsets}`);
      const dom = await listed(alice);
      assert.equal(dom.length, a.length, "one list item per message");
      assert.ok(dom.at(-1).startsWith("Alice" + lines[2][2]), `the list shows it: ${dom.at(-1)}`);

      // A tab opened now shows the room's last messages from history.
      const carol = await join(browser, log, "Carol");
      await eventually("history on load", async () => (await texts(carol)).slice(-3).join("\n") === want.join("\n"), 10000);
      assert.deepEqual(await texts(carol), a, "history shows what the others saw, oldest first");
      await carol.close();

      await alice.bringToFront();
      const shot = await screenshot(alice, `chat-${b.name}`);
      if (b.name === "chromium" && (!fs.existsSync(DOC_IMAGE) || process.env.UPDATE_SCREENSHOTS === "1")) {
        fs.mkdirSync(path.dirname(DOC_IMAGE), { recursive: true });
        fs.copyFileSync(shot, DOC_IMAGE);
        t.diagnostic(`saved ${path.relative(ROOT, DOC_IMAGE)}`);
      }
      await alice.close();
      await bob.close();
    });
  });
}
