// The system browsers, driven by puppeteer-core: Debian's chromium over
// CDP and firefox-esr over WebDriver BiDi. Nothing is downloaded: the
// binaries are the installed ones (apt-get install chromium firefox-esr).
import fs from "node:fs";
import path from "node:path";
import puppeteer from "puppeteer-core";
import { ARTIFACTS, track, within } from "./harness.mjs";

export const ALL = [
  { name: "chromium", browser: "chrome", exe: process.env.CHROMIUM_BIN || "/usr/bin/chromium" },
  { name: "firefox", browser: "firefox", exe: process.env.FIREFOX_BIN || "/usr/bin/firefox-esr" },
];

/** The browsers to run: all, or those named in $BROWSERS (comma-separated: chromium,firefox). */
export const BROWSERS = process.env.BROWSERS ? ALL.filter((b) => process.env.BROWSERS.split(",").includes(b.name)) : ALL;

/** Starts a headless browser; it is killed (with its process group) if this process exits first. */
export async function launch(b) {
  if (!fs.existsSync(b.exe)) throw new Error(`${b.name}: no browser at ${b.exe} (apt-get install -y chromium firefox-esr)`);
  const browser = await puppeteer.launch({
    browser: b.browser,
    executablePath: b.exe,
    headless: true,
    // puppeteer's own signal handlers would race ours (harness.mjs kills by PID).
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
    protocolTimeout: 20000,
    args:
      b.browser === "chrome"
        ? [
            // Root in a container has no user namespaces for the sandbox.
            ...(process.getuid?.() === 0 ? ["--no-sandbox"] : []),
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--disable-backgrounding-occluded-windows",
          ]
        : [],
    // Firefox: no updates, no telemetry, no first-run pages; everything on loopback.
    extraPrefsFirefox: {
      "app.update.enabled": false,
      "browser.shell.checkDefaultBrowser": false,
      "datareporting.policy.dataSubmissionEnabled": false,
      "network.proxy.type": 0,
      "dom.min_background_timeout_value": 4,
    },
  });
  const pid = browser.process()?.pid;
  const untrack = pid ? track(b.name, pid, true) : () => {};
  browser._wavecastClose = async () => {
    await within(browser.close().catch(() => {}), 10000);
    if (pid) {
      try {
        process.kill(-pid, "SIGKILL");
      } catch {}
    }
    untrack();
  };
  return browser;
}

export async function close(browser) {
  await browser?._wavecastClose?.();
}

/** A new page whose console and errors go to `log` (shown when a test fails). */
export async function newPage(browser, log, name) {
  const page = await browser.newPage();
  await page.setViewport({ width: 900, height: 640 });
  page.on("console", (m) => log.push(`[${name} console.${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => log.push(`[${name} pageerror] ${e.message || e}`));
  return page;
}

/** Saves a screenshot to target/browser-tests/NAME.png; returns its path. */
export async function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file });
  return file;
}
