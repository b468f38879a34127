// The chat in a real browser (Debian's Chromium, driven by playwright-core),
// each test with its own server: two people sign in, join a room, see each
// other's presence and typing, exchange messages and reload; the server is
// killed and restarted mid-conversation and nothing is lost or shown twice;
// bad input is refused where it is typed; accounts, messages (edits,
// deletions, mentions, older pages), per-user status, blocks, rooms (search,
// unread counts, leave, delete, direct messages) and keyboard use, with
// phone-sized (390x844) pages among them. On SQLite, or on PostgreSQL when
// DATABASE_URL or CHAT_TEST_DATABASE_URL says postgres:// (scripts/test.sh
// runs both). Screenshots are kept in $ARTIFACTS_DIR (default
// $CARGO_TARGET_DIR/e2e-artifacts/chat/<sqlite|postgres>).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../../..");
const TARGET = process.env.CARGO_TARGET_DIR || path.join(root, "target");
const BIN = process.env.FAWKES_CHAT_BIN || path.join(TARGET, "debug/fawkes-chat");
// PostgreSQL when a URL is given (scripts/with-postgres.sh gives one), a
// fresh SQLite file per server otherwise
const DATABASE_URL = process.env.DATABASE_URL || process.env.CHAT_TEST_DATABASE_URL || "";
const BACKEND = DATABASE_URL.startsWith("postgres") ? "postgres" : "sqlite";
const ARTIFACTS = process.env.ARTIFACTS_DIR || path.join(TARGET, "e2e-artifacts/chat", BACKEND);
const PASSWORD = "correct horse battery staple";
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

/// The chat server on a free port and a fresh database; `kill` stops it
/// at once (SIGKILL), `restart` starts it again on the same port and
/// database.
async function startServer(t) {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fawkes-chat-e2e-"));
  const env = { ...process.env, PORT: String(port), DATABASE_URL: DATABASE_URL || `sqlite://${dir}/chat.db?mode=rwc`, RUST_LOG: "warn" };
  const url = `http://127.0.0.1:${port}`;
  let child = null;
  const start = async () => {
    child = spawn(BIN, [], { env, stdio: ["ignore", "ignore", "inherit"] });
    for (let i = 0; i < 200; i++) {
      try {
        if ((await fetch(`${url}/health`)).ok) return;
      } catch {}
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error("the chat server did not start");
  };
  t.after(() => child?.kill("SIGKILL"));
  await start();
  return {
    url,
    kill: async () => {
      const exited = once(child, "exit");
      child.kill("SIGKILL");
      await exited;
    },
    restart: start,
  };
}

async function launchBrowser(t) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  t.after(() => browser.close());
  return browser;
}

// A page of its own (a browser context: its own storage) where `name`
// creates an account; `viewport` a phone's to try the narrow layout.
async function signIn(browser, url, name, setup = async () => {}, viewport = { width: 1100, height: 700 }) {
  const page = await newPage(browser, name, viewport);
  await setup(page);
  await page.goto(url);
  await page.fill("#name", name);
  await page.fill("#password", PASSWORD);
  await page.click("#register");
  await page.waitForSelector("#app:not(.hidden)");
  return page;
}

async function newPage(browser, name, viewport = { width: 1100, height: 700 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[${name}] page error: ${e.message}`));
  return page;
}

const PHONE = { width: 390, height: 844 };

// Finds a room by searching the room list, and opens it.
async function findRoom(page, name) {
  await page.fill("#room-search", name);
  await page.click("#search-rooms");
  // exactly that name (a search matches parts of names, in any case)
  await page.locator("#room-results button", { hasText: new RegExp(`^# ${name}$`) }).click();
  await page.waitForFunction((n) => document.getElementById("room-title").textContent === `# ${n}`, name);
}
const shot = (page, name) => page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });

