// The chat in a real browser (Debian's Chromium, driven by playwright-core):
// two people sign in, join a room, see each other's presence and typing,
// exchange messages, reload and see the history. Screenshots are kept in
// $ARTIFACTS_DIR (default target/e2e-artifacts).
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

async function startServer(t) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fawkes-chat-e2e-"));
  const env = { ...process.env, PORT: String(port), DATABASE_URL: process.env.DATABASE_URL || `sqlite://${dir}/chat.db?mode=rwc`, RUST_LOG: "warn" };
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
  await page.click("#sign-in");
  await page.waitForSelector("#app:not(.hidden)");
  return page;
}

test("two people chat in a browser: presence, typing, messages, history after a reload", { timeout: 90000 }, async (t) => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const url = await startServer(t);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  t.after(() => browser.close());

  const alice = await signIn(browser, url, "alice");
  await alice.fill("#room-name", "lobby");
  await alice.click("#create-room");
  await alice.waitForSelector("#room-title:has-text('# lobby')");
  await alice.waitForSelector("#message:not([disabled])");

  const bob = await signIn(browser, url, "bob");
  await bob.click("#rooms li:has-text('lobby')");
  await bob.waitForSelector("#message:not([disabled])");

  // presence: each sees the other, by name
  await alice.waitForSelector("#presence li:has-text('bob')");
  await bob.waitForSelector("#presence li:has-text('alice')");

  // typing reaches the other only
  await bob.focus("#message");
  await bob.keyboard.type("hel");
  await alice.waitForSelector("#typing:has-text('bob is typing')");
  assert.equal(await bob.textContent("#typing"), "");

  // messages both ways
  await bob.keyboard.type("lo alice");
  await bob.keyboard.press("Enter");
  await alice.waitForSelector("#messages li:has-text('hello alice')");
  await alice.fill("#message", "hi bob!");
  await alice.press("#message", "Enter");
  await bob.waitForSelector("#messages li:has-text('hi bob!')");

  // a status change shows up for the other
  await alice.selectOption("#status", "away");
  await bob.waitForSelector("#presence li:has-text('alice') >> text=away");

  await alice.screenshot({ path: path.join(ARTIFACTS, "alice.png") });
  await bob.screenshot({ path: path.join(ARTIFACTS, "bob.png") });

  // after a reload the history is there
  await bob.reload();
  await bob.waitForSelector("#messages li:has-text('hello alice')");
  await bob.waitForSelector("#messages li:has-text('hi bob!')");
  await bob.screenshot({ path: path.join(ARTIFACTS, "bob-after-reload.png") });
  const texts = await bob.$$eval("#messages li .body", (els) => els.map((e) => e.textContent));
  assert.deepEqual(texts, ["hello alice", "hi bob!"]);
});
