// The chat page: the official phoenix client for the socket, channels and
// presence; the JSON API for sign-in, rooms and history.
//
// Nothing is lost across reconnects and server restarts:
// - every broadcast on a room carries its history position in the ref slot
//   (the second argument of channel.on's callback); the page keeps the last
//   one and rejoins with it (params given as a function are evaluated on
//   every join), so the server replays what was missed, in order, before
//   live messages;
// - when it cannot (the server restarted, or the page was away too long),
//   the channel says `history_gap` first and the page reads what it lacks
//   from the API;
// - messages are shown in id order and once each, whatever the order in
//   which the replay, the API and live broadcasts bring them;
// - what is typed goes through an outbox: shown as pending, sent one at a
//   time when the room is joined, kept while offline, and sent again when
//   a reply does not come. Each message has a client id, so a send the
//   server already stored is answered with the same message id and stored
//   and broadcast once.
import { Socket, Presence } from "/assets/phoenix.mjs";

const $ = (id) => document.getElementById(id);
const state = {
  token: localStorage.getItem("token"),
  user: JSON.parse(localStorage.getItem("user") || "null"),
  socket: null,
  // the open room: { id, name, channel, last, joined, joinedBefore, sentSince, ... }
  room: null,
  presence: null,
  typingTimer: null,
  typists: new Map(),
  // what is typed and not yet stored, per room id: [{ clientId, body, at }]
  outboxes: new Map(),
  // who I blocked: id → name
  blocked: new Map(),
};