test("two people chat in a browser: presence, typing, messages, history after a reload", { timeout: 90000 }, async (t) => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const { url } = await startServer(t);
  const browser = await launchBrowser(t);

  const alice = await signIn(browser, url, "alice");
  await alice.fill("#room-name", "lobby");
  await alice.click("#create-room");
  await alice.waitForSelector("#room-title:has-text('# lobby')");
  await alice.waitForSelector("#message:not([disabled])");

  const bob = await signIn(browser, url, "bob");
  await findRoom(bob, "lobby");
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

// Every state the connection banner shows from now on, in order.
async function recordConnection(page) {
  await page.evaluate(() => {
    const banner = document.getElementById("connection");
    window.connectionStates = [banner.dataset.state];
    new MutationObserver(() => {
      const s = banner.dataset.state;
      if (window.connectionStates.at(-1) !== s) window.connectionStates.push(s);
    }).observe(banner, { attributes: true, attributeFilter: ["data-state"] });
  });
}

// Puts a page on long polling (phoenix.js remembers a fallback to it per
// tab: the page starts there) behind a switch that cuts it off: while cut,
// every poll and send fails, and a poll that was waiting when the cut came
// loses what it brings, as a dropped connection does.
async function cuttableLongPoll(page) {
  const link = { cut: false };
  await page.addInitScript(() => sessionStorage.setItem("phx:fallback:LongPoll", "true"));
  await page.route(/\/socket\/longpoll/, async (route) => {
    if (link.cut) return route.abort("internetdisconnected");
    let response;
    try {
      response = await route.fetch({ timeout: 60000 });
    } catch {
      return route.abort("connectionrefused");
    }
    if (link.cut) return route.abort("internetdisconnected");
    return route.fulfill({ response });
  });
  return link;
}

const bodies = (page) => page.$$eval("#messages li .body", (els) => els.map((e) => e.textContent));
const connected = (page, timeout = 30000) => page.getByRole("status", { name: "Connection: connected" }).waitFor({ timeout });
const disconnected = (page) => page.waitForSelector("#connection[data-state='reconnecting'], #connection[data-state='offline']");

test("cut off, and through a server killed and restarted mid-conversation: nothing is lost, nothing shows twice", { timeout: 120000 }, async (t) => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const server = await startServer(t);
  const browser = await launchBrowser(t);

  // carol on long polling, with a switch to cut her off; dave on WebSocket
  let link;
  const carol = await signIn(browser, server.url, "carol", async (page) => { link = await cuttableLongPoll(page); });
  const fills = [];
  carol.on("request", (r) => { if (/\/messages\?after=/.test(r.url())) fills.push(r.url()); });
  await carol.fill("#room-name", "standup");
  await carol.click("#create-room");
  await carol.waitForSelector("#message:not([disabled])");
  const dave = await signIn(browser, server.url, "dave");
  await findRoom(dave, "standup");
  await dave.waitForSelector("#message:not([disabled])");
  await carol.waitForSelector("#presence li:has-text('dave')");
  for (const page of [carol, dave]) {
    await connected(page);
    await recordConnection(page);
  }

  const said = [];
  const say = async (page, text) => {
    await page.fill("#message", text);
    await page.press("#message", "Enter");
    said.push(text);
  };
  const sees = (page, text) => page.waitForSelector(`#messages li.message:has-text("${text}")`, { timeout: 30000 });
  const talk = async (lines) => {
    for (const [from, to, text] of lines) {
      await say(from, text);
      await sees(to, text);
    }
  };
  await talk([
    [dave, carol, "morning"],
    [carol, dave, "morning dave"],
    [dave, carol, "shipping today?"],
  ]);

  // carol is cut off for a while: back, she gets what she missed from the
  // room's history (no gap, nothing read from the API)
  link.cut = true;
  await say(dave, "carol?");
  await sees(dave, "carol?");
  await disconnected(carol);
  await say(dave, "she dropped");
  await sees(dave, "she dropped");
  link.cut = false;
  await sees(carol, "she dropped");
  await connected(carol);
  assert.deepEqual(fills, [], "replayed from the history");
  await talk([[carol, dave, "yes, once the server is back"]]);

  // cut off again, she misses a message; then the server dies at once
  // (SIGKILL) and its history with it
  link.cut = true;
  await say(dave, "deploying now");
  await sees(dave, "deploying now");
  await server.kill();
  await disconnected(dave);
  // dave keeps typing: into his outbox, shown as pending
  for (const text of ["are you there?", "the server is down", "I keep typing anyway"]) {
    await say(dave, text);
  }
  await dave.waitForFunction(() => document.querySelectorAll("#messages li.pending").length === 3);
  await dave.getByRole("status", { name: "Connection: offline" }).waitFor();
  await dave.screenshot({ path: path.join(ARTIFACTS, "dave-offline-outbox.png") });
  await carol.screenshot({ path: path.join(ARTIFACTS, "carol-server-down.png") });

  // back on the same port and database, with a new history: dave's outbox
  // goes out; carol, back too, is told of the gap and reads the rest
  await server.restart();
  await connected(dave);
  await dave.waitForFunction(() => document.querySelectorAll("#messages li.pending").length === 0, null, { timeout: 30000 });
  link.cut = false;
  await connected(carol);
  await sees(carol, "I keep typing anyway");
  await sees(carol, "deploying now");
  assert.ok(fills.length > 0, "the gap is filled from the API");
  await talk([
    [carol, dave, "back!"],
    [dave, carol, "welcome back"],
  ]);
  await carol.screenshot({ path: path.join(ARTIFACTS, "carol-after-restart.png") });
  await dave.screenshot({ path: path.join(ARTIFACTS, "dave-after-restart.png") });

  // every message exactly once, in order, on both pages and in the database
  assert.deepEqual(await bodies(carol), said);
  assert.deepEqual(await bodies(dave), said);
  const token = await carol.evaluate(() => localStorage.getItem("token"));
  const room = await carol.evaluate(() => JSON.parse(localStorage.getItem("room")).id);
  const res = await fetch(`${server.url}/api/v1/rooms/${room}/messages?limit=100`, { headers: { authorization: `Bearer ${token}` } });
  assert.deepEqual((await res.json()).data.map((m) => m.body), said, "stored once each");
  await carol.reload();
  await sees(carol, "welcome back");
  assert.deepEqual(await bodies(carol), said);

  // dave's banner: reconnecting, offline, then connected
  const states = await dave.evaluate(() => window.connectionStates);
  const shown = states.join(" → ");
  assert.equal(states[0], "connected", shown);
  assert.equal(states.at(-1), "connected", shown);
  assert.ok(states.indexOf("reconnecting") > 0 && states.indexOf("offline") > states.indexOf("reconnecting"), shown);
});

