// The app shell of the signed-in pages: the sidebar's rooms and DMs with unread and mention
// badges kept live from `/ws/me` (and their total in the tab title), the drawer on phones,
// Alt+ArrowDown / Alt+ArrowUp to the next / previous unread conversation, opt-in browser
// notifications, and search.
// Every piece of user data goes into the page as text (textContent), never as HTML.
import { backoffMs, betweenMs } from "/static/backoff.js";

const UNREAD_CAP = 1000;  // the server counts up to this (SPEC "Attention")
const RECONNECT_BASE_MS = 500;
const RECONNECT_CAP_MS = 10000;
const TOO_MANY_RETRY_MS = [30000, 60000];
const SEARCH_PAGE = 20;
// Member events that take the user out of a room.
const GONE = new Set(["leave", "kick", "ban"]);

const me = document.getElementById("me")?.textContent || "";
const current = document.body.dataset.room || "";
const sideRooms = document.getElementById("side-rooms");
const sideDms = document.getElementById("side-dms");
const sidebar = document.getElementById("sidebar");
const drawerToggle = document.getElementById("drawer-toggle");
const baseTitle = document.title;
let attempt = 0;

export function shownCount(n) {
  return n >= UNREAD_CAP ? `${UNREAD_CAP}+` : String(n);
}

// Every entry of a room on the page: the sidebar's, and the rooms page's lists'.
function entries(name) {
  return document.querySelectorAll(`li[data-room="${CSS.escape(name)}"]`);
}

function sideEntries() {
  return [...sideRooms.querySelectorAll("li[data-room]"), ...sideDms.querySelectorAll("li[data-room]")];
}

function setBadge(badge, n) {
  if (!badge) return;
  badge.querySelector(".n").textContent = shownCount(n);
  badge.hidden = n === 0;
}

function setCounts(name, unread, mentions) {
  // The room on the screen is being read: its messages are not waiting anywhere else.
  if (name === current) [unread, mentions] = [0, 0];
  for (const li of entries(name)) {
    li.dataset.unread = String(unread);
    li.dataset.mentions = String(mentions);
    setBadge(li.querySelector(".badge.unread"), unread);
    setBadge(li.querySelector(".badge.mention-count"), mentions);
  }
  updateTitle();
}

function updateTitle() {
  let total = 0;
  for (const li of sideEntries()) total += Number(li.dataset.unread) || 0;
  document.title = total > 0 ? `(${shownCount(total)}) ${baseTitle}` : baseTitle;
}

function badge(kind, suffix) {
  const b = document.createElement("span");
  b.className = `badge ${kind}`;
  b.hidden = true;
  if (kind === "mention-count") b.append("@");
  const n = document.createElement("span");
  n.className = "n";
  n.textContent = "0";
  const hidden = document.createElement("span");
  hidden.className = "visually-hidden";
  hidden.textContent = suffix;
  b.append(n, hidden);
  return b;
}

export function badges() {
  const box = document.createElement("span");
  box.className = "badges";
  box.append(badge("unread", " unread"), badge("mention-count", " mentioning you"));
  return box;
}

// What a DM is called: its other members.
export async function dmLabel(name) {
  const response = await fetch(`/api/rooms/${encodeURIComponent(name)}/members`, { credentials: "same-origin" });
  const members = response.ok ? await response.json() : [];
  const others = members.map((m) => m.username).filter((n) => n !== me);
  return others.length ? others.join(", ") : "Just you";
}

// A conversation the user came into while the page was open: listed in the sidebar, in name
// order; the page's own lists (the rooms page) hear of it by the `chat:room` event.
// A list item for a conversation, with its link and no badges yet: the sidebar's and the rooms
// page's lists are made of these.
export function roomEntry(view, label) {
  const li = document.createElement("li");
  li.dataset.room = view.name;
  li.dataset.kind = view.kind;
  li.dataset.unread = "0";
  li.dataset.mentions = "0";
  const link = document.createElement("a");
  link.href = `/rooms/${encodeURIComponent(view.name)}`;
  link.textContent = label;
  return { li, link };
}

async function addEntry(view) {
  const label = view.kind === "dm" ? await dmLabel(view.name) : `#${view.name}`;
  document.dispatchEvent(new CustomEvent("chat:room", { detail: { view, label } }));
  const list = view.kind === "dm" ? sideDms : sideRooms;
  if (!view.is_member && view.kind !== "dm") return;
  if (list.querySelector(`li[data-room="${CSS.escape(view.name)}"]`)) return;
  const { li, link } = roomEntry(view, label);
  if (view.name === current) link.setAttribute("aria-current", "page");
  li.append(link, badges());
  list.querySelector("li.empty")?.remove();
  const after = [...list.querySelectorAll("li[data-room]")]
    .find((other) => other.querySelector("a").textContent.toLowerCase() > label.toLowerCase());
  list.insertBefore(li, after || null);
}

