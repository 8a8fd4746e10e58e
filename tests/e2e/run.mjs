// Drives the e2e page (page/main.js: fal's own JS client, bundled) in
// headless Chromium through puppeteer-core, same-origin (the page beside
// wrapper/proxy, tests/e2e/server) and cross-origin (the page on another
// loopback port, `fluxi2i proxy --cors`), and asserts every case.
//
// Env: SAME (the same-origin server), STATIC (the page alone), PROXY
// (`fluxi2i proxy --cors STATIC`), OUT (where the screenshot goes).
import puppeteer from "puppeteer-core";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const { SAME, STATIC, PROXY, OUT } = process.env;
const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let passed = 0, failed = 0;
const report = (status, name, detail = "") => console.log(`${status} ${name}${detail ? ": " + detail : ""}`);

// --- The cases. ---

// check runs one case: fn asserts on the page's result.
async function check(name, fn) {
  try {
    await fn();
    passed++;
    report("PASS", name);
  } catch (e) {
    failed++;
    report("FAIL", name, e.stack ?? String(e));
  }
}

async function runSetup(browser, setup) {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(setup.page, { waitUntil: "load" });
  await page.waitForFunction(() => window.e2eReady === true, { timeout: 10000 });
  await page.evaluate((u) => window.e2e.configure(u), setup.proxyUrl);
  const call = (fn) => page.evaluate((f) => window.e2e[f](), fn);
  const tag = (n) => `${setup.name}: ${n}`;

  // Polling and streaming complete with the request id.
  for (const mode of ["polling", "streaming"]) {
    const run = async () => call(mode);
    const completes = (r) => {
      assert.ok(!r.failed, JSON.stringify(r));
      assert.equal(r.images.length, 1);
      assert.equal(r.seed, 7);
      assert.ok(r.statuses.includes("COMPLETED") || mode === "streaming", `statuses: ${r.statuses}`);
    };
    await check(tag(`${mode} completes with a request id`), async () => {
      const r = await run();
      completes(r);
      assert.match(r.requestId, uuid, "result.requestId");
    });
  }

  // sync_mode: data URIs, drawable.
  await check(tag("sync_mode returns data URIs the page can draw"), async () => {
    const r = await call("syncMode");
    assert.ok(!r.failed, JSON.stringify(r));
    assert.ok(r.images[0].startsWith("data:image/jpeg;base64,"), r.images[0]);
    assert.ok(r.drawn, r.drawError);
    assert.ok(r.drawn.litPixels > 0, "drawn and read back");
    assert.match(r.requestId, uuid);
  });

  // The result image, fetch()ed and drawn to a canvas (CORS on the files).
  await check(tag("the result image loads with fetch() and draws to a canvas"), async () => {
    const r = await call("fetchCanvas");
    assert.ok(!r.failed, JSON.stringify(r));
    assert.ok(r.drawn, r.drawError);
    assert.equal(r.drawn.width, 64, "at the input's size");
    assert.equal(r.drawn.height, 48);
    assert.ok(r.drawn.litPixels > 0);
    assert.ok(r.drawn.dataURL > 100, "the canvas is not tainted");
  });

  // Refusals the page can read.
  await check(tag("another model is refused 403, readably"), async () => {
    const r = await call("otherModel");
    assert.equal(r.failed, true);
    assert.equal(r.status, 403, JSON.stringify(r));
    assert.ok(r.body && JSON.stringify(r.body).length > 2, "the body says why");
  });
  await check(tag("an invalid input is refused 422, naming the field"), async () => {
    const r = await call("invalidInput");
    assert.equal(r.status, 422, JSON.stringify(r));
    assert.equal(r.name, "ValidationError");
    assert.match(JSON.stringify(r.body), /strength/);
  });
  await check(tag("a browser's webhookUrl is refused 400, readably"), async () => {
    const r = await call("webhookUrl");
    assert.equal(r.status, 400, JSON.stringify(r));
    assert.match(JSON.stringify(r.body), /webhook/i);
  });

  // A Blob input: fal's client uploads it to fal storage through the proxy
  // (the initiate) and to the upload URL directly (the bytes).
  await check(tag("a Blob input is uploaded and runs"), async () => {
    const r = await call("blobInput");
    assert.ok(!r.failed, JSON.stringify(r));
    assert.equal(r.images.length, 1);
    assert.match(r.requestId, uuid);
  });

  await check(tag("the result image loads in an <img>"), async () => {
    const r = await call("imgTag");
    assert.ok(!r.failed, JSON.stringify(r));
    assert.equal(r.naturalWidth, 64);
    assert.equal(r.naturalHeight, 48);
  });
  await check(tag("no uncaught error in the page"), async () => assert.deepEqual(errors, []));
  mkdirSync(OUT, { recursive: true });
  const shot = join(OUT, `${setup.name}.png`);
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${shot}`);
  await page.close();
}

const profile = mkdtempSync(join(tmpdir(), "fluxi2i-e2e-chromium-"));
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  ignoreDefaultArgs: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    `--user-data-dir=${profile}`, "about:blank",
  ],
  protocolTimeout: 60000,
});
try {
  await runSetup(browser, { name: "same-origin", page: SAME + "/index.html", proxyUrl: "/api/fal/proxy" });
  await runSetup(browser, { name: "cross-origin", page: STATIC + "/index.html", proxyUrl: PROXY + "/api/fal/proxy" });
} catch (e) {
  failed++;
  report("FAIL", "setup", e.stack ?? String(e));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(`e2e: ${passed} passed, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
