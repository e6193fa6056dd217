// The room page: history, live messages, who's here, typing hints, the messages this page
// has sent that the server has not acknowledged yet, each message's menu (edit, delete,
// react), and the read marker. How one message looks is static/message_view.js; the layout
// around the messages (groups, days, "New" line, start of the room, the jump to new
// messages) is static/timeline.js.
// Every piece of user data goes into the page as text (textContent), never as HTML.
import { backoffMs, betweenMs } from "/static/backoff.js";
import { end, memberFrame, moderates, refresh } from "/static/members.js";
import { fill, messageItem, reactionsOf } from "/static/message_view.js";
import { newMessagesJump, placeUnreadLine, relayout, setStart } from "/static/timeline.js";
import { composer } from "/static/composer.js";
import { connectionBanner } from "/static/connection.js";
import { Outbox, outboxItem } from "/static/outbox.js";

const room = document.body.dataset.room;
const me = document.body.dataset.user;
const list = document.getElementById("messages");
const users = document.getElementById("users");
const status = document.getElementById("status");
const typing = document.getElementById("typing");
const errorLine = document.getElementById("error");
const form = document.getElementById("send");
const input = document.getElementById("body");
const BODY_MAX = Number(form.dataset.max);
const older = document.getElementById("older");
const notice = document.getElementById("notice");
const confirmDelete = document.getElementById("confirm-delete");
const confirmDeleteText = document.getElementById("confirm-delete-text");
const roomTitle = document.getElementById("room-title").textContent;

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
// Older messages load when the list is scrolled this close to its top.
const OLDER_MARGIN_PX = 120;
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
// The read marker when the page opened: the "New" line stands above the first message after
// it, and groups do not reach across it.
const readOnEntry = Number(document.body.dataset.readUpTo) || 0;
let loadingOlder = false;
let batch = false;            // many messages going in at once: one layout after them
// A message opened from a link (`#msg-ID`): shown with the messages around it.
let target = targetOfHash();
// Messages typed and not yet acknowledged, kept across reloads (static/outbox.js). Only the
// first is ever on the wire: were two in flight, a later one could be stored before an
// earlier one that was refused for the rate limit.
const outbox = new Outbox(me, room, () => { renderOutbox(); flush(); });
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
  box.maxLength = BODY_MAX;
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

// The waiting messages, below every stored one, as the outbox holds them now.
function renderOutbox() {
  const stick = atBottom();
  for (const li of list.querySelectorAll("li.pending")) li.remove();
  for (const entry of outbox.entries()) list.append(outboxItem(entry, me, outbox.sending(entry.nonce)));
  if (stick) list.scrollTop = list.scrollHeight;
}

function atBottom() {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
}

// The groups, day separators and start-of-room marker, after the list changed.
function layout() {
  if (batch) return;
  setStart(list, older.hidden, roomTitle);
  relayout(list, readOnEntry);
}

// Messages put in by `put`, laid out once after them; the list stays at its end if it was.
function inBatch(put) {
  const stick = atBottom();
  batch = true;
  try {
    put();
  } finally {
    batch = false;
  }
  layout();
  if (stick) list.scrollTop = list.scrollHeight;
}

// A message into the list, in order; true if it is new and came in below what the reader,
// scrolled up, is looking at.
function append(m) {
  if (m.user === me && m.nonce) outbox.acknowledged(m.nonce);
  if (shown.has(m.id)) {
    update(m);
    return false;
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
  layout();
  if (stick || m.user === me) list.scrollTop = list.scrollHeight;
  markReadSoon();
  return !stick && m.user !== me;
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
  layout();
  list.scrollTop += list.scrollHeight - height;
}

function clearList() {
  for (const li of list.querySelectorAll("li[data-id], li.gap, li.marker")) li.remove();
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

// Put the first waiting message on the wire, if it may go now.
function flush() {
  if (!live) return;
  const head = outbox.next();
  if (!head) return;
  renderOutbox();
  socket.send(JSON.stringify({ type: "message", body: head.body, nonce: head.nonce }));
}

function refused(frame) {
  if (frame.nonce === undefined || !outbox.sending(frame.nonce)) {
    showError(frame.detail);
    return;
  }
  if (frame.code === "rate_limited") {
    // By itself after `retry_after`, the messages after it still waiting behind it.
    outbox.hold(frame.nonce, (Number(frame.retry_after) || 1) * 1000);
  } else if (frame.code === "unavailable") {
    outbox.hold(frame.nonce, betweenMs(...UNAVAILABLE_RETRY_MS));
  } else {
    // Refused for what it is: it stays in the list with the reason, Retry and Discard.
    showError(`Not sent: ${frame.detail}.`);
    outbox.refuse(frame.nonce, frame.detail);
  }
}

function wsUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const since = lastId ? `?since=${lastId}` : "";
  return `${scheme}//${location.host}/ws/rooms/${encodeURIComponent(room)}${since}`;
}

function connect() {
  clearTimeout(retryTimer);
  retryTimer = null;
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
  banner.online();
  input.disabled = true;
  form.querySelector("button[type=submit]").disabled = true;
  // Who is here is no longer ours to know.
  users.replaceChildren();
  end();
  // Nor is the room the sidebar's to list.
  document.dispatchEvent(new CustomEvent("chat:frame", { detail: { type: "shut_out", room } }));
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
  // What was on the wire may or may not have been stored: it goes again after the next
  // welcome (unless the welcome's history holds it), with the same nonce, so it is never
  // stored twice.
  outbox.lost();
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
    case 4429: {
      setStatus("Too many open connections — close other tabs", "bad");
      const wait = betweenMs(...TOO_MANY_RETRY_MS);
      banner.offline("Too many connections at once: close other tabs of this chat, or wait. " +
        "Messages you send wait here until then.", Date.now() + wait);
      retryTimer = setTimeout(connect, wait);
      return;
    }
    default: {
      // 1012 (restart), 1013 (too slow), a lost network: come back and catch up.
      setStatus("offline, retrying…", "bad");
      const wait = backoffMs(attempt, RECONNECT_BASE_MS, RECONNECT_CAP_MS);
      // The first quick retry usually succeeds: the banner waits for a second failure.
      if (attempt > 0) {
        banner.offline("Offline: not connected to the server. Messages you send wait here " +
          "and go when the connection is back.", Date.now() + wait);
      }
      retryTimer = setTimeout(connect, wait);
      attempt += 1;
    }
  }
}