test("bad input is refused with the reason shown where it was typed, and nothing crashes or is stored twice", { timeout: 90000 }, async (t) => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const { url } = await startServer(t);
  const browser = await launchBrowser(t);
  const erin = await signIn(browser, url, "erin");

  // an empty room name: said under the field
  await erin.click("#create-room");
  await erin.waitForSelector("#room-error:has-text(\"name can't be blank\")");
  // a control character in a room name
  await erin.fill("#room-name", "bad\u0007room");
  await erin.click("#create-room");
  await erin.waitForSelector("#room-error:has-text('name must not contain control characters')");
  await shot(erin, "bad-input-room-name");
  await erin.fill("#room-name", "inputs");
  await erin.click("#create-room");
  await erin.waitForSelector("#message:not([disabled])");
  assert.equal(await erin.textContent("#room-error"), "");

  // a message with NUL: refused by the channel with its reason; the channel
  // stays joined (no crash, no rejoin, no second send) and the next goes out
  let joins = 0;
  erin.on("websocket", (ws) => ws.on("framesent", (f) => { if (/"phx_join"/.test(f.payload) && /room:/.test(f.payload)) joins++; }));
  await erin.fill("#message", "nul\u0000inside");
  await erin.press("#message", "Enter");
  await erin.waitForSelector("#send-error:has-text('body must not contain control characters')");
  await shot(erin, "bad-input-message-nul");
  await erin.fill("#message", "fine");
  await erin.press("#message", "Enter");
  await erin.waitForSelector("#messages li.message:has-text('fine')");
  assert.equal(joins, 0, "no rejoin");
  const token = await erin.evaluate(() => localStorage.getItem("token"));
  const room = await erin.evaluate(() => JSON.parse(localStorage.getItem("room")).id);
  const res = await fetch(`${url}/api/v1/rooms/${room}/messages`, { headers: { authorization: `Bearer ${token}` } });
  assert.deepEqual((await res.json()).data.map((m) => m.body), ["fine"]);
});

