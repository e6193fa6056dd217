// The rooms page: the "New message" dialog, unread badges kept live, and search.
import { backoffMs, betweenMs } from "/static/backoff.js";

// The "New message" dialog: the form in it posts to /dms like any form; this only opens and
// closes it.
const dialog = document.getElementById("new-message-dialog");
const opener = document.getElementById("new-message");
const cancel = document.getElementById("new-message-cancel");
const input = document.getElementById("dm-users");

opener.addEventListener("click", () => {
  dialog.showModal();
  input.focus();
});
cancel.addEventListener("click", () => {
  dialog.close();
  opener.focus();
});
// Sent back with an error: the server rendered it open; open it as the modal it is.
if (dialog.open) {
  dialog.close();
  dialog.showModal();
  input.focus();
}

// Unread and mention badges, kept live from `/ws/me`, and their total in the tab title.
// Every piece of user data goes into the page as text (textContent), never as HTML.

const UNREAD_CAP = 1000;  // the server counts up to this (SPEC "Attention")
const RECONNECT_BASE_MS = 500;
const RECONNECT_CAP_MS = 10000;
const TOO_MANY_RETRY_MS = [30000, 60000];
const baseTitle = document.title;
const me = document.getElementById("me")?.textContent || "";
let attempt = 0;

function shownCount(n) {
  return n >= UNREAD_CAP ? `${UNREAD_CAP}+` : String(n);
}

function entries(name) {
  return document.querySelectorAll(`#rooms li[data-room="${CSS.escape(name)}"], #dms li[data-room="${CSS.escape(name)}"]`);
}

function setBadge(badge, n) {
  badge.querySelector(".n").textContent = shownCount(n);
  badge.hidden = n === 0;
}

function setCounts(name, unread, mentions) {
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
  for (const li of document.querySelectorAll("#rooms li[data-room], #dms li[data-room]")) {
    total += Number(li.dataset.unread) || 0;
  }
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

function badges() {
  const box = document.createElement("span");
  box.className = "badges";
  box.append(badge("unread", " unread"), badge("mention-count", " mentioning you"));
  return box;
}

// A room that came to be, or was opened to the user, while the page was open: listed as the
// server would have listed it (a DM named by its other members).
async function addEntry(view) {
  const li = document.createElement("li");
  li.dataset.room = view.name;
  li.dataset.unread = "0";
  li.dataset.mentions = "0";
  const link = document.createElement("a");
  link.href = `/rooms/${encodeURIComponent(view.name)}`;
  let list;
  if (view.kind === "dm") {
    const response = await fetch(`/api/rooms/${encodeURIComponent(view.name)}/members`, { credentials: "same-origin" });
    const members = response.ok ? await response.json() : [];
    const others = members.map((m) => m.username).filter((name) => name !== me);
    link.className = "dm";
    link.textContent = others.length ? others.join(", ") : "Just you";
    li.append(link);
    list = document.getElementById("dms");
  } else {
    li.dataset.kind = view.kind;
    const line = document.createElement("span");
    line.className = "room-line";
    link.textContent = `#${view.name}`;
    const kind = document.createElement("span");
    kind.className = `kind ${view.kind}`;
    kind.textContent = view.kind;
    line.append(link, kind);
    if (view.topic) {
      const topic = document.createElement("span");
      topic.className = "topic";
      topic.textContent = view.topic;
      line.append(topic);
    }
    li.append(line);
    list = document.getElementById("rooms");
  }
  const count = document.createElement("span");
  count.className = "count";
  count.title = "active users";
  count.textContent = `${view.active_users} active`;
  li.append(badges(), count);
  if (entries(view.name).length) return;  // listed meanwhile
  // A later page of rooms (`?after=`) is in name order: a new room belongs to the first.
  if (view.kind !== "dm" && new URLSearchParams(location.search).has("after")) return;
  list.querySelector("li.empty")?.remove();
  list.prepend(li);
}

async function readRoom(name, add) {
  const response = await fetch(`/api/rooms/${encodeURIComponent(name)}`, { credentials: "same-origin" });
  if (response.status === 404) {
    // No longer the user's to see (left or removed from a private room, or a DM).
    for (const li of entries(name)) if (li.dataset.kind !== "public") li.remove();
    updateTitle();
    return;
  }
  if (!response.ok) return;
  const view = await response.json();
  if (add && !entries(view.name).length) await addEntry(view);
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

function connectMe() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${location.host}/ws/me`);
  socket.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    switch (frame.type) {
      case "ready":
        attempt = 0;
        readAll();
        break;
      case "activity":
        notifyOf(frame);
        setCounts(frame.room, frame.unread, frame.mentions);
        break;
      case "read":
      case "member":
        if (entries(frame.room).length) readRoom(frame.room, false);
        break;
      case "room":
        readRoom(frame.room, frame.event === "created" || frame.event === "added");
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
  const li = entries(frame.room)[0];
  if (!li || !document.hidden || !notifying()) return;
  const newMentions = frame.mentions > (Number(li.dataset.mentions) || 0);
  const newInDm = li.closest("#dms") !== null && frame.unread > (Number(li.dataset.unread) || 0);
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

updateTitle();
connectMe();

// Search: the server's results as links to each message in its room, with those around it.
const searchForm = document.getElementById("search");
const searchInput = document.getElementById("search-q");
const searchStatus = document.getElementById("search-status");
const results = document.getElementById("search-results");
const SEARCH_PAGE = 20;

function roomLabel(name) {
  const li = entries(name)[0];
  const link = li?.querySelector("a");
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

let nextResults = null;  // the next page's URL, from the answer's Link header
const moreResults = document.getElementById("search-more");

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
