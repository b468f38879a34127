// Two nodes of the conformance server sharing a real Redis server (started
// here): broadcasts, disconnects and long-poll sessions span the nodes, as
// the official client sees them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import http from "node:http";
import net from "node:net";
import { Socket, LongPoll } from "phoenix";
import WebSocket from "ws";
import { startServer, freePort, until, sleep } from "./server.js";

/** Starts redis-server on a free port; stops it when the test ends. */
async function startRedis(t) {
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: "ignore",
  });
  t.after(() => child.kill("SIGKILL"));
  const deadline = Date.now() + 5000;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => {
        s.write("*1\r\n$4\r\nPING\r\n");
      });
      s.on("data", (d) => {
        s.destroy();
        resolve(d.toString().startsWith("+PONG"));
      });
      s.on("error", () => resolve(false));
    });
    if (ok) return `redis://127.0.0.1:${port}`;
    if (Date.now() > deadline) throw new Error("redis-server did not start (is it installed?)");
    await sleep(50);
  }
}

async function cluster(t) {
  const redis = await startRedis(t);
  const a = await startServer(t, { REDIS_URL: redis, NODE_NAME: "a@127.0.0.1" });
  const b = await startServer(t, { REDIS_URL: redis, NODE_NAME: "b@127.0.0.1" });
  return { a, b };
}

function socketOn(t, url, params, opts = {}) {
  const s = new Socket(`${url.replace(/^http/, "ws")}/socket`, { transport: WebSocket, params, ...opts });
  t.after(() => s.disconnect());
  s.connect();
  return s;
}

const joined = (ch) => new Promise((resolve, reject) => ch.join().receive("ok", resolve).receive("error", reject));
const pushed = (ch, event, payload) =>
  new Promise((resolve, reject) => ch.push(event, payload).receive("ok", resolve).receive("error", reject));

test("a broadcast made on one node reaches clients of the other, from a channel and from HTTP", async (t) => {
  const { a, b } = await cluster(t);
  const topic = `room:cluster-${Math.random().toString(36).slice(2)}`;
  const onA = socketOn(t, a.url, { user_id: "ann" }).channel(topic);
  const onB = socketOn(t, b.url, { user_id: "bob" }).channel(topic);
  const seenA = [];
  const seenB = [];
  onA.on("broadcast", (p) => seenA.push(p));
  onB.on("broadcast", (p) => seenB.push(p));
  await joined(onA);
  await joined(onB);
  await pushed(onB, "broadcast", { from: "b" });
  await until(() => seenA.length === 1 && seenB.length === 1, 5000, "the broadcast on both nodes");
  assert.deepEqual(seenA[0], { from: "b" });
  await pushed(onA, "broadcast_from", { from: "a" });
  await until(() => seenB.length === 2, 5000, "broadcast_from on the other node");
  assert.deepEqual(seenB[1], { from: "a" });
  const r = await fetch(`${b.url}/api/broadcast`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ topic, event: "broadcast", payload: { from: "http" } }),
  });
  assert.equal(r.status, 200);
  await until(() => seenA.length === 2, 5000, "the HTTP broadcast on node a");
  assert.deepEqual(seenA[1], { from: "http" });
  await sleep(200);
  assert.equal(seenA.length, 2, "nothing twice");
});

test("a disconnect requested on one node closes the user's sockets on the other", async (t) => {
  const { a, b } = await cluster(t);
  const s = socketOn(t, a.url, { user_id: "carol" }, { reconnectAfterMs: () => 60000 });
  await until(() => s.isConnected(), 5000, "socket open");
  let closed = false;
  s.onClose(() => (closed = true));
  const r = await fetch(`${b.url}/api/disconnect`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user_id: "carol" }),
  });
  assert.equal(r.status, 200);
  await until(() => closed, 5000, "the socket on node a to close");
});

/** A load balancer without sticky sessions: each request goes to the next node. */
async function roundRobin(t, upstreams) {
  let next = 0;
  const served = upstreams.map(() => 0);
  const proxy = http.createServer((req, res) => {
    const i = next++ % upstreams.length;
    served[i]++;
    const target = new URL(req.url, upstreams[i]);
    const up = http.request(target, { method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on("error", () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  });
  await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  t.after(() => proxy.close());
  return { url: `http://127.0.0.1:${proxy.address().port}`, served };
}

test("a long-poll client behind a load balancer without sticky sessions works across nodes", async (t) => {
  const { a, b } = await cluster(t);
  const lb = await roundRobin(t, [a.url, b.url]);
  const s = new Socket(`${lb.url}/socket`, { transport: LongPoll, params: { user_id: "dan" } });
  t.after(() => s.disconnect());
  s.connect();
  const topic = `room:lp-cluster-${Math.random().toString(36).slice(2)}`;
  const ch = s.channel(topic);
  const seen = [];
  ch.on("broadcast", (p) => seen.push(p));
  await joined(ch);
  for (let i = 0; i < 4; i++) {
    assert.deepEqual(await pushed(ch, "echo", { i }), { i });
  }
  const other = socketOn(t, b.url, { user_id: "eve" }).channel(topic);
  await joined(other);
  await pushed(other, "broadcast", { to: "lp" });
  await until(() => seen.length === 1, 5000, "the broadcast over long polling");
  assert.deepEqual(seen[0], { to: "lp" });
  assert.ok(lb.served[0] > 0 && lb.served[1] > 0, `both nodes served requests: ${lb.served}`);
});

test("presence spans the nodes: the official Presence on one node sees users of the other come and go", async (t) => {
  const { a, b } = await cluster(t);
  const { Presence } = await import("phoenix");
  const topic = `presence:cluster-${Math.random().toString(36).slice(2)}`;
  const observer = socketOn(t, b.url, { user_id: "watcher" }).channel(topic);
  const presence = new Presence(observer);
  await joined(observer);
  const users = () => presence.list((key, { metas }) => `${key}:${metas.length}`).sort();
  const annSocket = socketOn(t, a.url, { user_id: "ann" });
  const ann = annSocket.channel(topic, { status: "away" });
  await joined(ann);
  const tab2 = socketOn(t, b.url, { user_id: "ann" }).channel(topic);
  await joined(tab2);
  await until(() => users().join() === "ann:2,watcher:1", 10000, `ann's two tabs on node b (saw ${users()})`);
  const metas = presence.list((key, p) => (key === "ann" ? p.metas.map((m) => m.status).sort() : null)).filter(Boolean)[0];
  assert.deepEqual(metas, ["away", "online"]);
  ann.leave();
  await until(() => users().join() === "ann:1,watcher:1", 10000, `ann's tab on node a to leave (saw ${users()})`);
  annSocket.disconnect();
});

test("a node stopped gracefully leaves the cluster: its users leave the other nodes at once", async (t) => {
  const { a, b } = await cluster(t);
  const { Presence } = await import("phoenix");
  const topic = `presence:graceful-${Math.random().toString(36).slice(2)}`;
  const observer = socketOn(t, b.url, { user_id: "watcher" }).channel(topic);
  const presence = new Presence(observer);
  await joined(observer);
  const users = () => presence.list((key) => key).sort();
  const s = socketOn(t, a.url, { user_id: "fay" }, { reconnectAfterMs: () => 60000 });
  await joined(s.channel(topic));
  await until(() => users().join() === "fay,watcher", 10000, `fay on node b (saw ${users()})`);
  const started = Date.now();
  a.interrupt();
  // well before the 30 s down period
  await until(() => users().join() === "watcher", 10000, `fay to leave node b (saw ${users()})`);
  assert.ok(Date.now() - started < 10000);
});