// How long a push waits for its reply before it is sent again.
const PUSH_TIMEOUT_MS = 10000;
// A connection down this long is shown as offline rather than reconnecting.
const OFFLINE_AFTER_MS = 4000;
// After a gap the page reads from the API from a few messages back: a
// message stored just before another can be broadcast just after it (two
// senders at once), so the last id the page has is not quite enough.
const FILL_MARGIN = 10;
const PAGE = 100;

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { "content-type": "application/json", ...(state.token ? { authorization: `Bearer ${state.token}` } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) {
    const error = json?.error;
    // field errors say which field and why: "name has already been taken"
    const fields = error?.fields ? Object.entries(error.fields).map(([k, v]) => `${k} ${v}`).join(", ") : "";
    const e = new Error(fields || error?.message || `HTTP ${res.status}`);
    e.status = res.status;
    e.retryAfter = error?.retry_after;
    throw e;
  }
  return json;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A random UUID; crypto.randomUUID needs a secure context (https or the
// loopback), getRandomValues does not.
function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// A history position: `<epoch>.<offset>`, the epoch starting with a letter.
const isPosition = (ref) => typeof ref === "string" && /^[a-z][a-z0-9]*\.\d+$/i.test(ref);

// --- the connection banner -------------------------------------------------

const CONNECTION = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline: what you send is kept and sent when back",
};
const conn = { state: null, downSince: null, offlineTimer: null };

function showConnection(s) {
  conn.state = s;
  const banner = $("connection");
  banner.dataset.state = s;
  banner.textContent = CONNECTION[s];
  banner.setAttribute("aria-label", `Connection: ${s}`);
}

function connectionUp() {
  clearTimeout(conn.offlineTimer);
  conn.downSince = null;
  showConnection("connected");
}

function connectionDown() {
  if (conn.downSince === null) {
    conn.downSince = Date.now();
    conn.offlineTimer = setTimeout(() => showConnection("offline"), OFFLINE_AFTER_MS);
  }
  if (!navigator.onLine) showConnection("offline");
  else if (conn.state !== "offline") showConnection("reconnecting");
}

window.addEventListener("offline", () => { if (conn.state) showConnection("offline"); });
window.addEventListener("online", () => {
  if (conn.state) showConnection(state.socket?.isConnected() ? "connected" : "reconnecting");
});

// --- messages ----------------------------------------------------------------

function nameOf(userId) {
  const entry = state.presence && state.presence.state[String(userId)];
  return entry?.user?.name || `user ${userId}`;
}

// A timestamp as people read it: the time today, the date and time before.
function when(iso) {
  const d = new Date(iso);
  const today = new Date().toDateString() === d.toDateString();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return today ? `today ${time}` : `${d.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" })} ${time}`;
}

function messageItem(className, authorName, text, timeText, iso) {
  const li = document.createElement("li");
  li.className = className;
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = authorName;
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = text;
  const time = document.createElement(iso ? "time" : "span");
  time.className = "time";
  time.textContent = timeText;
  if (iso) {
    time.dateTime = iso;
    time.title = new Date(iso).toLocaleString();
  }
  li.append(author, body, time);
  return li;
}

// Shows a message's current state: its text (or that it was deleted),
// whether it was edited, and its author's edit and delete buttons.
function renderMessage(li, m) {
  li.classList.toggle("deleted", !!m.deleted);
  li.querySelector(".body").textContent = m.deleted ? "message deleted" : m.body;
  const me = state.user.name.toLowerCase();
  li.classList.toggle("mention", !m.deleted && m.user_id !== state.user.id && m.body.toLowerCase().includes(`@${me}`));
  li.querySelector(".edited")?.remove();
  li.querySelector(".actions")?.remove();
  if (m.edited_at && !m.deleted) {
    const edited = document.createElement("span");
    edited.className = "edited";
    edited.textContent = "(edited)";
    edited.title = `edited ${new Date(m.edited_at).toLocaleString()}`;
    li.querySelector(".time").before(edited);
  }
  if (m.user_id === state.user.id && !m.deleted) {
    const actions = document.createElement("span");
    actions.className = "actions";
    const edit = document.createElement("button");
    edit.type = "button";
    edit.className = "edit";
    edit.textContent = "Edit";
    edit.setAttribute("aria-label", `Edit message: ${m.body.slice(0, 40)}`);
    edit.onclick = () => startEdit(li, m);
    const del = document.createElement("button");
    del.type = "button";
    del.className = "delete";
    del.textContent = "Delete";
    del.setAttribute("aria-label", `Delete message: ${m.body.slice(0, 40)}`);
    del.onclick = () => change(li, "delete_message", { id: m.id });
    actions.append(edit, del);
    li.append(actions);
  }
}

// Sends an edit or a deletion; the room's broadcast updates every page.
function change(li, event, payload) {
  const room = state.room;
  if (!room?.joined) {
    showMessageError(li, "not connected: try again when back");
    return;
  }
  room.channel.push(event, payload, PUSH_TIMEOUT_MS)
    .receive("ok", ({ message }) => updateMessage(message))
    .receive("error", (r) => showMessageError(li, r?.errors ? Object.entries(r.errors).map(([k, v]) => `${k} ${v}`).join(", ") : r?.reason))
    .receive("timeout", () => showMessageError(li, "no answer: try again"));
}

function showMessageError(li, text) {
  let err = li.querySelector(".error");
  if (!err) {
    err = document.createElement("div");
    err.className = "error";
    err.setAttribute("role", "alert");
    li.append(err);
  }
  err.textContent = text;
}

// Edits in place: Enter saves, Escape cancels.
function startEdit(li, m) {
  const body = li.querySelector(".body");
  const input = document.createElement("input");
  input.className = "edit-body";
  input.value = m.body;
  input.setAttribute("aria-label", "Edit your message");
  body.replaceWith(input);
  input.focus();
  const done = () => {
    input.replaceWith(body);
    li.querySelector(".error")?.remove();
  };
  input.onkeydown = (e) => {
    if (e.key === "Escape") return done();
    if (e.key !== "Enter") return;
    if (!input.value.trim()) return showMessageError(li, "body can't be blank");
    const room = state.room;
    if (!room?.joined) return showMessageError(li, "not connected: try again when back");
    room.channel.push("edit_message", { id: m.id, body: input.value }, PUSH_TIMEOUT_MS)
      .receive("ok", ({ message }) => { done(); updateMessage(message); })
      .receive("error", (r) => showMessageError(li, r?.errors ? Object.entries(r.errors).map(([k, v]) => `${k} ${v}`).join(", ") : r?.reason))
      .receive("timeout", () => showMessageError(li, "no answer: try again"));
  };
}

// An edit or deletion, from a broadcast or a reply.
function updateMessage(m) {
  const li = $("messages").querySelector(`li.message[data-id="${Number(m.id)}"]`);
  if (li) renderMessage(li, m);
}

// Shows a stored message once, in id order, above what is still pending;
// `scroll` false for older messages loaded above.
function addMessage(m, scroll = true) {
  const list = $("messages");
  const shown = list.querySelector(`li.message[data-id="${Number(m.id)}"]`);
  if (shown) {
    // a later state of it (read again after an edit)
    if (m.user_name) renderMessage(shown, m);
    return;
  }
  // the server has it: it is no longer pending, and is not sent again
  if (m.client_id && m.user_id === state.user.id && state.room) settle(state.room.id, m.client_id);
  const author = m.user_name || (m.user_id === state.user.id ? state.user.name : nameOf(m.user_id));
  const li = messageItem("message", author, m.body, when(m.inserted_at), m.inserted_at);
  li.dataset.id = m.id;
  li.dataset.userId = m.user_id;
  renderMessage(li, m);
  let before = list.querySelector("li.pending");
  let prev = before ? before.previousElementSibling : list.lastElementChild;
  while (prev && Number(prev.dataset.id) > m.id) {
    before = prev;
    prev = prev.previousElementSibling;
  }
  list.insertBefore(li, before);
  if (scroll) li.scrollIntoView({ block: "end" });
}

// Scrolled to the top: the page before the oldest shown, kept in view.
async function loadOlder(room) {
  if (room.loadingOlder || room.noOlder) return;
  const first = $("messages").querySelector("li.message");
  if (!first) return;
  room.loadingOlder = true;
  $("older").textContent = "Loading older messages…";
  try {
    const { data } = await api("GET", `/api/v1/rooms/${room.id}/messages?before=${first.dataset.id}&limit=50`);
    if (state.room !== room) return;
    const list = $("messages");
    const from = list.scrollHeight - list.scrollTop;
    data.forEach((m) => addMessage(m, false));
    list.scrollTop = list.scrollHeight - from;
    if (data.length < 50) room.noOlder = true;
    $("older").textContent = room.noOlder ? "The beginning of the room" : "";
  } catch (e) {
    $("older").textContent = `older messages not loaded: ${e.message}`;
  } finally {
    room.loadingOlder = false;
  }
}

function showPending(item) {
  const li = messageItem("pending", state.user.name, item.body, "sending…");
  li.dataset.clientId = item.clientId;
  li.title = "not sent yet: it goes out when the connection is back";
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
}

function outbox(roomId) {
  if (!state.outboxes.has(roomId)) state.outboxes.set(roomId, []);
  return state.outboxes.get(roomId);
}

// Takes a message out of the outbox and its pending line off the page.
function settle(roomId, clientId) {
  const box = outbox(roomId);
  const i = box.findIndex((item) => item.clientId === clientId);
  if (i >= 0) box.splice(i, 1);
  if (state.room?.id !== roomId) return;
  for (const li of $("messages").querySelectorAll("li.pending")) {
    if (li.dataset.clientId === clientId) li.remove();
  }
}

// The page may lack messages (a gap in the history, or a rejoin without a
// position): it reads them from the API from a few messages back of what it
// had then. Called when the gap is known, before what the rejoin replays is
// shown (newer messages, which must not move the starting point).
function needFill(room) {
  const shown = $("messages").querySelectorAll("li.message");
  const from = shown.length >= FILL_MARGIN ? Number(shown[shown.length - FILL_MARGIN].dataset.id) : 0;
  room.fillFrom = room.fillFrom == null ? from : Math.min(room.fillFrom, from);
  room.fillNeeds = (room.fillNeeds || 0) + 1;
  fill(room);
}

// Reads page after page from `room.fillFrom` to the newest message. What
// arrives meanwhile, live, is shown too: the two overlap, and addMessage
// shows each message once. A gap said while it reads makes it read again.
async function fill(room) {
  if (room.filling) return;
  room.filling = true;
  try {
    while (room.fillFrom != null) {
      const needs = room.fillNeeds;
      let after = room.fillFrom;
      for (;;) {
        const { data } = await api("GET", `/api/v1/rooms/${room.id}/messages?after=${after}&limit=${PAGE}`);
        if (state.room !== room) return;
        data.forEach((m) => addMessage(m));
        if (data.length < PAGE) break;
        after = data[data.length - 1].id;
      }
      if (room.fillNeeds === needs) room.fillFrom = null;
    }
  } catch {
    // the server went away again: read again soon, or on the next rejoin
    setTimeout(() => { if (state.room === room && room.joined) fill(room); }, 2000);
  } finally {
    room.filling = false;
  }
}

// Sends one push and waits for its outcome: ok, error, timeout, or
// `disconnected` when the channel errors first.
function pushOnce(room, event, payload) {
  return new Promise((resolve) => {
    room.inflight = resolve;
    room.channel.push(event, payload, PUSH_TIMEOUT_MS)
      .receive("ok", (response) => resolve({ status: "ok", response }))
      .receive("error", (response) => resolve({ status: "error", response }))
      .receive("timeout", () => resolve({ status: "timeout" }));
  }).finally(() => { room.inflight = null; });
}

// Sends the room's outbox, one message at a time (so that they are stored
// in the order they were typed), while the room is joined.
async function flush(room) {
  if (room.flushing) return;
  room.flushing = true;
  try {
    const box = outbox(room.id);
    while (box.length && room.joined && state.room === room) {
      const item = box[0];
      const { status, response } = await pushOnce(room, "new_message", { body: item.body, client_id: item.clientId });
      if (status === "ok") {
        settle(room.id, item.clientId);
        if (state.room === room) {
          addMessage({ id: response.message_id, body: item.body, user_id: state.user.id, user_name: state.user.name, inserted_at: item.at, client_id: item.clientId });
        }
      } else if (status === "error" && response?.reason === "rate_limited") {
        await sleep(response.retry_after || 1000);
      } else if (status === "error") {
        // refused for good: say why, and give the text back
        settle(room.id, item.clientId);
        const why = response?.errors ? Object.entries(response.errors).map(([k, v]) => `${k} ${v}`).join(", ") : response?.reason;
        $("send-error").textContent = `not sent: ${why || "refused"}`;
        if (!$("message").value) $("message").value = item.body;
      }
      // timeout or disconnected: sent again (with the same client id) once
      // the room is joined again; the server stores it once
    }
  } finally {
    room.flushing = false;
  }
}

// --- presence and typing -------------------------------------------------------

function renderPresence() {
  const ul = $("presence");
  ul.innerHTML = "";
  state.presence.list((key, { metas, user }) => {
    const li = document.createElement("li");
    li.dataset.userId = key;
    const status = metas[metas.length - 1].status;
    // the status is the user's: every tab shows the one stored
    if (key === String(state.user.id) && document.activeElement !== $("status")) $("status").value = status;
    li.innerHTML = `<span class="status-${status}">●</span> `;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = user?.name || key;
    const extra = document.createElement("span");
    extra.className = "devices";
    extra.textContent = ` ${status}${metas.length > 1 ? ` · ${metas.length} devices` : ""}`;
    li.append(name, extra);
    if (key !== String(state.user.id)) {
      const dm = document.createElement("button");
      dm.type = "button";
      dm.className = "dm";
      dm.textContent = "Message";
      dm.setAttribute("aria-label", `Message ${user?.name || key} directly`);
      dm.onclick = () => openDirect(Number(key), user?.name || key);
      li.append(dm, blockButton(Number(key), user?.name || key));
    }
    ul.append(li);
  });
}

async function openDirect(id, name) {
  try {
    const { data } = await api("POST", "/api/v1/direct", { user_id: id });
    await loadRooms();
    openRoom(data.id, name, data);
  } catch (e) {
    $("block-error").textContent = `no direct conversation: ${e.message}`;
  }
}

// --- blocks --------------------------------------------------------------------

function blockButton(id, name) {
  const button = document.createElement("button");
  button.type = "button";
  const blocked = state.blocked.has(id);
  button.className = blocked ? "unblock" : "block";
  button.textContent = blocked ? "Unblock" : "Block";
  button.setAttribute("aria-label", `${blocked ? "Unblock" : "Block"} ${name}`);
  button.onclick = () => (blocked ? unblock(id) : block(id, name));
  return button;
}

function renderBlocked() {
  const ul = $("blocked");
  ul.innerHTML = "";
  for (const [id, name] of state.blocked) {
    const li = document.createElement("li");
    li.textContent = `${name} `;
    li.append(blockButton(id, name));
    ul.append(li);
  }
  $("blocked-none").classList.toggle("hidden", state.blocked.size > 0);
  if (state.presence) renderPresence();
}

async function loadBlocked() {
  const { data } = await api("GET", "/api/v1/blocks");
  state.blocked = new Map(data.map((b) => [b.user_id, b.name]));
  renderBlocked();
}

async function block(id, name) {
  try {
    await api("POST", "/api/v1/blocks", { user_id: id });
  } catch (e) {
    $("block-error").textContent = `not blocked: ${e.message}`;
    return;
  }
  $("block-error").textContent = "";
  state.blocked.set(id, name);
  // what they said leaves the page; the server sends nothing more of theirs
  for (const li of $("messages").querySelectorAll(`li.message[data-user-id="${id}"]`)) li.remove();
  state.typists.delete(id);
  renderTyping();
  renderBlocked();
}

async function unblock(id) {
  try {
    await api("DELETE", `/api/v1/blocks/${id}`);
  } catch (e) {
    $("block-error").textContent = `not unblocked: ${e.message}`;
    return;
  }
  $("block-error").textContent = "";
  state.blocked.delete(id);
  renderBlocked();
  // their messages come back with the room's history
  if (state.room) openRoom(state.room.id, state.room.name);
}

function renderTyping() {
  const names = [...state.typists.keys()].map(nameOf);
  $("typing").textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
}

// --- rooms ---------------------------------------------------------------------

// The rooms one is in, with unread counts (direct conversations too).
async function loadRooms() {
  // several may be under way (a join, a notification, the timer): only the
  // last one asked is shown, not an older answer arriving after it
  const seq = (state.roomsSeq = (state.roomsSeq || 0) + 1);
  const { data } = await api("GET", "/api/v1/me/rooms");
  if (seq !== state.roomsSeq) return;
  state.myRooms = data;
  const ul = $("rooms");
  ul.innerHTML = "";
  for (const room of data) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "room";
    const label = room.kind === "direct" ? `@ ${room.name}` : `# ${room.name}`;
    const unread = state.room?.id === room.id ? 0 : room.unread;
    button.textContent = label;
    if (unread > 0) {
      const badge = document.createElement("span");
      badge.className = "unread";
      badge.textContent = String(unread);
      button.append(badge);
    }
    button.setAttribute("aria-label", `${label}${unread > 0 ? `, ${unread} unread` : ""}`);
    li.dataset.roomId = room.id;
    if (state.room?.id === room.id) {
      li.className = "active";
      button.setAttribute("aria-current", "true");
    }
    button.onclick = () => openRoom(room.id, label.slice(2), room);
    li.append(button);
    ul.append(li);
  }
  $("rooms-none").classList.toggle("hidden", data.length > 0);
}

