// Drives xdpboot's status page in headless Chromium for tests/observability.rs.
//
//   node status.mjs URL USER_DATA_DIR
//
// Reads one command a line on stdin and answers each with one line on stdout, "ok …" or
// "error …", so the Rust test can boot simulated clients between steps:
//   open                    load URL and wait until the page follows the event stream
//   expect MAC STAGE        wait until the node's row shows STAGE ("none": not answered)
//   screenshot PATH         save a PNG of the page
//   quit                    close the browser and exit
// Every `expect` also checks that the page was never reloaded: rows must appear and advance
// by themselves. The browser is Debian's chromium; nothing is downloaded.

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const [url, userDataDir] = process.argv.slice(2);
const EXECUTABLE = process.env.CHROMIUM || "/usr/bin/chromium";
const STEP_TIMEOUT_MS = Number(process.env.STEP_TIMEOUT_MS || 20000);
const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

if (!url || !userDataDir) {
  console.error("usage: node status.mjs URL USER_DATA_DIR");
  process.exit(2);
}

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: EXECUTABLE,
  headless: true,
  args: FLAGS,
  viewport: { width: 1400, height: 520 },
  timeout: STEP_TIMEOUT_MS,
  deviceScaleFactor: 1,
});
const page = context.pages()[0] || (await context.newPage());
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(String(e)));
let loadId = null;

async function run(words) {
  switch (words[0]) {
    case "open": {
      await page.goto(url, { waitUntil: "load", timeout: STEP_TIMEOUT_MS });
      loadId = await page.evaluate(() => (window.__loadId = Math.random().toString(36)));
      await page.waitForSelector("#live.live", { timeout: STEP_TIMEOUT_MS });
      return "live";
    }
    case "expect": {
      const [, mac, stage] = words;
      const selector = `tr[data-mac="${mac}"][data-stage="${stage}"]`;
      await page.waitForSelector(selector, { timeout: STEP_TIMEOUT_MS });
      const same = await page.evaluate(() => window.__loadId);
      if (same !== loadId) throw new Error("the page was reloaded: rows must update in place");
      const live = await page.textContent("#live");
      return `${mac} ${stage} (${live})`;
    }
    case "screenshot": {
      await page.screenshot({ path: words[1], fullPage: true });
      return words[1];
    }
    case "quit":
      return "bye";
    default:
      throw new Error(`unknown command ${words[0]}`);
  }
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const words = line.trim().split(/\s+/);
  if (!words[0]) continue;
  try {
    const result = await run(words);
    if (pageErrors.length) throw new Error(`page error: ${pageErrors.join("; ")}`);
    console.log(`ok ${result}`);
  } catch (e) {
    console.log(`error ${String(e.message || e).split("\n")[0]}`);
  }
  if (words[0] === "quit") break;
}
await context.close();
process.exit(0);
