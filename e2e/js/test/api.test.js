// The server API (fawkes::api, nested at /api/v1 by the conformance server)
// seen by the official client: what a backend publishes arrives, a
// disconnect closes the socket, presence and topic statistics count the
// clients, and calls without the key are refused.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Socket } from "phoenix";
import WebSocket from "ws";
import { startServer, until } from "./server.js";

const KEY = "test-api-key-" + Math.random().toString(36).slice(2);

async function call(url, route, body, key = KEY) {
  const headers = { "content-type": "application/json" };
  if (key) headers.authorization = `Bearer ${key}`;
  const r = await fetch(`${url}/api/v1/${route}`, { method: "POST", headers, body: typeof body === "string" ? body : JSON.stringify(body) });
  return { status: r.status, body: await r.json() };
}

function socketOn(t, url, params) {
  const s = new Socket(`${url.replace(/^http/, "ws")}/socket`, { transport: WebSocket, params, reconnectAfterMs: () => 60000 });
  t.after(() => s.disconnect());
  s.connect();
  return s;
}

const joined = (ch) => new Promise((resolve, reject) => ch.join().receive("ok", resolve).receive("error", reject));

test("publish, batch, disconnect, presence and topic statistics through the server API", async (t) => {
  const server = await startServer(t, { API_KEY: KEY });
  const topic = `presence:api-${Math.random().toString(36).slice(2)}`;
  const ann = socketOn(t, server.url, { user_id: "ann" });
  const bob = socketOn(t, server.url, { user_id: "bob" });
  const onAnn = ann.channel(topic, { status: "online" });
  const onBob = bob.channel(topic, { status: "away" });
  const got = [];
  onAnn.on("news", (p) => got.push(p));
  await joined(onAnn);
  await joined(onBob);

  // without the key, or with another, nothing happens
  assert.deepEqual(await call(server.url, "publish", { topic, event: "news", payload: { n: 0 } }, null), {
    status: 401,
    body: { error: "unauthorized" },
  });
  assert.equal((await call(server.url, "publish", { topic, event: "news", payload: { n: 0 } }, "wrong")).status, 401);
  // bad requests are answered 400 with what is wrong
  const bad = await call(server.url, "publish", "{not json");
  assert.equal(bad.status, 400);
  assert.match(bad.body.error, /invalid request/);
  assert.equal((await call(server.url, "publish", { topic })).status, 400);
  assert.equal((await call(server.url, "publish", { topic, event: "news", payload: [1] })).status, 400);

  // publish and batch reach the official client, in order
  assert.deepEqual(await call(server.url, "publish", { topic, event: "news", payload: { n: 1 } }), {
    status: 200,
    body: { status: "ok" },
  });
  const batch = await call(server.url, "batch", {
    commands: [
      { topic, event: "news", payload: { n: 2 } },
      { topic, event: "news", payload: "not an object" },
      { topic, event: "news", payload: { n: 3 } },
    ],
  });
  assert.equal(batch.status, 200);
  assert.deepEqual(batch.body.results[0], { status: "ok" });
  assert.ok(batch.body.results[1].error);
  assert.deepEqual(batch.body.results[2], { status: "ok" });
  await until(() => got.length === 3, 5000, "three broadcasts");
  assert.deepEqual(got.map((p) => p.n), [1, 2, 3]);

  // presence: both users, as presence_state shapes them
  let presence;
  const tracked = async () => {
    presence = await call(server.url, "presence", { topic });
    return Object.keys(presence.body.presences ?? {}).length === 2;
  };
  for (let i = 0; i < 100 && !(await tracked()); i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(presence.status, 200);
  assert.deepEqual(Object.keys(presence.body.presences).sort(), ["ann", "bob"]);
  assert.equal(presence.body.presences.bob.metas[0].status, "away");
  assert.deepEqual((await call(server.url, "presence_stats", { topic })).body, { keys: 2, metas: 2 });

  // topic statistics: the two channels (and the presence tracker's own subscriptions, if any)
  const stats = await call(server.url, "topic_stats", { topic });
  assert.equal(stats.status, 200);
  assert.equal(stats.body.topic, topic);
  assert.ok(stats.body.subscribers >= 2, JSON.stringify(stats.body));
  const topics = await call(server.url, "topics", { limit: 1000 });
  assert.ok(topics.body.topics.some((x) => x.topic === topic && x.subscribers === stats.body.subscribers));

  // disconnect by socket id: bob's socket closes; ann's stays
  let bobClosed = false;
  bob.onClose(() => (bobClosed = true));
  assert.deepEqual(await call(server.url, "disconnect", { socket_id: "user_socket:bob" }), {
    status: 200,
    body: { status: "ok" },
  });
  await until(() => bobClosed, 5000, "bob's socket to close");
  assert.ok(ann.isConnected());
  // and bob's presence is gone
  for (let i = 0; i < 100; i++) {
    if ((await call(server.url, "presence_stats", { topic })).body.keys === 1) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.deepEqual((await call(server.url, "presence_stats", { topic })).body, { keys: 1, metas: 1 });

  // the OpenAPI document names every route called here
  const doc = await (await fetch(`${server.url}/api/v1/openapi.json`)).json();
  for (const route of ["publish", "batch", "disconnect", "presence", "presence_stats", "topic_stats", "topics"]) {
    assert.ok(doc.paths[`/${route}`]?.post, route);
  }
});

test("the server API refuses every call when no key is configured", async (t) => {
  const server = await startServer(t, {});
  const r = await call(server.url, "publish", { topic: "room:x", event: "e", payload: {} });
  assert.equal(r.status, 401);
});
