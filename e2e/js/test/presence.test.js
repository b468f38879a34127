// The official client's Presence ends in the same state whether the server
// sends one diff per change or coalesces a topic's changes over a window.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Socket, Presence } from "phoenix";
import WebSocket from "ws";
import { startServer, sleep, until } from "./server.js";

/** Runs one scripted scenario; returns each observer's final view. */
async function scenario(t, url) {
  const open = [];
  const connect = async (user) => {
    const s = new Socket(`${url.replace(/^http/, "ws")}/socket`, { transport: WebSocket, params: { user_id: user } });
    open.push(s);
    s.connect();
    await until(() => s.isConnected(), 5000, "socket open");
    return s;
  };
  t.after(() => open.forEach((s) => s.disconnect()));
  const topic = `presence:coalesce-${Math.random().toString(36).slice(2)}`;
  const join = (s, params = {}) =>
    new Promise((resolve, reject) => {
      const ch = s.channel(topic, params);
      ch.join().receive("ok", () => resolve(ch)).receive("error", reject);
    });

  // three observers with the official Presence
  const observers = [];
  for (let i = 0; i < 3; i++) {
    const s = await connect(`observer${i}`);
    const ch = s.channel(topic);
    const p = new Presence(ch);
    await new Promise((resolve) => ch.join().receive("ok", resolve));
    observers.push(p);
  }
  // a burst of joins, second tabs, updates and leaves
  const actors = [];
  for (let i = 0; i < 12; i++) {
    const s = await connect(`user${i % 5}`);
    actors.push({ s, ch: await join(s, { status: i % 2 ? "away" : "online" }) });
  }
  for (let i = 0; i < actors.length; i++) {
    if (i % 3 === 0) actors[i].ch.push("update_status", { status: `busy${i}` });
    if (i % 4 === 1) actors[i].ch.leave();
    if (i % 5 === 2) actors[i].s.disconnect();
  }
  await sleep(600);
  const view = (p) => {
    const out = {};
    p.list((key, { metas }) => {
      out[key] = metas.map((m) => m.status).sort();
    });
    return out;
  };
  await until(() => {
    const views = observers.map((p) => JSON.stringify(view(p)));
    return views.every((v) => v === views[0]);
  }, 5000, "observers to agree");
  return view(observers[0]);
}

test("coalesced presence diffs leave the official client in the same state as one diff per change", { timeout: 60000 }, async (t) => {
  const plain = await startServer(t, { PRESENCE_DIFF_WINDOW_MS: "0" });
  const coalesced = await startServer(t, { PRESENCE_DIFF_WINDOW_MS: "100" });
  const a = await scenario(t, plain.url);
  const b = await scenario(t, coalesced.url);
  assert.deepEqual(b, a);
  // and the view is what the scenario should produce
  assert.deepEqual(Object.keys(a).sort(), ["observer0", "observer1", "observer2", "user0", "user1", "user3", "user4"]);
});