test("accounts: names unique after normalisation, tricks refused, sign-out, sign-in with a password, on a phone too", { timeout: 90000 }, async (t) => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const { url } = await startServer(t);
  const browser = await launchBrowser(t);
  const frank = await signIn(browser, url, "Frank");

  // the same name in another case or width is taken; invisible tricks refused
  const phone = await newPage(browser, "phone", PHONE);
  await phone.goto(url);
  await shot(phone, "phone-sign-in");
  for (const [name, why] of [
    ["FRANK", "name has already been taken"],
    ["ｆｒａｎｋ", "name has already been taken"],
    ["fr\u200bank", "name must not contain invisible characters"],
    ["\u202eknarf", "name must not contain bidirectional control characters"],
    ["fr\u0430nk", "name must not mix Latin, Greek and Cyrillic letters"],
  ]) {
    await phone.fill("#name", name);
    await phone.fill("#password", PASSWORD);
    await phone.click("#register");
    await phone.waitForSelector(`#signin-error:has-text("${why}")`);
  }
  await shot(phone, "phone-name-taken");
  // a wrong password, then the right one: frank on the phone too
  await phone.fill("#name", "frank");
  await phone.fill("#password", "not the password");
  await phone.press("#password", "Enter");
  await phone.waitForSelector("#signin-error:has-text('invalid name or password')");
  await phone.fill("#password", PASSWORD);
  await phone.press("#password", "Enter");
  await phone.waitForSelector("#app:not(.hidden)");
  assert.equal(await phone.textContent("#me"), "Frank");
  await shot(phone, "phone-signed-in");

  // sign-out ends this session only: its token is refused, the phone's not
  const token = await frank.evaluate(() => localStorage.getItem("token"));
  await frank.click("#sign-out");
  await frank.waitForSelector("#signin:not(.hidden)");
  const rooms = (tok) => fetch(`${url}/api/v1/rooms`, { headers: { authorization: `Bearer ${tok}` } });
  assert.equal((await rooms(token)).status, 401);
  const phoneToken = await phone.evaluate(() => localStorage.getItem("token"));
  assert.equal((await rooms(phoneToken)).status, 200);
  await shot(frank, "signed-out");
  // a reload keeps the phone signed in
  await phone.reload();
  await phone.waitForSelector("#app:not(.hidden)");
});

