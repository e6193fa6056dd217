// The room page's member list: who belongs to the room and with what role, the controls of
// those who may change that, and "Message" on a person (their direct conversation).
// Every piece of user data goes into the page as text (textContent), never as HTML. The
// server decides every action (chat.access); the controls shown here only mirror its rules.

const ROLES = ["owner", "moderator", "member"];
const RANKS = { member: 1, moderator: 2, owner: 3 };

const room = document.body.dataset.room;
const me = document.body.dataset.user;
const isAdmin = document.body.dataset.admin !== undefined;
const list = document.getElementById("members");
const addForm = document.getElementById("add-member");
const addInput = document.getElementById("add-username");
const errorLine = document.getElementById("member-error");
const person = document.getElementById("person");
const personName = document.getElementById("person-name");
const personMessage = document.getElementById("person-message");
const personError = document.getElementById("person-error");
const leave = document.getElementById("leave");
const bannedSection = document.getElementById("banned-section");
const bannedList = document.getElementById("banned");

const members = new Map();    // username -> role
const banned = new Set();     // usernames; known to owners and moderators only
let kind = document.body.dataset.kind;
let myRole = null;            // the caller's role here; null: not a member
let ended = false;            // removed or banned: no controls any more
let loading = false;          // a refresh is on its way
let stale = false;            // a frame came while it was: refresh again after it
let personShown = null;       // whose card the dialog shows

function roomPath() {
  return `/api/rooms/${encodeURIComponent(room)}`;
}

// A call to the REST API with the page's cookie; the CSRF token (from the page, as the
// cookie holding it is out of the scripts' reach) proves the call came from our pages.
async function api(method, path, body) {
  const headers = { "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content };
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetch(path, init);
}

// What the server said was wrong, as a sentence.
async function problem(response) {
  let detail = "";
  try {
    const data = await response.json();
    detail = Array.isArray(data.detail) ? data.detail.map((d) => d.msg).join("; ") : data.detail;
  } catch {
    // Not JSON (a proxy's page): the status says enough.
  }
  const text = String(detail || response.statusText || `error ${response.status}`);
  return text.charAt(0).toUpperCase() + text.slice(1) + (text.endsWith(".") ? "" : ".");
}

function showError(line, text) {
  line.textContent = text;
  line.hidden = !text;
}

function actsAsOwner() {
  return kind !== "dm" && (myRole === "owner" || isAdmin);
}

export function moderates() {
  return kind !== "dm" && (actsAsOwner() || myRole === "moderator");
}

// Kick and ban: owners act on anyone, moderators on members only.
function mayActOn(role) {
  return moderates() && (actsAsOwner() || (RANKS[role] || 0) < (RANKS[myRole] || 0));
}

function button(text, action, label) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.dataset.action = action;
  if (label) b.setAttribute("aria-label", label);
  return b;
}

export function personButton(name, className) {
  const b = button(name, "person", `${name}: show actions`);
  b.className = `link person ${className || ""}`.trim();
  b.dataset.user = name;
  b.setAttribute("aria-haspopup", "dialog");
  return b;
}

function item(name) {
  const role = members.get(name);
  const li = document.createElement("li");
  li.dataset.user = name;
  li.dataset.role = role;
  const who = document.createElement("span");
  who.className = "member-name";
  if (name === me) {
    who.textContent = `${name} (you)`;
    li.className = "me";
  } else {
    who.append(personButton(name));
  }
  li.append(who);
  const choosesRole = !ended && actsAsOwner();
  if (kind !== "dm" && !choosesRole) {
    const label = document.createElement("span");
    label.className = `role role-${role}`;
    label.textContent = role;
    li.append(label);
  }
  if (ended) return li;
  const controls = document.createElement("span");
  controls.className = "member-actions";
  if (choosesRole) {
    const select = document.createElement("select");
    select.dataset.action = "role";
    select.setAttribute("aria-label", `Role of ${name}`);
    for (const value of ROLES) {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = value;
      option.selected = value === role;
      select.append(option);
    }
    controls.append(select);
  }
  if (name !== me && mayActOn(role)) {
    controls.append(button("Kick", "kick", `Kick ${name}`), button("Ban", "ban", `Ban ${name}`));
  }
  if (controls.childElementCount) li.append(controls);
  return li;
}

function bannedItem(name) {
  const li = document.createElement("li");
  li.dataset.user = name;
  const who = document.createElement("span");
  who.className = "member-name";
  who.textContent = name;
  const controls = document.createElement("span");
  controls.className = "member-actions";
  controls.append(button("Lift ban", "unban", `Lift the ban on ${name}`));
  li.append(who, controls);
  return li;
}

