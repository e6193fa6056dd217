// The room page: history, live messages, who's here, typing hints, the messages this page
// has sent that the server has not acknowledged yet, each message's menu (edit, delete,
// react), mentions, and the read marker.
// Every piece of user data goes into the page as text (textContent), never as HTML.
import { backoffMs, betweenMs } from "/static/backoff.js";
import { end, memberFrame, moderates, personButton, refresh } from "/static/members.js";
import { bodyNodes, mentionsOf } from "/static/mentions.js";

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
const confirmDelete = document.getElementById("confirm-delete");
const confirmDeleteText = document.getElementById("confirm-delete-text");

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
// How long after sending a message its author may edit it (`CHAT_EDIT_WINDOW_MINUTES`).
const EDIT_WINDOW_MS = Number(document.body.dataset.editWindowMinutes) * 60000;
// Messages loaded on each side of one opened from a link (`#msg-ID`, from search).
const AROUND = 25;
// The read marker follows what this page shows, at most this often.
const READ_DEBOUNCE_MS = 400;
// The reactions the menu offers (any other a message has is shown, and toggles, too).
const EMOJI = [
  ["👍", "thumbs up"], ["❤️", "heart"], ["😂", "laughing"],
  ["🎉", "party"], ["😮", "surprised"], ["😢", "sad"],
];

const shown = new Set();      // message ids on the page
const states = new Map();     // message id -> its current state, as the server last sent it
let editing = null;           // {id, editedAt, box}: the message being edited here
let menuOpen = null;          // {id, panel}: the message whose menu is open
let deleting = null;          // the id the delete dialog asks about
let readUpTo = 0;             // the read marker as far as this page knows
let readTimer = null;
// A message opened from a link (`#msg-ID`): shown with the messages around it.
let target = targetOfHash();
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
let resumedBefore = false;    // a welcome came before (so this one is a reconnect's)
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

function targetOfHash() {
  const match = /^#msg-(\d+)$/.exec(location.hash);
  return match ? Number(match[1]) : null;
}

function itemOf(id) {
  return document.getElementById(`msg-${id}`);
}

function messageItem(m) {
  const li = document.createElement("li");
  li.id = `msg-${m.id}`;
  li.dataset.id = String(m.id);
  fill(li, m);
  return li;
}

// The message's line, drawn anew from its state.
function fill(li, m) {
  const myKey = me.toLowerCase();
  li.classList.toggle("mine", m.user === me);
  li.classList.toggle("deleted", m.deleted);
  li.classList.toggle("mentions-me", mentionsOf(m).has(myKey));
  const head = document.createElement("div");
  head.className = "message-head";
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
  head.append(who, when);
  if (m.edited_at && !m.deleted) {
    const edited = document.createElement("span");
    edited.className = "edited";
    edited.textContent = "(edited)";
    edited.title = `edited ${new Date(m.edited_at).toLocaleString()}`;
    head.append(edited);
  }
  if (!m.deleted) head.append(menuButton(m));
  const body = document.createElement("div");
  body.className = "body";
  if (m.deleted) {
    body.classList.add("tombstone");
    body.textContent = "message deleted";
  } else {
    body.append(...bodyNodes(m.body, mentionsOf(m), myKey));
  }
  li.replaceChildren(head, body, reactionsOf(m));
}

function menuButton(m) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "menu-button";
  b.dataset.action = "menu";
  b.textContent = "⋯";
  b.setAttribute("aria-label", `Actions on ${m.user === me ? "your" : `${m.user}'s`} message`);
  b.setAttribute("aria-expanded", "false");
  b.setAttribute("aria-controls", `menu-${m.id}`);
  return b;
}

function reactionsOf(m) {
  const box = document.createElement("div");
  box.className = "reactions";
  for (const [emoji, who] of Object.entries(m.reactions || {})) {
    if (who.length === 0) continue;
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "reaction";
    chip.dataset.action = "react";
    chip.dataset.emoji = emoji;
    const mine = who.includes(me);
    chip.setAttribute("aria-pressed", String(mine));
    chip.title = who.join(", ");
    chip.setAttribute("aria-label", `${emoji} ${who.length}: ${who.join(", ")}`);
    chip.textContent = `${emoji} ${who.length}`;
    box.append(chip);
  }
  box.hidden = box.childElementCount === 0;
  return box;
}

// A message's new state (an `update` frame, the welcome's `updates`, or a message seen
// again): its line is drawn anew, keeping the keyboard where it was.
function update(m) {
  states.set(m.id, m);
  const li = itemOf(m.id);
  if (!li) return;
  if (editing && editing.id === m.id) {
    if (!m.deleted && m.edited_at === editing.editedAt) {
      // Someone reacted while the text is being edited here: the editor stays.
      li.querySelector(".reactions").replaceWith(reactionsOf(m));
      return;
    }
    editing = null;  // saved, or deleted meanwhile
  }
  const focused = li.contains(document.activeElement) ? document.activeElement : null;
  const key = focused ? [focused.dataset.action, focused.dataset.emoji] : null;
  fill(li, m);
  if (menuOpen && menuOpen.id === m.id) {
    if (m.deleted) menuOpen = null;
    else showMenu(li, m);
  }
  if (key) {
    const selector = key[1] === undefined
      ? `[data-action="${key[0]}"]`
      : `[data-action="${key[0]}"][data-emoji="${CSS.escape(key[1])}"]`;
    const again = li.querySelector(selector) || li.querySelector(".menu-button");
    if (again) again.focus();
    else input.focus();
  }
}