// Posts through the API, waiting out the rate limit when told to.
async function post(url, token, room, body) {
  for (;;) {
    const res = await fetch(`${url}/api/v1/rooms/${room}/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ body }),
    });
    if (res.status !== 429) {
      assert.equal(res.status, 201);
      return (await res.json()).data;
    }
    const wait = (await res.json()).error.retry_after;
    await new Promise((r) => setTimeout(r, wait));
  }
}

const session = (page) => page.evaluate(() => ({ token: localStorage.getItem("token"), room: JSON.parse(localStorage.getItem("room") || "null")?.id }));

test("messages: edit and delete one's own, dates, older messages on scrolling up, mentions notified and kept after a reload", { timeout: 120000 }, async (t) => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const { url } = await startServer(t);
  const browser = await launchBrowser(t);
  const gina = await signIn(browser, url, "gina");
  await gina.fill("#room-name", "history");
  await gina.click("#create-room");
  await gina.waitForSelector("#message:not([disabled])");
  const hank = await signIn(browser, url, "hank");
  await findRoom(hank, "history");
  await hank.waitForSelector("#message:not([disabled])");

  // sixty messages before: the room opens on the last 50, the rest above
  const g = await session(gina);
  const h = await session(hank);
  await Promise.all([
    (async () => { for (let i = 0; i < 30; i++) await post(url, g.token, g.room, `early ${i * 2}`); })(),
    (async () => { for (let i = 0; i < 30; i++) await post(url, h.token, g.room, `early ${i * 2 + 1}`); })(),
  ]);
  await hank.reload();
  await hank.waitForSelector("#messages li.message:has-text('early 59')");
  assert.equal(await hank.locator("#messages li.message").count(), 50);
  await hank.evaluate(() => { document.getElementById("messages").scrollTop = 0; });
  await hank.waitForFunction(() => document.querySelectorAll("#messages li.message").length === 60);
  await hank.waitForSelector("#older:has-text('The beginning of the room')");
  const early = await hank.$$eval("#messages li.message .body", (els) => els.map((e) => e.textContent));
  // all of them, once each, in the order they were stored
  const stored = await (await fetch(`${url}/api/v1/rooms/${g.room}/messages?limit=100`, { headers: { authorization: `Bearer ${h.token}` } })).json();
  assert.deepEqual(early, stored.data.map((m) => m.body));
  assert.deepEqual([...early].sort(), Array.from({ length: 60 }, (_, i) => `early ${i}`).sort());
  // timestamps carry their date
  const stamp = await hank.getAttribute("#messages li.message time", "datetime");
  assert.match(stamp, /^\d{4}-\d{2}-\d{2}T/);
  assert.match(await hank.textContent("#messages li.message time"), /^today \d/);
  await shot(hank, "older-loaded");

  // gina edits a message: hank sees the new text, marked edited, and is
  // notified of the mention it now has
  await gina.fill("#message", "see you tmrw");
  await gina.press("#message", "Enter");
  await hank.waitForSelector("#messages li.message:has-text('see you tmrw')");
  const mine = gina.locator("#messages li.message", { hasText: "see you tmrw" });
  await mine.getByRole("button", { name: /^Edit message/ }).click();
  await gina.fill("#messages input.edit-body", "see you tomorrow @hank");
  await gina.press("#messages input.edit-body", "Enter");
  await hank.waitForSelector("#messages li.message:has-text('see you tomorrow @hank') .edited");
  // hank has no edit or delete buttons on her messages
  assert.equal(await hank.locator("#messages li.message", { hasText: "see you tomorrow" }).getByRole("button").count(), 0);
  // a mention in a new message notifies him
  await gina.fill("#message", "@Hank are you coming?");
  await gina.press("#message", "Enter");
  await hank.waitForSelector("#notifications li.mention:has-text('gina mentioned you: @Hank are you coming?')");
  await hank.waitForSelector("#messages li.mention:has-text('are you coming?')");
  await shot(hank, "mention-notified");
  // gina deletes it: hank sees it deleted
  await gina.locator("#messages li.message", { hasText: "are you coming?" }).getByRole("button", { name: /^Delete message/ }).click();
  await hank.waitForSelector("#messages li.deleted:has-text('message deleted')");
  await shot(gina, "edited-and-deleted");
  // after a reload: the edit, the deletion and the notification are still there
  await hank.reload();
  await hank.waitForSelector("#messages li.message:has-text('see you tomorrow @hank') .edited");
  await hank.waitForSelector("#messages li.deleted:has-text('message deleted')");
  await hank.waitForSelector("#notifications li.mention:has-text('gina mentioned you')");
  await shot(hank, "after-reload-edits-notifications");
});

test("presence status per user across tabs and reloads; blocks hide messages, typing and mentions, and can be undone", { timeout: 120000 }, async (t) => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const { url } = await startServer(t);
  const browser = await launchBrowser(t);
  const ivan = await signIn(browser, url, "ivan");
  await ivan.fill("#room-name", "status");
  await ivan.click("#create-room");
  await ivan.waitForSelector("#message:not([disabled])");
  const judy = await signIn(browser, url, "judy");
  await findRoom(judy, "status");
  await judy.waitForSelector("#message:not([disabled])");

  // ivan's second tab (same browser context: same session storage)
  const tab2 = await ivan.context().newPage();
  await tab2.goto(url);
  await tab2.waitForSelector("#message:not([disabled])");
  await ivan.selectOption("#status", "busy");
  // the other tab follows, and judy sees him busy on both devices
  await tab2.waitForFunction(() => document.getElementById("status").value === "busy");
  await judy.waitForSelector("#presence li:has-text('ivan') >> text=busy · 2 devices");
  // a reload keeps it
  await tab2.reload();
  await tab2.waitForSelector("#message:not([disabled])");
  await tab2.waitForFunction(() => document.getElementById("status").value === "busy");
  await judy.waitForSelector("#presence li:has-text('ivan') >> text=busy · 2 devices");
  await shot(judy, "status-busy-two-tabs");
  await tab2.close();

  await ivan.fill("#message", "before the block");
  await ivan.press("#message", "Enter");
  await judy.waitForSelector("#messages li.message:has-text('before the block')");
  // judy blocks ivan: his messages leave her page and stop coming
  await judy.getByRole("button", { name: "Block ivan" }).click();
  await judy.waitForSelector("#blocked li:has-text('ivan')");
  assert.equal(await judy.locator("#messages li.message", { hasText: "before the block" }).count(), 0);
  await ivan.focus("#message");
  await ivan.keyboard.type("@judy after the block");
  await ivan.keyboard.press("Enter");
  await ivan.waitForSelector("#messages li.message:has-text('@judy after the block')");
  await judy.fill("#message", "judy still talks");
  await judy.press("#message", "Enter");
  await ivan.waitForSelector("#messages li.message:has-text('judy still talks')");
  assert.equal(await judy.locator("#messages li.message", { hasText: "after the block" }).count(), 0);
  assert.equal(await judy.textContent("#typing"), "");
  assert.equal(await judy.locator("#notifications li").count(), 0);
  // nor after a reload (the history leaves him out)
  await judy.reload();
  await judy.waitForSelector("#messages li.message:has-text('judy still talks')");
  assert.equal(await judy.locator("#messages li.message", { hasText: "the block" }).count(), 0);
  await judy.waitForSelector("#blocked li:has-text('ivan')");
  await shot(judy, "blocked");
  // unblocked: his messages are back
  await judy.locator("#blocked").getByRole("button", { name: "Unblock ivan" }).click();
  await judy.waitForSelector("#messages li.message:has-text('@judy after the block')");
  await judy.waitForSelector("#messages li.message:has-text('before the block')");
  await shot(judy, "unblocked");
});

test("rooms: unique names, a searched and paged list, unread counts, leave, delete by the owner, direct messages, on a phone too", { timeout: 120000 }, async (t) => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const { url } = await startServer(t);
  const browser = await launchBrowser(t);
  const kim = await signIn(browser, url, "kim");
  await kim.fill("#room-name", "Design");
  await kim.click("#create-room");
  await kim.waitForSelector("#message:not([disabled])");
  const leo = await signIn(browser, url, "leo");
  // a name taken in another case is said under the field
  await leo.fill("#room-name", "DESIGN");
  await leo.click("#create-room");
  await leo.waitForSelector("#room-error:has-text('name has already been taken')");
  await leo.fill("#room-name", "Other");
  await leo.click("#create-room");
  await leo.waitForSelector("#room-title:has-text('# Other')");

  // many rooms: the list comes a page at a time, searched by the server
  const { token } = await session(kim);
  for (let i = 0; i < 45; i++) {
    const res = await fetch(`${url}/api/v1/rooms`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${token}` }, body: JSON.stringify({ name: `bulk ${i}` }) });
    assert.equal(res.status, 201);
  }
  const listed = [];
  leo.on("request", (r) => { if (/\/api\/v1\/rooms(\?|$)/.test(r.url()) && r.method() === "GET") listed.push(r.url()); });
  await leo.fill("#room-search", "BULK");
  await leo.click("#search-rooms");
  await leo.waitForFunction(() => document.querySelectorAll("#room-results li").length === 20);
  await leo.click("#more-rooms");
  await leo.waitForFunction(() => document.querySelectorAll("#room-results li").length === 40);
  await leo.click("#more-rooms");
  await leo.waitForFunction(() => document.querySelectorAll("#room-results li").length === 45);
  assert.ok(await leo.isHidden("#more-rooms"));
  assert.equal(listed.length, 3);
  assert.ok(listed.every((u) => /q=BULK/.test(u) && /limit=20/.test(u)), listed.join(" "));

  // leo joins Design, goes back to Other; kim says two things in Design
  await findRoom(leo, "Design");
  await leo.click("#rooms button:has-text('# Other')");
  await leo.waitForSelector("#room-title:has-text('# Other')");
  for (const text of ["first", "second"]) {
    await kim.fill("#message", text);
    await kim.press("#message", "Enter");
    await kim.waitForSelector(`#messages li.message:has-text('${text}')`);
  }
  await leo.reload();
  await leo.waitForSelector("#rooms button[aria-label='# Design, 2 unread']");
  await shot(leo, "unread-counts");
  await leo.click("#rooms button:has-text('# Design')");
  await leo.waitForSelector("#messages li.message:has-text('second')");
  await leo.click("#rooms button:has-text('# Other')");
  await leo.waitForSelector("#rooms button[aria-label='# Design']");
  // leaving: Design is no longer his
  await leo.click("#rooms button:has-text('# Design')");
  await leo.waitForSelector("#room-title:has-text('# Design')");
  assert.ok(await leo.isHidden("#delete-room"), "only the owner may delete");
  await leo.click("#leave-room");
  await leo.waitForSelector("#room-status:has-text('You left Design.')");
  await leo.waitForFunction(() => ![...document.querySelectorAll("#rooms button")].some((b) => b.textContent.startsWith("# Design")));

  // mia, on a phone, joins Design; kim messages her directly
  const mia = await signIn(browser, url, "mia", async () => {}, PHONE);
  await findRoom(mia, "Design");
  await kim.waitForSelector("#presence li:has-text('mia')");
  await kim.getByRole("button", { name: "Message mia directly" }).click();
  await kim.waitForSelector("#room-title:has-text('@ mia')");
  await kim.fill("#message", "hi mia, just us");
  await kim.press("#message", "Enter");
  await kim.waitForSelector("#messages li.message:has-text('hi mia, just us')");
  await mia.reload();
  await mia.waitForSelector("#rooms button[aria-label='@ kim, 1 unread']");
  await mia.click("#rooms button:has-text('@ kim')");
  await mia.waitForSelector("#messages li.message:has-text('hi mia, just us')");
  await shot(mia, "phone-direct-message");
  // leo cannot find it
  await leo.fill("#room-search", "kim");
  await leo.click("#search-rooms");
  await leo.waitForSelector("#search-error:has-text('no room matches')");

  // kim deletes Design while mia is in it
  await mia.click("#rooms button:has-text('# Design')");
  await mia.waitForSelector("#room-title:has-text('# Design')");
  await kim.click("#rooms button:has-text('# Design')");
  await kim.waitForSelector("#room-title:has-text('# Design')");
  await kim.click("#delete-room");
  await kim.waitForSelector("#room-status:has-text('You deleted Design.')");
  await mia.waitForSelector("#room-status:has-text('This room was deleted by its owner.')");
  await mia.waitForFunction(() => ![...document.querySelectorAll("#rooms button")].some((b) => b.textContent.startsWith("# Design")));
  await shot(mia, "phone-room-deleted");
});