// Searches the room list, a page at a time.
async function searchRooms(more = false) {
  const q = $("room-search").value;
  const after = more ? state.search?.next : null;
  $("search-error").textContent = "";
  try {
    const params = new URLSearchParams({ q, limit: "20" });
    if (after) params.set("after", String(after));
    const { data, next } = await api("GET", `/api/v1/rooms?${params}`);
    const ul = $("room-results");
    if (!more) ul.innerHTML = "";
    for (const room of data) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = `# ${room.name}`;
      button.onclick = () => openRoom(room.id, room.name, room);
      li.append(button);
      ul.append(li);
    }
    state.search = { next };
    $("more-rooms").classList.toggle("hidden", !next);
    if (!more && data.length === 0) $("search-error").textContent = "no room matches";
  } catch (e) {
    $("search-error").textContent = e.message;
  }
}

// Tells the server how far one has read in the open room.
function markRead(room) {
  const last = [...$("messages").querySelectorAll("li.message")].pop();
  if (!last || state.room !== room) return;
  const id = Number(last.dataset.id);
  if (room.readUpTo >= id) return;
  room.readUpTo = id;
  clearTimeout(room.readTimer);
  room.readTimer = setTimeout(() => {
    api("PUT", `/api/v1/rooms/${room.id}/read`, { message_id: id }).catch(() => {});
  }, 300);
}