function render() {
  // The list is drawn anew; keyboard focus stays on the control it was on.
  const focused = document.activeElement;
  const was = list.contains(focused)
    ? { user: focused.closest("li")?.dataset.user, action: focused.dataset.action }
    : null;
  const names = Array.from(members.keys()).sort(
    (a, b) => a.toLowerCase().localeCompare(b.toLowerCase()));
  list.replaceChildren(...names.map(item));
  addForm.hidden = ended || !moderates();
  leave.hidden = ended || kind === "dm" || myRole === null;
  const bans = Array.from(banned).sort(
    (a, b) => a.toLowerCase().localeCompare(b.toLowerCase()));
  bannedList.replaceChildren(...bans.map(bannedItem));
  bannedSection.hidden = ended || !moderates() || bans.length === 0;
  if (was && was.user !== undefined) {
    const li = Array.from(list.children).find((el) => el.dataset.user === was.user);
    const again = li?.querySelector(`[data-action="${was.action}"]`);
    (again || list.querySelector("[data-action]") || addInput).focus();
  }
}

async function load() {
  const [roomResponse, membersResponse] = await Promise.all([
    fetch(roomPath(), { credentials: "same-origin" }),
    fetch(`${roomPath()}/members`, { credentials: "same-origin" }),
  ]);
  if (!roomResponse.ok || !membersResponse.ok) return;
  const view = await roomResponse.json();
  kind = view.kind;
  myRole = view.role;
  members.clear();
  for (const m of await membersResponse.json()) members.set(m.username, m.role);
  banned.clear();
  // Only owners and moderators may see who is banned: nobody else asks.
  if (!moderates()) return;
  const bansResponse = await fetch(`${roomPath()}/bans`, { credentials: "same-origin" });
  if (!bansResponse.ok) return;
  for (const b of await bansResponse.json()) banned.add(b.username);
}

// The list and the caller's role as the server has them now (on open, after every
// reconnect, after each change made here).
export async function refresh() {
  if (loading) {
    stale = true;
    return;
  }
  loading = true;
  try {
    do {
      stale = false;
      await load();
    } while (stale);
  } finally {
    loading = false;
  }
  render();
}

// A `member` frame from the room's socket.
export function memberFrame(frame) {
  if (frame.event === "join" || frame.event === "role") {
    members.set(frame.user, frame.role || "member");
    if (frame.user === me) myRole = frame.role || "member";
  } else {
    members.delete(frame.user);
    if (frame.user === me) myRole = null;
    if (frame.event === "ban" && moderates()) banned.add(frame.user);
  }
  // A refresh on its way may have been answered before this change: ask again after it.
  if (loading) stale = true;
  render();
}

// Removed or banned: the list stays as it was, without controls.
export function end() {
  ended = true;
  render();
}

async function act(method, path, body) {
  showError(errorLine, "");
  const response = await api(method, path, body);
  if (!response.ok) {
    showError(errorLine, await problem(response));
    return false;
  }
  await refresh();
  return true;
}

function memberPath(name) {
  return `${roomPath()}/members/${encodeURIComponent(name)}`;
}

list.addEventListener("click", (event) => {
  const target = event.target.closest("button[data-action]");
  if (!target) return;
  const name = target.closest("li").dataset.user;
  if (target.dataset.action === "kick") act("DELETE", memberPath(name));
  if (target.dataset.action === "ban") {
    act("PUT", `${roomPath()}/bans/${encodeURIComponent(name)}`);
  }
});

list.addEventListener("change", (event) => {
  const target = event.target;
  if (target.dataset.action !== "role") return;
  const name = target.closest("li").dataset.user;
  act("PATCH", memberPath(name), { role: target.value }).then((ok) => {
    if (!ok) render();  // back to the role the member has
  });
});

bannedList.addEventListener("click", (event) => {
  const target = event.target.closest("button[data-action=unban]");
  if (!target) return;
  const name = target.closest("li").dataset.user;
  // The button goes with the ban: keep the keyboard on the form beside it.
  act("DELETE", `${roomPath()}/bans/${encodeURIComponent(name)}`).then(() => addInput.focus());
});

leave.addEventListener("click", async () => {
  showError(errorLine, "");
  const response = await api("DELETE", memberPath(me));
  if (!response.ok) {
    showError(errorLine, await problem(response));
    return;
  }
  location.assign("/rooms");
});

addForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = addInput.value.trim();
  if (!name) return;
  if (await act("PUT", memberPath(name))) addInput.value = "";
});

// The card of a person: "Message" opens (or makes) the direct conversation with them.
export function showPerson(name) {
  personShown = name;
  personName.textContent = name;
  showError(personError, "");
  person.showModal();
  personMessage.focus();
}

personMessage.addEventListener("click", async () => {
  showError(personError, "");
  const response = await api("POST", "/api/dms", { users: [personShown] });
  if (!response.ok) {
    showError(personError, await problem(response));
    return;
  }
  const dm = await response.json();
  location.assign(`/rooms/${encodeURIComponent(dm.name)}`);
});

document.getElementById("person-close").addEventListener("click", () => person.close());

document.addEventListener("click", (event) => {
  const target = event.target.closest("button.person");
  if (target) showPerson(target.dataset.user);
});