function removeEntries(name, all) {
  for (const li of entries(name)) {
    if (all || li.closest(".sidebar") || li.dataset.kind !== "public") li.remove();
  }
  updateTitle();
}

async function readRoom(name, add) {
  const response = await fetch(`/api/rooms/${encodeURIComponent(name)}`, { credentials: "same-origin" });
  if (response.status === 404) {
    // No longer the user's to see (left or removed from a private room, or a DM).
    removeEntries(name, false);
    return;
  }
  if (!response.ok) return;
  const view = await response.json();
  if (add) await addEntry(view);
  setCounts(view.name, view.unread, view.mentions);
}

// Every listed room's counts as they are now (after `ready`: nothing is missed after it).
async function readAll() {
  let url = "/api/rooms?limit=100";
  for (let pages = 0; url && pages < 20; pages += 1) {
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) return;
    for (const view of await response.json()) {
      if (entries(view.name).length) setCounts(view.name, view.unread, view.mentions);
    }
    const next = /<([^>]+)>;\s*rel="next"/.exec(response.headers.get("Link") || "");
    url = next ? next[1] : null;
  }
}

// What the badges learn from a socket: `/ws/me`'s frames, or the room page's socket's.
function onFrame(frame) {
  switch (frame.type) {
    case "ready":
    case "welcome":
      attempt = 0;
      readAll();
      break;
    case "activity":
      if (!entries(frame.room).length) {
        readRoom(frame.room, true);  // a conversation new to this page (a DM just opened)
        break;
      }
      notifyOf(frame);
      setCounts(frame.room, frame.unread, frame.mentions);
      break;
    case "read":
      if (entries(frame.room).length) readRoom(frame.room, false);
      break;
    case "shut_out":  // the room page's socket was refused for good (removed, banned)
      removeEntries(frame.room, false);
      break;
  }
}

function connectMe() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/ws/me`);
  socket.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    switch (frame.type) {
      case "ready":
      case "activity":
      case "read":
        onFrame(frame);
        break;
      case "member":
        if (frame.user === me && GONE.has(frame.event)) removeEntries(frame.room, false);
        else if (frame.user === me) readRoom(frame.room, true);
        else if (entries(frame.room).length) readRoom(frame.room, false);
        break;
      case "room":
        if (frame.event === "deleted") removeEntries(frame.room, true);
        else readRoom(frame.room, frame.event === "created" || frame.event === "added");
        break;
    }
  };
  socket.onclose = (event) => {
    if (event.code === 1008) return;  // signed out: the next page load says so
    const wait = event.code === 4429
      ? betweenMs(...TOO_MANY_RETRY_MS)
      : backoffMs(attempt, RECONNECT_BASE_MS, RECONNECT_CAP_MS);
    attempt += 1;
    setTimeout(connectMe, wait);
  };
}

// The drawer (narrow screens): the sidebar slides over the page; Escape or a choice closes it.
function setDrawer(open) {
  drawerToggle.setAttribute("aria-expanded", String(open));
  document.body.classList.toggle("drawer-open", open);
  if (open) sidebar.querySelector("a, input, button")?.focus();
}

drawerToggle.addEventListener("click", () => {
  setDrawer(drawerToggle.getAttribute("aria-expanded") !== "true");
});
// A tap beside the open drawer closes it.
document.addEventListener("click", (event) => {
  if (!document.body.classList.contains("drawer-open")) return;
  if (sidebar.contains(event.target) || drawerToggle.contains(event.target)) return;
  setDrawer(false);
});
sidebar.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && document.body.classList.contains("drawer-open")) {
    setDrawer(false);
    drawerToggle.focus();
  }
});

// Alt+ArrowDown / Alt+ArrowUp (or with Shift): the next / previous conversation with unread
// messages, in the sidebar's order, around from the current one.
function nextUnread(step) {
  const all = sideEntries();
  const here = all.findIndex((li) => li.dataset.room === current);
  const start = here >= 0 ? here : step > 0 ? -1 : all.length;
  for (let i = 1; i <= all.length; i += 1) {
    const li = all[(((start + step * i) % all.length) + all.length) % all.length];
    if (li.dataset.room !== current && Number(li.dataset.unread) > 0) return li;
  }
  return null;
}

document.addEventListener("keydown", (event) => {
  if (!event.altKey || event.ctrlKey || event.metaKey) return;
  if (event.key !== "ArrowDown" && event.key !== "ArrowUp") return;
  event.preventDefault();
  const li = nextUnread(event.key === "ArrowDown" ? 1 : -1);
  if (li) location.assign(li.querySelector("a").href);
});

// Browser notifications, opt-in (SPEC "Attention"): a new mention, or a new message in a DM,
// while the page is hidden. The choice is kept in this browser only.
const NOTIFY_KEY = "chat.notify";
const notifyBox = document.getElementById("notify");
const notifyStatus = document.getElementById("notify-status");

function notifying() {
  return "Notification" in window && Notification.permission === "granted"
    && localStorage.getItem(NOTIFY_KEY) === "1";
}

function notifyOf(frame) {
  const li = sideRooms.querySelector(`li[data-room="${CSS.escape(frame.room)}"]`)
    || sideDms.querySelector(`li[data-room="${CSS.escape(frame.room)}"]`);
  if (!li || !document.hidden || !notifying()) return;
  const newMentions = frame.mentions > (Number(li.dataset.mentions) || 0);
  const newInDm = li.dataset.kind === "dm" && frame.unread > (Number(li.dataset.unread) || 0);
  if (!newMentions && !newInDm) return;
  const name = li.querySelector("a")?.textContent || frame.room;
  const body = newMentions
    ? `${shownCount(frame.mentions)} mentioning you`
    : `${shownCount(frame.unread)} unread`;
  const note = new Notification(name, { body, tag: frame.room });
  note.onclick = () => {
    window.focus();
    location.href = `/rooms/${encodeURIComponent(frame.room)}`;
  };
}

if ("Notification" in window) {
  document.getElementById("notify-option").hidden = false;
  notifyBox.checked = notifying();
  notifyBox.addEventListener("change", async () => {
    if (!notifyBox.checked) {
      localStorage.removeItem(NOTIFY_KEY);
      notifyStatus.textContent = "";
      return;
    }
    const permission = await Notification.requestPermission();
    if (permission === "granted") {
      localStorage.setItem(NOTIFY_KEY, "1");
      notifyStatus.textContent = "";
    } else {
      notifyBox.checked = false;
      notifyStatus.textContent = "The browser did not allow notifications for this site.";
    }
  });
}

// Search: the server's results as links to each message in its room, with those around it.
const searchForm = document.getElementById("search");
const searchInput = document.getElementById("search-q");
const searchStatus = document.getElementById("search-status");
const results = document.getElementById("search-results");
const moreResults = document.getElementById("search-more");
let nextResults = null;  // the next page's URL, from the answer's Link header

function roomLabel(name) {
  const link = entries(name)[0]?.querySelector("a");
  if (link) return link.textContent;
  return name.startsWith("dm-") ? "direct message" : `#${name}`;
}