// The menu of one message: edit and delete where allowed, and the reactions.
function showMenu(li, m) {
  const panel = document.createElement("div");
  panel.className = "message-menu";
  panel.id = `menu-${m.id}`;
  const action = (text, name) => {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "secondary small";
    b.dataset.action = name;
    b.textContent = text;
    return b;
  };
  // The server refuses a late edit anyway; the menu does not offer one.
  if (m.user === me && Date.now() - new Date(m.ts).getTime() < EDIT_WINDOW_MS) {
    panel.append(action("Edit", "edit"));
  }
  if (m.user === me || moderates()) panel.append(action("Delete", "delete"));
  const react = document.createElement("div");
  react.className = "react-choices";
  react.setAttribute("role", "group");
  react.setAttribute("aria-label", "React");
  const mine = m.reactions || {};
  for (const [emoji, name] of EMOJI) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "emoji";
    b.dataset.action = "react";
    b.dataset.emoji = emoji;
    b.textContent = emoji;
    b.setAttribute("aria-label", `React with ${name}`);
    b.setAttribute("aria-pressed", String((mine[emoji] || []).includes(me)));
    react.append(b);
  }
  panel.append(react);
  li.querySelector(".message-menu")?.remove();
  li.querySelector(".message-head").after(panel);
  li.querySelector(".menu-button")?.setAttribute("aria-expanded", "true");
  menuOpen = { id: m.id, panel };
}

function closeMenu(focusButton) {
  if (!menuOpen) return;
  const li = itemOf(menuOpen.id);
  menuOpen.panel.remove();
  menuOpen = null;
  const button = li?.querySelector(".menu-button");
  if (!button) return;
  button.setAttribute("aria-expanded", "false");
  if (focusButton) button.focus();
}

function send(frame) {
  if (!live) {
    showError("Not connected: try again when the room is live.");
    return false;
  }
  showError("");
  socket.send(JSON.stringify(frame));
  return true;
}

function toggleReaction(id, emoji) {
  const m = states.get(id);
  if (!m) return;
  const on = !((m.reactions || {})[emoji] || []).includes(me);
  send({ type: "react", id, emoji, on });
}

// Edit in place: the text becomes a box; Enter saves (the `update` that comes back is the
// acknowledgement), Shift+Enter breaks the line, Escape gives up.
function startEdit(id) {
  const m = states.get(id);
  const li = itemOf(id);
  if (!m || !li || m.deleted) return;
  closeMenu(false);
  if (editing) cancelEdit(false);
  const box = document.createElement("textarea");
  box.className = "edit-box";
  box.value = m.body;
  box.rows = Math.min(6, m.body.split("\n").length);
  box.maxLength = input.maxLength;
  box.setAttribute("aria-label", "Edit your message (Enter saves, Escape cancels)");
  box.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      cancelEdit(true);
    } else if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      const body = box.value.trim();
      if (body === m.body) {
        cancelEdit(true);
      } else if (!body) {
        showError("A message cannot be empty: delete it instead.");
      } else {
        send({ type: "edit", id, body });
      }
    }
  });
  editing = { id, editedAt: m.edited_at, box };
  li.querySelector(".body").replaceWith(box);
  box.focus();
  box.setSelectionRange(box.value.length, box.value.length);
}

function cancelEdit(focusButton) {
  if (!editing) return;
  const { id } = editing;
  editing = null;
  const li = itemOf(id);
  if (!li) return;
  fill(li, states.get(id));
  if (focusButton) li.querySelector(".menu-button")?.focus();
}

function askDelete(id) {
  const m = states.get(id);
  if (!m) return;
  closeMenu(false);
  deleting = id;
  confirmDeleteText.textContent = m.body.length > 120 ? `${m.body.slice(0, 120)}…` : m.body;
  confirmDelete.showModal();
  document.getElementById("confirm-delete-cancel").focus();
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
  if (shown.has(m.id)) {
    update(m);
    return;
  }
  shown.add(m.id);
  states.set(m.id, m);
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
  markReadSoon();
}

function prepend(messages) {
  const height = list.scrollHeight;
  for (const m of messages.slice().reverse()) {
    if (shown.has(m.id)) continue;
    shown.add(m.id);
    states.set(m.id, m);
    list.insertBefore(messageItem(m), list.firstChild);
    if (oldestId === null || m.id < oldestId) oldestId = m.id;
  }
  list.scrollTop += list.scrollHeight - height;
}