async function openRoom(id, name, info = null) {
  try {
    await api("POST", `/api/v1/rooms/${id}/members`);
  } catch (e) {
    $("search-error").textContent = `cannot open the room: ${e.message}`;
    if (e.status === 404) { localStorage.removeItem("room"); loadRooms(); }
    return;
  }
  if (state.room) {
    state.room.channel.leave();
    state.room.inflight?.({ status: "disconnected" });
  }
  const known = info || state.myRooms?.find((r) => r.id === id);
  const kind = known?.kind || "room";
  const room = { id, name, kind, last: null, joined: false, joinedBefore: false, sentSince: null, readUpTo: 0 };
  state.room = room;
  localStorage.setItem("room", JSON.stringify({ id, name }));
  $("room-title").textContent = `${kind === "direct" ? "@" : "#"} ${name}`;
  $("room-actions").classList.remove("hidden");
  $("delete-room").classList.toggle("hidden", known?.owner_id !== state.user.id);
  $("room-status").textContent = "";
  $("messages").innerHTML = "";
  outbox(id).forEach(showPending);
  state.typists.clear();
  renderTyping();
  // evaluated on every join and rejoin: the last position seen, if any
  const channel = state.socket.channel(`room:${id}`, () => {
    room.sentSince = room.last;
    return room.last ? { since: room.last } : {};
  });
  room.channel = channel;
  // every event of the room that carries a position moves it on
  channel.onMessage = (_event, payload, ref) => {
    if (isPosition(ref)) room.last = ref;
    return payload;
  };
  // what a room left behind still sends is not this room's
  const on = (event, callback) => channel.on(event, (...args) => { if (state.room === room) callback(...args); });
  state.presence = new Presence(channel);
  state.presence.onSync(renderPresence);
  on("message_history", ({ messages }) => {
    messages.forEach((m) => addMessage(m));
    if (messages.length < 50) room.noOlder = true;
    markRead(room);
    loadRooms().catch(() => {});
  });
  on("new_message", (m) => { addMessage(m); if (document.visibilityState === "visible") markRead(room); });
  on("room_deleted", () => closeRoom("This room was deleted by its owner."));
  on("message_edited", updateMessage);
  on("message_deleted", updateMessage);
  // the history could not bring back everything missed: the API can
  on("history_gap", () => needFill(room));
  on("user_typing", ({ user_id, typing }) => {
    // a rejoin replays the room's broadcasts, one's own included
    if (user_id === state.user.id) return;
    clearTimeout(state.typists.get(user_id));
    if (typing) state.typists.set(user_id, setTimeout(() => { state.typists.delete(user_id); renderTyping(); }, 5000));
    else state.typists.delete(user_id);
    renderTyping();
  });
  const down = () => {
    room.joined = false;
    room.inflight?.({ status: "disconnected" });
  };
  channel.onError(down);
  channel.onClose(down);
  channel.join()
    .receive("ok", () => {
      // on the first join and on every rejoin
      const rejoin = room.joinedBefore;
      room.joinedBefore = true;
      room.joined = true;
      for (const el of ["message", "send", "status"]) $(el).disabled = false;
      if (!rejoin) {
        loadRooms();
      } else if (!room.sentSince) {
        // rejoined without a position to replay from: the API fills in
        needFill(room);
      } else if (room.fillFrom != null) {
        // a fill the last disconnection interrupted
        fill(room);
      }
      flush(room);
    })
    .receive("error", ({ reason }) => { $("send-error").textContent = `cannot join: ${reason}`; });
}