function resultItem(m) {
  const li = document.createElement("li");
  li.dataset.id = String(m.id);
  const meta = document.createElement("span");
  meta.className = "result-meta";
  const where = document.createElement("span");
  where.className = "result-room";
  where.textContent = roomLabel(m.room);
  const who = document.createElement("span");
  who.className = "result-user";
  who.textContent = m.user;
  const when = document.createElement("time");
  when.dateTime = m.ts;
  when.textContent = new Date(m.ts).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  meta.append(where, who, when);
  const link = document.createElement("a");
  link.className = "result-body";
  link.href = `/rooms/${encodeURIComponent(m.room)}#msg-${m.id}`;
  link.textContent = m.body;
  li.append(meta, link);
  return li;
}

async function searchPage(url, append) {
  searchStatus.textContent = "Searching…";
  const response = await fetch(url, { credentials: "same-origin" });
  if (!response.ok) {
    let detail = `Search failed (${response.status}).`;
    if (response.status === 422) {
      try {
        const data = await response.json();
        const said = Array.isArray(data.detail) ? data.detail.map((d) => d.msg).join("; ") : data.detail;
        if (said) detail = `Cannot search for that: ${said}.`;
      } catch {
        // Not JSON: the status says enough.
      }
    }
    if (!append) results.hidden = true;
    moreResults.hidden = true;
    searchStatus.textContent = detail;
    return;
  }
  const { messages } = await response.json();
  const items = messages.map(resultItem);
  if (append) results.append(...items);
  else results.replaceChildren(...items);
  const count = results.childElementCount;
  results.hidden = count === 0;
  const next = /<([^>]+)>;\s*rel="next"/.exec(response.headers.get("Link") || "");
  nextResults = next ? next[1] : null;
  moreResults.hidden = nextResults === null;
  searchStatus.textContent = count === 0 ? "No messages found."
    : count === 1 ? "1 message found." : `${count} messages found${nextResults ? " so far" : ""}.`;
  if (append && items.length) items[0].querySelector("a").focus();
}

searchForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const q = searchInput.value.trim();
  if (!q) return;
  searchPage(`/api/search?q=${encodeURIComponent(q)}&limit=${SEARCH_PAGE}`, false);
});

moreResults.addEventListener("click", () => {
  if (nextResults) searchPage(nextResults, true);
});

updateTitle();
// The room page's own socket already carries `activity` and `read` for every room of the
// user: one socket per tab, against the per-user limit. Other pages listen on `/ws/me`.
if (current) document.addEventListener("chat:frame", (event) => onFrame(event.detail));
else connectMe();
