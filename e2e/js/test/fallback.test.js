// The official client falls back to long polling by itself when the
// WebSocket cannot be reached, and then works normally.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Socket, LongPoll } from "phoenix";
import WebSocket from "ws";
import { startServer, until } from "./server.js";

// A WebSocket whose URL points at a closed port: the connection is refused,
// as when a proxy or firewall blocks WebSockets.
class UnreachableWebSocket extends WebSocket {
  constructor(url, protocols) {
    super(url.replace(/^ws:\/\/[^/]+/, "ws://127.0.0.1:9"), protocols);
  }
}

test("a blocked WebSocket falls back to long polling, then joins, pushes and receives broadcasts", { timeout: 30000 }, async (t) => {
  const { url } = await startServer(t);
  const socket = new Socket(`${url.replace(/^http/, "ws")}/socket`, {
    transport: UnreachableWebSocket,
    longPollFallbackMs: 300,
    params: { user_id: "fallback-user" },
    reconnectAfterMs: () => 100,
  });
  t.after(() => socket.disconnect());
  socket.connect();
  await until(() => socket.isConnected(), 10000, "the socket to open");
  assert.equal(socket.transport, LongPoll, "the client switched to LongPoll");

  const ch = socket.channel("room:fallback", { via: "longpoll" });
  const joined = await new Promise((resolve, reject) => {
    ch.join().receive("ok", resolve).receive("error", reject).receive("timeout", () => reject(new Error("join timeout")));
  });
  assert.deepEqual(joined, { topic: "room:fallback", params: { via: "longpoll" } });
  const echo = await new Promise((resolve) => ch.push("echo", { n: 1 }).receive("ok", resolve));
  assert.deepEqual(echo, { n: 1 });
  const got = new Promise((resolve) => ch.on("news", resolve));
  const res = await fetch(`${url}/api/broadcast`, { method: "POST", body: JSON.stringify({ topic: "room:fallback", event: "news", payload: { hello: "lp" } }) });
  assert.equal(res.status, 200);
  assert.deepEqual(await got, { hello: "lp" });
});
