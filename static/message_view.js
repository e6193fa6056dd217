// One message's line in the list, drawn from its state: author, local time (the full date on
// hover), "(edited)", the menu button, the text as safe Markdown with mentions marked, or
// its tombstone, and the reactions.
// Every piece of user data goes into the page as text (textContent), never as HTML.
import { markdownNodes } from "/static/markdown.js";
import { personButton } from "/static/members.js";
import { bodyNodes, mentionsOf } from "/static/mentions.js";

const me = document.body.dataset.user;
const TIME = { hour: "2-digit", minute: "2-digit" };
const FULL = { dateStyle: "full", timeStyle: "medium" };

export function messageItem(m) {
  const li = document.createElement("li");
  li.id = `msg-${m.id}`;
  li.dataset.id = String(m.id);
  fill(li, m);
  return li;
}

// The time of a message: local, hours and minutes; the whole date in its title.
export function timeOf(ts) {
  const when = document.createElement("time");
  const date = new Date(ts);
  when.dateTime = ts;
  when.textContent = date.toLocaleTimeString([], TIME);
  when.title = date.toLocaleString([], FULL);
  return when;
}

// The message's line, drawn anew from its state.
export function fill(li, m) {
  const myKey = me.toLowerCase();
  const mentioned = mentionsOf(m);
  li.classList.toggle("mine", m.user === me);
  li.classList.toggle("deleted", m.deleted);
  li.classList.toggle("mentions-me", mentioned.has(myKey));
  li.dataset.user = m.user;
  li.dataset.ts = m.ts;
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
  head.append(who, timeOf(m.ts));
  if (m.edited_at && !m.deleted) {
    const edited = document.createElement("span");
    edited.className = "edited";
    edited.textContent = "(edited)";
    edited.title = `edited ${new Date(m.edited_at).toLocaleString([], FULL)}`;
    head.append(edited);
  }
  if (!m.deleted) head.append(menuButton(m));
  const body = document.createElement("div");
  body.className = "body";
  if (m.deleted) {
    body.classList.add("tombstone");
    body.textContent = "message deleted";
  } else {
    body.append(...markdownNodes(m.body, (text) => bodyNodes(text, mentioned, myKey)));
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

export function reactionsOf(m) {
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
