// The rooms page: the "New message" dialog, and the rooms and DMs that came to be while the
// page was open (the app shell, static/shell.js, hears of them and keeps every badge live).
// Every piece of user data goes into the page as text (textContent), never as HTML.
import { badges, roomEntry } from "/static/shell.js";

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

// A room that came to be, or was opened to the user, while the page was open: listed as the
// server would have listed it (a DM named by its other members).
document.addEventListener("chat:room", (event) => {
  const { view, label } = event.detail;
  const list = document.getElementById(view.kind === "dm" ? "dms" : "rooms");
  if (list.querySelector(`li[data-room="${CSS.escape(view.name)}"]`)) return;
  // A later page of rooms (`?after=`) is in name order: a new room belongs to the first.
  if (view.kind !== "dm" && new URLSearchParams(location.search).has("after")) return;
  const { li, link } = roomEntry(view, label);
  if (view.kind === "dm") {
    link.className = "dm";
    li.append(link);
  } else {
    const line = document.createElement("span");
    line.className = "room-line";
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
  }
  const count = document.createElement("span");
  count.className = "count";
  count.title = "active users";
  count.textContent = `${view.active_users} active`;
  li.append(badges(), count);
  list.querySelector("li.empty")?.remove();
  list.prepend(li);
});