// Leaves the open room's channel and empties the page's middle.
function closeRoom(why) {
  const room = state.room;
  if (room) {
    room.channel.leave();
    room.inflight?.({ status: "disconnected" });
  }
  state.room = null;
  localStorage.removeItem("room");
  $("room-title").textContent = "Pick a room";
  $("messages").innerHTML = "";
  $("presence").innerHTML = "";
  $("older").textContent = "";
  $("room-actions").classList.add("hidden");
  $("room-status").textContent = why || "";
  for (const el of ["message", "send", "status"]) $(el).disabled = true;
  loadRooms().catch(() => {});
}

function send() {
  const room = state.room;
  const body = $("message").value;
  if (!room) return;
  if (!body.trim()) {
    $("send-error").textContent = "message can't be blank";
    return;
  }
  const item = { clientId: newId(), body, at: new Date().toISOString() };
  outbox(room.id).push(item);
  showPending(item);
  $("message").value = "";
  $("send-error").textContent = "";
  stopTyping();
  flush(room);
}

function stopTyping() {
  if (state.typingTimer) {
    clearTimeout(state.typingTimer);
    state.typingTimer = null;
    if (state.room?.joined) state.room.channel.push("typing", { typing: false });
  }
}

function connect() {
  $("signin").classList.add("hidden");
  $("app").classList.remove("hidden");
  $("connection").classList.remove("hidden");
  $("me").textContent = state.user.name;
  $("sign-out").classList.remove("hidden");
  showConnection("connecting");
  state.socket = new Socket("/socket", { params: { token: state.token }, longPollFallbackMs: 2500 });
  state.socket.onOpen(connectionUp);
  state.socket.onClose(connectionDown);
  state.socket.onError(connectionDown);
  state.socket.connect();
  loadBlocked().catch(() => {});
  const notes = state.socket.channel(`notifications:${state.user.id}`);
  notes.on("new_notification", (n) => { showNotification(n); loadRooms().catch(() => {}); });
  // unread counts of the other rooms, now and then
  setInterval(() => { if (document.visibilityState === "visible") loadRooms().catch(() => {}); }, 15000);
  // those kept by the server: a reload shows them again
  notes.join().receive("ok", () => {
    api("GET", "/api/v1/notifications").then(({ data }) => data.forEach(showNotification)).catch(() => {});
  });
  loadRooms().then(() => {
    const last = JSON.parse(localStorage.getItem("room") || "null");
    if (last) openRoom(last.id, last.name);
  }).catch((e) => { if (e.status === 401) forgetSession(); });
}

