// The chat page: the official phoenix client for the socket, channels and
// presence; the JSON API for sign-in, rooms and history.
import { Socket, Presence } from "/assets/phoenix.mjs";

const $ = (id) => document.getElementById(id);
const state = { token: localStorage.getItem("token"), user: JSON.parse(localStorage.getItem("user") || "null"), socket: null, room: null, channel: null, presence: null, typingTimer: null, typists: new Map() };

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { "content-type": "application/json", ...(state.token ? { authorization: `Bearer ${state.token}` } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = res.status === 204 ? null : await res.json();
  if (!res.ok) throw new Error(json?.error?.message || `HTTP ${res.status}`);
  return json;
}

function nameOf(userId) {
  const entry = state.presence && state.presence.state[String(userId)];
  return entry?.user?.name || `user ${userId}`;
}

function addMessage(m) {
  if ($("messages").querySelector(`[data-id="${m.id}"]`)) return;
  const li = document.createElement("li");
  li.dataset.id = m.id;
  li.className = "message";
  const author = document.createElement("span");
  author.className = "author";
  author.textContent = m.user_id === state.user.id ? state.user.name : nameOf(m.user_id);
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = m.body;
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = new Date(m.inserted_at).toLocaleTimeString();
  li.append(author, body, time);
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
}

function renderPresence() {
  const ul = $("presence");
  ul.innerHTML = "";
  state.presence.list((key, { metas, user }) => {
    const li = document.createElement("li");
    li.dataset.userId = key;
    const status = metas[metas.length - 1].status;
    li.innerHTML = `<span class="status-${status}">●</span> `;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = user?.name || key;
    const extra = document.createElement("span");
    extra.className = "devices";
    extra.textContent = ` ${status}${metas.length > 1 ? ` · ${metas.length} devices` : ""}`;
    li.append(name, extra);
    ul.append(li);
  });
}

function renderTyping() {
  const names = [...state.typists.keys()].map(nameOf);
  $("typing").textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
}

async function loadRooms() {
  const { data } = await api("GET", "/api/v1/rooms");
  const ul = $("rooms");
  ul.innerHTML = "";
  for (const room of data) {
    const li = document.createElement("li");
    li.textContent = `# ${room.name}`;
    li.dataset.roomId = room.id;
    if (state.room === room.id) li.className = "active";
    li.onclick = () => openRoom(room.id, room.name);
    ul.append(li);
  }
}

async function openRoom(id, name) {
  await api("POST", `/api/v1/rooms/${id}/members`);
  if (state.channel) state.channel.leave();
  state.room = id;
  localStorage.setItem("room", JSON.stringify({ id, name }));
  $("room-title").textContent = `# ${name}`;
  $("messages").innerHTML = "";
  state.typists.clear();
  renderTyping();
  const channel = state.socket.channel(`room:${id}`);
  state.channel = channel;
  state.presence = new Presence(channel);
  state.presence.onSync(renderPresence);
  channel.on("message_history", ({ messages }) => messages.forEach(addMessage));
  channel.on("new_message", addMessage);
  channel.on("user_typing", ({ user_id, typing }) => {
    clearTimeout(state.typists.get(user_id));
    if (typing) state.typists.set(user_id, setTimeout(() => { state.typists.delete(user_id); renderTyping(); }, 5000));
    else state.typists.delete(user_id);
    renderTyping();
  });
  channel.join()
    .receive("ok", () => {
      for (const el of ["message", "send", "status"]) $(el).disabled = false;
      $("status").value = "online";
      loadRooms();
    })
    .receive("error", ({ reason }) => { $("send-error").textContent = `cannot join: ${reason}`; });
}

function send() {
  const body = $("message").value;
  state.channel.push("new_message", { body })
    .receive("ok", () => { $("message").value = ""; $("send-error").textContent = ""; stopTyping(); })
    .receive("error", (e) => { $("send-error").textContent = e.reason === "invalid" ? `message ${e.errors.body}` : e.reason; });
}

function stopTyping() {
  if (state.typingTimer) {
    clearTimeout(state.typingTimer);
    state.typingTimer = null;
    state.channel?.push("typing", { typing: false });
  }
}

function connect() {
  $("signin").classList.add("hidden");
  $("app").classList.remove("hidden");
  $("me").textContent = state.user.name;
  state.socket = new Socket("/socket", { params: { token: state.token }, longPollFallbackMs: 2500 });
  state.socket.onError(() => {});
  state.socket.connect();
  const notes = state.socket.channel(`notifications:${state.user.id}`);
  notes.on("new_notification", ({ message, from }) => {
    const li = document.createElement("li");
    li.textContent = `${from.name}: ${message}`;
    $("notifications").append(li);
  });
  notes.join();
  loadRooms().then(() => {
    const last = JSON.parse(localStorage.getItem("room") || "null");
    if (last) openRoom(last.id, last.name);
  }).catch(() => signOut());
}

function signOut() {
  localStorage.clear();
  location.reload();
}

$("sign-in").onclick = async () => {
  try {
    const { token, user } = await api("POST", "/api/v1/sessions", { name: $("name").value });
    state.token = token;
    state.user = user;
    localStorage.setItem("token", token);
    localStorage.setItem("user", JSON.stringify(user));
    connect();
  } catch (e) {
    $("signin-error").textContent = e.message;
  }
};
$("name").onkeydown = (e) => { if (e.key === "Enter") $("sign-in").click(); };
$("create-room").onclick = async () => {
  const { data } = await api("POST", "/api/v1/rooms", { name: $("room-name").value });
  $("room-name").value = "";
  await loadRooms();
  openRoom(data.id, data.name);
};
$("send").onclick = send;
$("message").onkeydown = (e) => {
  if (e.key === "Enter") return send();
  if (!state.typingTimer) state.channel.push("typing", { typing: true });
  clearTimeout(state.typingTimer);
  state.typingTimer = setTimeout(stopTyping, 2000);
};
$("status").onchange = () => state.channel.push("update_status", { status: $("status").value });

if (state.token && state.user) connect();