function handle(frame) {
  // The app shell keeps the sidebar's badges from this socket's frames (no second socket).
  if (frame.type === "welcome" || frame.type === "activity" || frame.type === "read") {
    document.dispatchEvent(new CustomEvent("chat:frame", { detail: frame }));
  }
  switch (frame.type) {
    case "welcome": {
      attempt = 0;
      setStatus("live", "ok");
      banner.online();
      // Whatever went wrong before is over: no error line from then stays.
      showError("");
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
      inBatch(() => frame.history.forEach(append));
      (frame.updates || []).forEach(update);
      if (!resumedBefore && target === null) showUnread();
      setUsers(frame.users);
      // Live only now: the history has acknowledged what it holds of the outbox, which is
      // not sent again.
      live = true;
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
      if (append(frame)) jump.arrived();
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

const compose = composer({
  form,
  input,
  counter: document.getElementById("body-counter"),
  user: me,
  room,
  max: BODY_MAX,
  send: (body) => {
    outbox.add(body);
    list.scrollTop = list.scrollHeight;
    return true;
  },
  problem: showError,
  typed: () => {
    const now = Date.now();
    if (live && now - lastTypingSent > TYPING_SEND_MS) {
      lastTypingSent = now;
      socket.send(JSON.stringify({ type: "typing" }));
    }
  },
});

// Retry or discard a message the server refused.
list.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-outbox]");
  const li = button?.closest("li.pending");
  if (!li) return;
  showError("");
  if (button.dataset.outbox === "retry") {
    outbox.retry(li.dataset.nonce);
  } else {
    const entry = outbox.get(li.dataset.nonce);
    outbox.remove(li.dataset.nonce);
    // Its text is not lost to a slip: back into an empty composer.
    if (entry) compose.restore(entry.body);
    input.focus();
  }
});

// Older messages, a page at a time: by the button, or by scrolling to the top of the list
// (where the reader was stays in place).
async function loadOlder() {
  if (oldestId === null || loadingOlder) return;
  loadingOlder = true;
  try {
    const generation = listGeneration;
    const response = await fetch(
      `/api/rooms/${encodeURIComponent(room)}/messages?before=${oldestId}&limit=${PAGE}`,
      { credentials: "same-origin" });
    if (!response.ok) return;
    const { messages } = await response.json();
    if (generation !== listGeneration) return;
    older.hidden = messages.length < PAGE;
    prepend(messages);
  } finally {
    loadingOlder = false;
  }
}

older.addEventListener("click", loadOlder);
list.addEventListener("scroll", () => {
  if (!older.hidden && list.scrollTop < OLDER_MARGIN_PX) loadOlder();
});

const jump = newMessagesJump(list, document.getElementById("jump"), atBottom);

// Entering the room: the "New" line above the first unread message, shown at the top of the
// list if it fits, else the newest messages.
function showUnread() {
  if (!placeUnreadLine(list, readOnEntry, me)) return;
  // The list is the line's offset parent (position: relative).
  const line = list.querySelector("li.unread-line");
  if (line.offsetTop < list.scrollTop) list.scrollTop = Math.max(0, line.offsetTop - 8);
}

const banner = connectionBanner({
  banner: document.getElementById("offline"),
  message: document.getElementById("offline-message"),
  countdown: document.getElementById("offline-countdown"),
  retry: document.getElementById("reconnect"),
  onRetry: () => {
    if (socket === null) connect();
  },
});

// The network is back: no need to wait out the backoff.
window.addEventListener("online", () => {
  if (socket === null && retryTimer !== null) connect();
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
  inBatch(() => older_.concat(newer).forEach(append));
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

renderOutbox();
// Only one tab of the room sends the outbox (static/outbox.js): this one, once it may.
outbox.claim(flush);
if (target !== null) {
  loadAround(target).finally(connect);
} else {
  input.focus();
  connect();
}