// Forgets the session here (it ended, or expired) and shows the sign-in.
// A notification, once (by id), newest at the top.
function showNotification(n) {
  const ul = $("notifications");
  if (n.id != null && ul.querySelector(`li[data-id="${Number(n.id)}"]`)) return;
  const li = document.createElement("li");
  if (n.id != null) li.dataset.id = n.id;
  li.className = n.kind === "mention" ? "mention" : "note";
  const text = n.kind === "mention" ? `${n.from.name} mentioned you: ${n.message}` : `${n.from.name}: ${n.message}`;
  li.textContent = text;
  if (n.inserted_at) li.title = new Date(n.inserted_at).toLocaleString();
  const items = [...ul.children];
  const after = items.find((x) => Number(x.dataset.id) < Number(n.id));
  ul.insertBefore(li, after || null);
}

function forgetSession() {
  localStorage.clear();
  location.reload();
}

async function signOut() {
  // the server ends the session and closes its sockets
  try { await api("DELETE", "/api/v1/sessions"); } catch {}
  forgetSession();
}

// Registers (`register`) or signs in, and connects.
async function enter(register) {
  const name = $("name").value;
  const password = $("password").value;
  $("signin-error").textContent = "";
  if (!name.trim()) {
    $("signin-error").textContent = "name can't be blank";
    $("name").focus();
    return;
  }
  try {
    const path = register ? "/api/v1/users" : "/api/v1/sessions";
    const { token, user } = await api("POST", path, { name, password });
    state.token = token;
    state.user = user;
    localStorage.setItem("token", token);
    localStorage.setItem("user", JSON.stringify(user));
    $("password").value = "";
    connect();
  } catch (e) {
    const wait = e.status === 429 && e.retryAfter ? ` (try again in ${Math.ceil(e.retryAfter / 1000)} s)` : "";
    $("signin-error").textContent = `${e.message}${wait}`;
  }
}

