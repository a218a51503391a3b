// Drives xdpboot's status page in headless Chromium for tests/observability.rs.
//
//   node status.mjs URL USER_DATA_DIR
//
// Reads one command a line on stdin and answers each with one line on stdout, "ok …" or
// "error …", so the Rust test can boot simulated clients between steps:
//   open                    load URL and wait until the page follows the event stream
//   expect MAC STAGE        wait until the node's row shows STAGE ("none": not answered)
//   first-render            milliseconds from navigation to the page's first counts and rows
//   watch-start             start watching: heap after a garbage collection, long tasks from now
//   watch-stop              JSON: the longest task on the main thread since watch-start, the
//                           heap then and now (after a collection), updates received
//   settle VERSION          wait until the page shows counts and rows of table version VERSION
//   chips                   JSON: every count chip of the storm view, as shown
//   filter KIND VALUE       click the chip KIND=VALUE, page through the table; JSON: the MACs
//   text                    check the page's text has no "null", "undefined" or "NaN"
//   screenshot PATH         save a PNG of the whole page
//   screenshot-view PATH    save a PNG of a 1400×1000 window onto the top of the page
//   quit                    close the browser and exit
// Every `expect` also checks that the page was never reloaded: rows must appear and advance
// by themselves. Long tasks come from Chromium's PerformanceObserver ("longtask": any task
// that held the main thread for over 50 ms), the heap from the DevTools protocol
// (Runtime.getHeapUsage). The browser is Debian's chromium; nothing is downloaded.

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
// Registered before the page's own scripts run, so the first tasks count too.
await context.addInitScript(() => {
  window.__longTasks = [];
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) window.__longTasks.push([entry.startTime, entry.duration]);
  }).observe({ type: "longtask", buffered: true });
});
const page = context.pages()[0] || (await context.newPage());
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(String(e)));
let loadId = null;
const HEAP_SAMPLE_MS = 2000;
let watch = null;

async function heapUsed(collect) {
  const cdp = await context.newCDPSession(page);
  try {
    if (collect) await cdp.send("HeapProfiler.collectGarbage");
    const { usedSize } = await cdp.send("Runtime.getHeapUsage");
    return usedSize;
  } finally {
    await cdp.detach();
  }
}

// The table's rows as the page shows them: [mac, stage].
async function rows() {
  return page.$$eval("#nodes tr", (trs) => trs.map((tr) => [tr.dataset.mac, tr.dataset.stage]));
}

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
    case "first-render": {
      await page.waitForFunction(() => window.__xdpboot && window.__xdpboot.firstRenderMs >= 0, null,
        { timeout: STEP_TIMEOUT_MS });
      return String(await page.evaluate(() => Math.round(window.__xdpboot.firstRenderMs)));
    }
    case "watch-start": {
      const startedAt = await page.evaluate(() => performance.now());
      const heapStart = await heapUsed(true);
      const updates = await page.evaluate(() => window.__xdpboot.updates);
      watch = { startedAt, heapStart, heapMax: heapStart, updates, samples: 0, timer: null };
      watch.timer = setInterval(async () => {
        try {
          const used = await heapUsed(false);
          watch.heapMax = Math.max(watch.heapMax, used);
          watch.samples++;
        } catch (e) { /* the page is busy or closing: the next sample counts */ }
      }, HEAP_SAMPLE_MS);
      return `heap ${heapStart}`;
    }
    case "watch-stop": {
      if (!watch) throw new Error("watch-start first");
      clearInterval(watch.timer);
      const heapEnd = await heapUsed(true);
      const page_ = await page.evaluate((since) => ({
        tasks: (window.__longTasks || []).filter(([start]) => start >= since),
        allTasks: window.__longTasks || [],
        updates: window.__xdpboot.updates,
        tableLoads: window.__xdpboot.tableLoads,
        now: performance.now(),
      }), watch.startedAt);
      const longest = page_.tasks.reduce((max, [, d]) => Math.max(max, d), 0);
      const longestEver = page_.allTasks.reduce((max, [, d]) => Math.max(max, d), 0);
      return JSON.stringify({
        seconds: (page_.now - watch.startedAt) / 1000,
        long_tasks: page_.tasks.length,
        longest_task_ms: longest,
        task_ms: page_.tasks.map(([, d]) => Math.round(d)),
        longest_task_since_load_ms: longestEver,
        heap_start: watch.heapStart,
        heap_max: watch.heapMax,
        heap_end: heapEnd,
        heap_samples: watch.samples,
        updates: page_.updates - watch.updates,
        table_loads: page_.tableLoads,
      });
    }
    case "settle": {
      const version = Number(words[1]);
      await page.waitForFunction((v) => window.__xdpboot.summaryVersion === v && window.__xdpboot.tableVersion === v,
        version, { timeout: STEP_TIMEOUT_MS });
      // The counts are drawn on the next frame.
      await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve))));
      return String(version);
    }
    case "chips": {
      const chips = await page.$$eval("#storm button.chip", (buttons) => buttons.map((b) => ({
        filter: b.dataset.filter, value: b.dataset.value, n: Number(b.dataset.n),
        shown: b.querySelector(".n").textContent,
      })));
      const matched = await page.$eval("#showing", (s) => Number(s.dataset.matched));
      return JSON.stringify({ chips, matched });
    }
    case "filter": {
      const [, kind, value] = words;
      await page.click(`#storm button.chip[data-filter="${kind}"][data-value="${value}"]`);
      const wanted = `${kind}=${encodeURIComponent(value)}`;
      const shows = (offset) => page.waitForFunction(([w, o]) => {
        const url = window.__xdpboot.tableUrl || "";
        return url.includes(w) && url.includes(`offset=${o}&`);
      }, [wanted, offset], { timeout: STEP_TIMEOUT_MS });
      let offset = 0;
      await shows(offset);
      const matched = await page.$eval("#showing", (s) => Number(s.dataset.matched));
      const macs = [];
      const stages = new Set();
      for (;;) {
        for (const [mac, stage] of await rows()) { macs.push(mac); stages.add(stage); }
        if (await page.$eval("#next", (b) => b.disabled)) break;
        offset += (await rows()).length;
        await page.click("#next");
        await shows(offset);
      }
      return JSON.stringify({ matched, macs, stages: [...stages] });
    }
    case "text": {
      const text = await page.evaluate(() => document.body.innerText);
      const bad = text.match(/.{0,40}\b(null|undefined|NaN)\b.{0,40}/);
      if (bad) throw new Error(`the page shows "${bad[1]}": …${bad[0]}…`);
      return `clean (${text.length} characters)`;
    }
    case "screenshot": {
      await page.screenshot({ path: words[1], fullPage: true });
      return words[1];
    }
    case "screenshot-view": {
      await page.setViewportSize({ width: 1400, height: 1000 });
      // Let the charts take the new width.
      await page.evaluate(() => new Promise((resolve) => setTimeout(resolve, 300)));
      await page.screenshot({ path: words[1], fullPage: false });
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