test("keyboard and screen readers: labelled fields, focus in reading order, errors announced", { timeout: 60000 }, async (t) => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const { url } = await startServer(t);
  const browser = await launchBrowser(t);
  const page = await newPage(browser, "nina", PHONE);
  await page.goto(url);
  // the sign-in form by keyboard alone: name, password, sign in, create account
  await page.getByLabel("Name").focus();
  const order = [];
  for (let i = 0; i < 4; i++) {
    order.push(await page.evaluate(() => document.activeElement.id));
    await page.keyboard.press("Tab");
  }
  assert.deepEqual(order, ["name", "password", "sign-in", "register"]);
  await page.getByLabel("Name").fill("nina");
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).press("Enter");
  await page.waitForSelector("#app:not(.hidden)");
  // every field of the page has a name a screen reader reads
  for (const label of ["Message", "Find a room", "New room", "My status"]) {
    assert.equal(await page.getByLabel(label, { exact: true }).count(), 1, label);
  }
  // an error is an alert, next to its field
  await page.getByLabel("New room").press("Enter");
  await page.getByRole("alert").filter({ hasText: "name can't be blank" }).waitFor();
  await page.getByLabel("New room").fill("a11y");
  await page.getByLabel("New room").press("Enter");
  await page.waitForSelector("#message:not([disabled])");
  await page.getByLabel("Message", { exact: true }).fill("typed with the keyboard");
  await page.getByLabel("Message", { exact: true }).press("Enter");
  await page.waitForSelector("#messages li.message:has-text('typed with the keyboard')");
  await page.getByRole("button", { name: /^Edit message/ }).waitFor();
  await page.getByRole("status", { name: "Connection: connected" }).waitFor();
  await shot(page, "phone-keyboard");
});
