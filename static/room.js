// The room page: history, live messages, who's here, typing hints, and the messages this page
// has sent that the server has not acknowledged yet.
// Every piece of user data goes into the page as text (textContent), never as HTML.
import { backoffMs, betweenMs } from "/static/backoff.js";
import { end, memberFrame, personButton, refresh } from "/static/members.js";

const room = document.body.dataset.room;
const me = document.body.dataset.user;
const list = document.getElementById("messages");
const users = document.getElementById("users");
const status = document.getElementById("status");
const reconnect = document.getElementById("reconnect");
const typing = document.getElementById("typing");
const errorLine = document.getElementById("error");
const form = document.getElementById("send");
const input = document.getElementById("body");
const older = document.getElementById("older");
const notice = document.getElementById("notice");

const TYPING_SEND_MS = 2000;
const TYPING_SHOW_MS = 3000;
const RECONNECT_BASE_MS = 500;
const RECONNECT_CAP_MS = 10000;
// 4429: the user holds too many sockets, or this one misbehaved. Coming back at once would
// only be refused again, so wait long, or until the user asks.
const TOO_MANY_RETRY_MS = [30000, 60000];
// `unavailable`: the server's storage is down for a moment.
const UNAVAILABLE_RETRY_MS = [2000, 5000];
const PAGE = 50;

const shown = new Set();      // message ids on the page
// Messages typed here and not yet acknowledged, in the order typed: nonce -> entry. Only the
// first is ever on the wire ("sending"): were two in flight, a later one could be stored
// before an earlier one that was refused for the rate limit. The first may also be "held"
// until a retry time; the others are "queued".
const pending = new Map();
let lastId = 0;               // newest message id seen: resume point
let oldestId = null;          // for scrolling back
let listGeneration = 0;       // bumped when the list is cleared, so older pages for it are dropped
let socket = null;
let live = false;             // `socket` has had its welcome
let resumed = false;          // `socket` was opened with `since`
let attempt = 0;              // reconnect attempts since the last welcome
let retryTimer = null;
let lastTypingSent = 0;
const typers = new Map();     // user -> timer

function setStatus(text, cls) {
  status.textContent = text;
  status.className = "status " + (cls || "");
}

function showError(text) {
  errorLine.textContent = text;
  errorLine.hidden = !text;
}

function messageItem(m) {
  const li = document.createElement("li");
  li.dataset.id = String(m.id);
  if (m.user === me) li.className = "mine";
  // Another's name offers their card ("Message").
  let who;
  if (m.user === me) {
    who = document.createElement("span");
    who.className = "who";
    who.textContent = m.user;
  } else {
    who = personButton(m.user, "who");
  }
  const when = document.createElement("time");
  when.dateTime = m.ts;
  when.textContent = new Date(m.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  when.title = m.ts;
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = m.body;
  li.append(who, when, body);
  return li;
}

function pendingItem(body) {
  const li = document.createElement("li");
  li.className = "mine pending";
  li.title = "sending…";
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = me;
  const text = document.createElement("span");
  text.className = "body";
  text.textContent = body;
  li.append(who, text);
  return li;
}

function atBottom() {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
}

function append(m) {
  if (m.user === me && m.nonce && pending.has(m.nonce)) acknowledged(m.nonce);
  if (shown.has(m.id)) return;
  shown.add(m.id);
  const stick = atBottom();
  // Ids grow within a room: insert in order even if frames cross. Messages still pending
  // stay below every stored one.
  let before = null;
  if (m.id < lastId) {
    before = Array.from(list.children).find((li) => Number(li.dataset.id) > m.id) || null;
  }
  list.insertBefore(messageItem(m), before || list.querySelector("li.pending"));
  lastId = Math.max(lastId, m.id);
  if (oldestId === null || m.id < oldestId) oldestId = m.id;
  if (stick || m.user === me) list.scrollTop = list.scrollHeight;
}

function prepend(messages) {
  const height = list.scrollHeight;
  for (const m of messages.slice().reverse()) {
    if (shown.has(m.id)) continue;
    shown.add(m.id);
    list.insertBefore(messageItem(m), list.firstChild);
    if (oldestId === null || m.id < oldestId) oldestId = m.id;
  }
  list.scrollTop += list.scrollHeight - height;
}

function clearList() {
  for (const li of list.querySelectorAll("li[data-id]")) li.remove();
  shown.clear();
  oldestId = null;
  listGeneration += 1;
}

function setUsers(names) {
  users.replaceChildren(...names.map((name) => {
    const li = document.createElement("li");
    li.textContent = name;
    if (name === me) li.className = "me";
    return li;
  }));
}

function showTyping(user) {
  clearTimeout(typers.get(user));
  typers.set(user, setTimeout(() => { typers.delete(user); renderTyping(); }, TYPING_SHOW_MS));
  renderTyping();
}

function renderTyping() {
  const names = Array.from(typers.keys());
  typing.textContent = names.length === 0 ? "" :
    names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
}

function newNonce() {
  // getRandomValues, not randomUUID: the latter only exists on HTTPS and localhost.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function firstPending() {
  return pending.values().next().value;
}

// Put the first pending message on the wire, if it may go now.
function flush() {
  const head = firstPending();
  if (!head || head.state !== "queued" || !live) return;
  head.state = "sending";
  head.item.title = "sending…";
  socket.send(JSON.stringify({ type: "message", body: head.body, nonce: head.nonce }));
}

function acknowledged(nonce) {
  pending.get(nonce).item.remove();
  pending.delete(nonce);
  flush();
}

function hold(entry, ms) {
  entry.state = "held";
  entry.item.title = `waiting ${Math.ceil(ms / 1000)} s to send again…`;
  setTimeout(() => {
    if (pending.get(entry.nonce) !== entry) return;
    entry.state = "queued";
    flush();
  }, ms);
}

function refused(frame) {
  const entry = frame.nonce === undefined ? undefined : pending.get(frame.nonce);
  if (!entry || entry.state !== "sending") {
    showError(frame.detail);
    return;
  }
  if (frame.code === "rate_limited") {
    hold(entry, (Number(frame.retry_after) || 1) * 1000);
    return;
  }
  if (frame.code === "unavailable") {
    hold(entry, betweenMs(...UNAVAILABLE_RETRY_MS));
    return;
  }
  // Refused for what it is: sending it again would be refused again. Its text goes back
  // where the user can copy or fix it.
  entry.item.remove();
  pending.delete(entry.nonce);
  if (input.value === "") {
    input.value = entry.body;
    showError(`Not sent: ${frame.detail}.`);
  } else {
    showError(`Not sent: ${frame.detail}: ${entry.body}`);
  }
  flush();
}

function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const since = lastId ? `?since=${lastId}` : "";
  return `${scheme}//${location.host}/ws/rooms/${encodeURIComponent(room)}${since}`;
}