$("signin").onsubmit = (e) => { e.preventDefault(); enter(false); };
$("register").onclick = () => enter(true);
$("sign-out").onclick = signOut;
$("new-room").onsubmit = async (e) => {
  e.preventDefault();
  $("room-error").textContent = "";
  try {
    const { data } = await api("POST", "/api/v1/rooms", { name: $("room-name").value });
    $("room-name").value = "";
    await loadRooms();
    openRoom(data.id, data.name);
  } catch (err) {
    // shown under the field, which keeps what was typed
    $("room-error").textContent = err.message;
    $("room-name").focus();
  }
};
$("send").onclick = send;
$("search").onsubmit = (e) => { e.preventDefault(); searchRooms(false); };
$("more-rooms").onclick = () => searchRooms(true);
$("leave-room").onclick = async () => {
  const room = state.room;
  if (!room) return;
  try {
    await api("POST", `/api/v1/rooms/${room.id}/leave`);
    closeRoom(`You left ${room.name}.`);
  } catch (e) {
    $("room-status").textContent = `not left: ${e.message}`;
  }
};
$("delete-room").onclick = async () => {
  const room = state.room;
  if (!room) return;
  try {
    await api("DELETE", `/api/v1/rooms/${room.id}`);
    closeRoom(`You deleted ${room.name}.`);
  } catch (e) {
    $("room-status").textContent = `not deleted: ${e.message}`;
  }
};
document.addEventListener("visibilitychange", () => { if (state.room && document.visibilityState === "visible") markRead(state.room); });
$("messages").addEventListener("scroll", () => {
  if ($("messages").scrollTop < 40 && state.room) loadOlder(state.room);
});
$("message").onkeydown = (e) => {
  if (e.key === "Enter") return send();
  if (!state.room?.joined) return;
  if (!state.typingTimer) state.room.channel.push("typing", { typing: true });
  clearTimeout(state.typingTimer);
  state.typingTimer = setTimeout(stopTyping, 2000);
};
$("status").onchange = () => state.room?.channel.push("update_status", { status: $("status").value });

if (state.token && state.user) connect();
