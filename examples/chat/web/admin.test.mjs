// The live admin page (fawkes::admin, served by the chat at /admin when
// ADMIN_KEY is set) in a real browser: it shows the node, the rooms'
// topics with their presence counts and the message rates, and updates live
// as people come and chat; a wrong key is refused. The screenshot is kept
// in $ARTIFACTS_DIR (default target/e2e-artifacts); with
// UPDATE_SCREENSHOTS=1 it also replaces docs/admin.png.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../../..");
const BIN = process.env.FAWKES_CHAT_BIN || path.join(root, "target/debug/fawkes-chat");
const ARTIFACTS = process.env.ARTIFACTS_DIR || path.join(root, "target/e2e-artifacts");
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const KEY = "admin-" + Math.random().toString(36).slice(2);

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function startChat(t) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fawkes-admin-e2e-"));
  const env = {
    ...process.env,
    PORT: String(port),
    DATABASE_URL: `sqlite://${dir}/chat.db?mode=rwc`,
    ADMIN_KEY: KEY,
    NODE_NAME: "",
    RUST_LOG: "warn",
  };
  delete env.NODE_NAME;
  const child = spawn(BIN, [], { env, stdio: ["ignore", "ignore", "inherit"] });
  t.after(() => child.kill("SIGKILL"));
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 200; i++) {
    try {
      if ((await fetch(`${url}/health`)).ok) return url;
    } catch {}
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("the chat server did not start");
}

async function signIn(browser, url, name) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[${name}] page error: ${e.message}`));
  await page.goto(url);
  await page.fill("#name", name);
  await page.fill("#password", "a long enough password");
  await page.click("#register");
  await page.waitForSelector("#app:not(.hidden)");
  return page;
}

/** Waits for the page's next `stats` push; returns the number of updates. */
async function nextUpdate(page) {
  const seen = Number((await page.getAttribute("body", "data-updates")) || 0);
  await page.waitForFunction((n) => Number(document.body.dataset.updates || 0) > n, seen, { timeout: 5000 });
  return seen + 1;
}

const card = (page, metric) => page.textContent(`.card[data-metric="${metric}"] b`).then((t) => Number(t.replace(/,/g, "")));

test("the admin page shows the cluster live, behind its key", { timeout: 90000 }, async (t) => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const url = await startChat(t);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  t.after(() => browser.close());

  // a wrong key: the socket is refused and the page asks for the key
  const intruder = await (await browser.newContext()).newPage();
  await intruder.goto(`${url}/admin#key=wrong`);
  await intruder.waitForSelector("#login:not([hidden])");
  await intruder.waitForSelector("#login-error:has-text('refused')");
  assert.equal(await intruder.isHidden("#main"), true);

  // the right key
  const admin = await (await browser.newContext({ viewport: { width: 1280, height: 820 } })).newPage();
  admin.on("pageerror", (e) => console.error(`[admin] page error: ${e.message}`));
  await admin.goto(`${url}/admin#key=${KEY}`);
  await admin.waitForSelector("#main:not([hidden])");
  await nextUpdate(admin);
  await admin.waitForSelector("#nodes tr td:has-text('fawkes')");
  const before = await card(admin, "connections");
  assert.ok(before >= 1, "the admin page's own socket counts");

  // people come: connections and the room's topic appear, live
  const alice = await signIn(browser, url, "alice");
  await alice.fill("#room-name", "lobby");
  await alice.click("#create-room");
  await alice.waitForSelector("#message:not([disabled])");
  const bob = await signIn(browser, url, "bob");
  // the room list is searched on the server: bob finds the room and opens it
  await bob.fill("#room-search", "lobby");
  await bob.click("#search-rooms");
  await bob.locator("#room-results button", { hasText: /^# lobby$/ }).click();
  await bob.waitForSelector("#message:not([disabled])");
  await admin.waitForFunction(
    (n) => Number(document.querySelector('.card[data-metric="connections"] b').textContent.replace(/,/g, "")) >= n + 2,
    before,
    { timeout: 10000 },
  );
  // the room's topic, with both people in its presence
  await admin.waitForSelector("#topics tr:has(code:text-matches('^room:')) td.n:nth-child(3):text-is('2')", { timeout: 10000 });

  // they chat: the rates move
  for (let i = 0; i < 5; i++) {
    await alice.fill("#message", `hello ${i}`);
    await alice.press("#message", "Enter");
  }
  await bob.waitForSelector("#messages li:has-text('hello 4')");
  await admin.waitForFunction(
    () => Number(document.querySelector('.card[data-metric="broadcasts/s"] b').textContent) > 0 || Number(document.querySelector('.card[data-metric="messages in/s"] b').textContent) > 0,
    null,
    { timeout: 10000 },
  );
  await nextUpdate(admin);
  const shot = path.join(ARTIFACTS, "admin.png");
  await admin.screenshot({ path: shot, fullPage: true });
  if (process.env.UPDATE_SCREENSHOTS === "1") fs.copyFileSync(shot, path.join(root, "docs/admin.png"));

  // bob leaves: the page follows
  const connections = await card(admin, "connections");
  await bob.context().close();
  await admin.waitForFunction(
    (n) => Number(document.querySelector('.card[data-metric="connections"] b').textContent.replace(/,/g, "")) < n,
    connections,
    { timeout: 10000 },
  );
});
