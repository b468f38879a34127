// The official client, unchanged, loses nothing on a topic with history:
// the application keeps the last position it saw (the second argument of
// channel.on's callback) and gives it back as a join param through a
// function, which phoenix.js evaluates on every rejoin. Connections are cut
// from both ends while broadcasts keep coming; every broadcast arrives once,
// in order, over V1 and V2, WebSocket and long polling. (V1 over long
// polling is not a combination the official client 1.8 can use with Phoenix
// either: its LongPoll sends ndjson lines, and a line that does not start
// with "[" is read as base64 binary, by Phoenix's long_poll.ex as by Fawkes.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { Socket, LongPoll } from "phoenix";
import WebSocket from "ws";
import { startServer, until, sleep } from "./server.js";

function makeSocket(url, { transport, vsn, user }) {
  const opts = {
    transport,
    params: { user_id: user },
    reconnectAfterMs: () => 50,
    rejoinAfterMs: () => 50,
    heartbeatIntervalMs: 1000,
    longpollerTimeout: 2000,
  };
  if (vsn === "1.0.0") {
    opts.vsn = vsn;
    opts.encode = (msg, cb) => cb(JSON.stringify(msg));
    opts.decode = (raw, cb) => cb(JSON.parse(raw));
  }
  return new Socket(`${url.replace(/^http/, "ws")}/socket`, opts);
}

async function broadcast(url, topic, n) {
  const res = await fetch(`${url}/api/broadcast`, {
    method: "POST",
    body: JSON.stringify({ topic, event: "tick", payload: { n } }),
  });
  assert.equal(res.status, 200);
}

for (const [name, transport, vsn] of [
  ["V2 WebSocket", WebSocket, "2.0.0"],
  ["V1 WebSocket", WebSocket, "1.0.0"],
  ["V2 long polling", LongPoll, "2.0.0"],
]) {
  test(`${name}: reconnects lose nothing and repeat nothing`, { timeout: 90000 }, async (t) => {
    const { url } = await startServer(t);
    const topic = `history:js-${vsn}-${transport === LongPoll ? "lp" : "ws"}`;
    const user = `u${Math.floor(Math.random() * 1e9)}`;
    const socket = makeSocket(url, { transport, vsn, user });
    t.after(() => socket.disconnect());
    socket.connect();

    // what the application writes: the last position, and params as a function
    let last = null;
    const seen = [];
    const positions = [];
    const gaps = [];
    const ch = socket.channel(topic, () => (last ? { since: last } : {}));
    ch.on("tick", (payload, ref) => {
      seen.push(payload.n);
      positions.push(ref);
      last = ref;
    });
    ch.on("history_gap", (payload) => gaps.push(payload));
    await new Promise((resolve, reject) => ch.join().receive("ok", resolve).receive("error", reject));

    let published = 0;
    let publishing = true;
    const publisher = (async () => {
      while (publishing) {
        await broadcast(url, topic, published++);
        await sleep(5);
      }
    })();

    let cuts = 0;
    for (let i = 0; i < 6; i++) {
      await sleep(300);
      if (i % 2 === 0) {
        // the client's side: the transport drops (abnormally)
        socket.conn.close(4000, "cut");
      } else {
        // the server's side: disconnect by socket id (1001, the client reconnects)
        const res = await fetch(`${url}/api/disconnect`, { method: "POST", body: JSON.stringify({ user_id: user }) });
        assert.equal(res.status, 200);
      }
      cuts++;
      await until(() => socket.isConnected() && ch.state === "joined", 15000, "the rejoin");
    }
    await sleep(300);
    publishing = false;
    await publisher;
    await until(() => seen.length > 0 && seen[seen.length - 1] === published - 1, 15000, `the last broadcast (${published - 1}); got up to ${seen[seen.length - 1]}`);

    assert.equal(cuts, 6);
    assert.deepEqual(gaps, [], "nothing was too old to replay");
    const first = seen[0];
    const expected = Array.from({ length: published - first }, (_, i) => first + i);
    assert.deepEqual(seen, expected, "every broadcast once, in order");
    for (const p of positions) {
      assert.equal(typeof p, "string");
      assert.ok(!/^\d+$/.test(p), `a position is never a plain integer string: ${p}`);
    }
  });
}

test("a rejoin from a position older than the history is told, then gets what is kept", { timeout: 30000 }, async (t) => {
  const { url } = await startServer(t);
  const topic = "history:js-gap";
  const socket = makeSocket(url, { transport: WebSocket, vsn: "2.0.0", user: "gap" });
  t.after(() => socket.disconnect());
  socket.connect();
  const gaps = [];
  const seen = [];
  const ch = socket.channel(topic, () => ({ since: "zzzzzzzz.1" }));
  ch.on("history_gap", (payload) => gaps.push(payload));
  ch.on("tick", (payload) => seen.push(payload.n));
  await broadcast(url, topic, 0);
  await broadcast(url, topic, 1);
  await new Promise((resolve, reject) => ch.join().receive("ok", resolve).receive("error", reject));
  await until(() => seen.length === 2, 5000, "the kept broadcasts");
  assert.equal(gaps.length, 1);
  assert.equal(gaps[0].reason, "epoch");
  assert.deepEqual(seen, [0, 1]);
});