function clearList() {
  for (const li of list.querySelectorAll("li[data-id], li.gap")) li.remove();
  shown.clear();
  states.clear();
  editing = null;
  menuOpen = null;
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
    case "welcome": {
      attempt = 0;
      live = true;
      setStatus("live", "ok");
      const jumped = target !== null && shown.size > 0 && !resumedBefore;
      if (frame.truncated && jumped) {
        // Opened at a message: the messages around it stay, and the newest come below
        // a mark that says some in between are left out.
        const gap = document.createElement("li");
        gap.className = "gap";
        gap.textContent = "Some messages in between are not shown.";
        list.insertBefore(gap, list.querySelector("li.pending"));
      } else if (frame.truncated) {
        // Only the newest messages came: what lies between them and the list is unknown,
        // so the list starts over from them and "load older" fills in the rest.
        clearList();
        older.hidden = false;
      } else if (!resumed) {
        older.hidden = frame.history.length < PAGE;
      }
      frame.history.forEach(append);
      (frame.updates || []).forEach(update);
      setUsers(frame.users);
      flush();
      // Who joined or left while the socket was away: the member list as it is now.
      refresh();
      if (target !== null && !resumedBefore) showTarget();
      resumedBefore = true;
      markReadSoon();
      break;
    }
    case "update":
      update(frame.message);
      break;
    case "read":
      if (frame.room === room) readUpTo = Math.max(readUpTo, frame.up_to);
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

list.addEventListener("click", (event) => {
  const target_ = event.target.closest("button[data-action]");
  if (!target_ || !list.contains(target_)) return;
  const li = target_.closest("li[data-id]");
  if (!li) return;
  const id = Number(li.dataset.id);
  switch (target_.dataset.action) {
    case "menu": {
      const was = menuOpen && menuOpen.id === id;
      closeMenu(false);
      if (!was) {
        showMenu(li, states.get(id));
        menuOpen.panel.querySelector("button").focus();
      }
      break;
    }
    case "edit":
      startEdit(id);
      break;
    case "delete":
      askDelete(id);
      break;
    case "react":
      toggleReaction(id, target_.dataset.emoji);
      break;
  }
});

// Escape closes the open menu, back on its button.
list.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && menuOpen) {
    event.preventDefault();
    closeMenu(true);
  }
});

// A click anywhere else closes the menu.
document.addEventListener("click", (event) => {
  if (!menuOpen) return;
  const li = itemOf(menuOpen.id);
  if (li && li.contains(event.target)) return;
  closeMenu(false);
});

document.getElementById("confirm-delete-ok").addEventListener("click", () => {
  confirmDelete.close();
  if (deleting !== null) send({ type: "delete", id: deleting });
  deleting = null;
  input.focus();
});
document.getElementById("confirm-delete-cancel").addEventListener("click", () => {
  confirmDelete.close();
});
confirmDelete.addEventListener("close", () => {
  if (deleting === null) return;
  const li = itemOf(deleting);
  deleting = null;
  li?.querySelector(".menu-button")?.focus();
});

// The read marker: while the page is in sight, the newest message it shows is read.
function markReadSoon() {
  if (document.visibilityState !== "visible" || lastId <= readUpTo || !live) return;
  // One call per interval however busy the room: the call takes the newest id when it goes.
  if (readTimer !== null) return;
  readTimer = setTimeout(markRead, READ_DEBOUNCE_MS);
}

async function markRead() {
  readTimer = null;
  const upTo = lastId;
  if (document.visibilityState !== "visible" || upTo <= readUpTo) return;
  try {
    const response = await fetch(`/api/rooms/${encodeURIComponent(room)}/read`, {
      method: "PUT",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content,
      },
      body: JSON.stringify({ up_to: upTo }),
    });
    if (response.ok) readUpTo = Math.max(readUpTo, upTo);
  } catch {
    // Offline: the next message or the next welcome tries again.
  }
}

document.addEventListener("visibilitychange", markReadSoon);

// Opened at a message (a search result): the messages around it first, then the socket
// from there on.
async function loadAround(id) {
  const base = `/api/rooms/${encodeURIComponent(room)}/messages`;
  const [before, after] = await Promise.all([
    fetch(`${base}?before=${id + 1}&limit=${AROUND}`, { credentials: "same-origin" }),
    fetch(`${base}?after=${id}&limit=${AROUND}`, { credentials: "same-origin" }),
  ]);
  if (!before.ok || !after.ok) return;
  const older_ = (await before.json()).messages;
  const newer = (await after.json()).messages;
  older_.concat(newer).forEach(append);
  older.hidden = older_.length < AROUND;
}

function showTarget() {
  const li = target === null ? null : itemOf(target);
  for (const was of list.querySelectorAll("li.target")) was.classList.remove("target");
  if (!li) {
    showError("That message is not in this room any more.");
    return;
  }
  li.classList.add("target");
  li.tabIndex = -1;
  li.scrollIntoView({ block: "center" });
  li.focus({ preventScroll: true });
}

window.addEventListener("hashchange", () => {
  target = targetOfHash();
  if (target === null) return;
  if (shown.has(target)) showTarget();
  else location.reload();
});

if (target !== null) {
  loadAround(target).finally(connect);
} else {
  connect();
}