function connect() {
  clearTimeout(retryTimer);
  retryTimer = null;
  reconnect.hidden = true;
  setStatus(lastId ? "reconnecting…" : "connecting…");
  resumed = lastId !== 0;
  socket = new WebSocket(wsUrl());
  socket.onmessage = (event) => handle(JSON.parse(event.data));
  socket.onclose = (event) => closed(event.code, event.reason);
}

// Shut out of the room for good (removed, banned, or no such room): say so, and stop.
function shutOut(text) {
  notice.textContent = text;
  notice.hidden = false;
  input.disabled = true;
  form.querySelector("button[type=submit]").disabled = true;
  // Who is here is no longer ours to know.
  users.replaceChildren();
  end();
}

// The close reason says why: "removed from the room", "banned from the room", ...
function refusal(reason) {
  if (/banned/i.test(reason)) return "You are banned from this room.";
  if (/removed/i.test(reason)) return "You were removed from this room.";
  if (/left/i.test(reason)) return "You left this room.";
  return reason ? `You may not be in this room: ${reason}.` : "You may not be in this room.";
}

function closed(code, reason) {
  socket = null;
  live = false;
  const head = firstPending();
  // It may or may not have been stored: it goes again after the next welcome (unless the
  // welcome's history holds it), with the same nonce, so it is never stored twice.
  if (head && head.state === "sending") head.state = "queued";
  switch (code) {
    case 1008:
      // The session is gone (expired token, signed out elsewhere): sign in again.
      setStatus("signed out", "bad");
      location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
      return;
    case 4403:
      setStatus("You are not allowed in this room", "bad");
      shutOut(refusal(reason));
      return;
    case 4404:
      setStatus("no such room", "bad");
      shutOut("This room does not exist.");
      return;
    case 4429:
      setStatus("Too many open connections — close other tabs", "bad");
      reconnect.hidden = false;
      retryTimer = setTimeout(connect, betweenMs(...TOO_MANY_RETRY_MS));
      return;
    default:
      // 1012 (restart), 1013 (too slow), a lost network: come back and catch up.
      setStatus("offline, retrying…", "bad");
      retryTimer = setTimeout(connect, backoffMs(attempt, RECONNECT_BASE_MS, RECONNECT_CAP_MS));
      attempt += 1;
  }
}

function handle(frame) {
  switch (frame.type) {
    case "welcome":
      attempt = 0;
      live = true;
      setStatus("live", "ok");
      if (frame.truncated) {
        // Only the newest messages came: what lies between them and the list is unknown,
        // so the list starts over from them and "load older" fills in the rest.
        clearList();
        older.hidden = false;
      } else if (!resumed) {
        older.hidden = frame.history.length < PAGE;
      }
      frame.history.forEach(append);
      setUsers(frame.users);
      flush();
      // Who joined or left while the socket was away: the member list as it is now.
      refresh();
      break;
    case "message":
      append(frame);
      typers.delete(frame.user);
      renderTyping();
      break;
    case "presence":
      setUsers(frame.users);
      break;
    case "member":
      memberFrame(frame);
      break;
    case "typing":
      if (frame.user !== me) showTyping(frame.user);
      break;
    case "error":
      refused(frame);
      break;
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const body = input.value.trim();
  if (!body) return;
  const nonce = newNonce();
  const item = pendingItem(body);
  pending.set(nonce, { nonce, body, item, state: "queued" });
  list.append(item);
  list.scrollTop = list.scrollHeight;
  input.value = "";
  showError("");
  flush();
});

input.addEventListener("input", () => {
  const now = Date.now();
  if (live && now - lastTypingSent > TYPING_SEND_MS) {
    lastTypingSent = now;
    socket.send(JSON.stringify({ type: "typing" }));
  }
});

older.addEventListener("click", async () => {
  if (oldestId === null) return;
  const generation = listGeneration;
  const response = await fetch(
    `/api/rooms/${encodeURIComponent(room)}/messages?before=${oldestId}&limit=${PAGE}`,
    { credentials: "same-origin" });
  if (!response.ok) return;
  const { messages } = await response.json();
  if (generation !== listGeneration) return;
  prepend(messages);
  older.hidden = messages.length < PAGE;
});

reconnect.addEventListener("click", () => {
  if (socket === null) connect();
});

connect();
