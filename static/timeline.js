// The message list's layout around the messages themselves: one author's messages within a
// few minutes grouped under one name, a separator at each new day, the "New" line where the
// unread messages begin, the start-of-room marker, and the "N new messages" jump shown while
// the reader is scrolled up.

// Messages by one author closer than this in time share the first one's name.
const GROUP_MS = 5 * 60 * 1000;
const DAY = { weekday: "long", year: "numeric", month: "long", day: "numeric" };

function dayOf(ts) {
  const d = new Date(ts);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

function marker(className, text) {
  const li = document.createElement("li");
  li.className = `marker ${className}`;
  const span = document.createElement("span");
  span.textContent = text;
  li.append(span);
  return li;
}

// Day separators and groups, drawn anew from the messages in the list (cheap: a walk over
// the list, with the separators already right kept in place).
export function relayout(list, readUpTo) {
  let previous = null;
  const wanted = new Set();
  for (const li of list.querySelectorAll("li[data-id]")) {
    const ts = li.dataset.ts;
    const day = dayOf(ts);
    const newDay = previous === null || dayOf(previous.dataset.ts) !== day;
    if (newDay) {
      let sep = li.previousElementSibling;
      while (sep && sep.classList.contains("marker") && !sep.classList.contains("day")) {
        sep = sep.previousElementSibling;
      }
      if (!sep || !sep.classList.contains("day") || sep.dataset.day !== day) {
        sep = marker("day", new Date(ts).toLocaleDateString([], DAY));
        sep.dataset.day = day;
        list.insertBefore(sep, firstMarkerBefore(li));
      }
      wanted.add(sep);
    }
    const grouped = !newDay && previous.dataset.user === li.dataset.user
      && !previous.classList.contains("deleted")
      && Number(li.dataset.id) > readUpTo === Number(previous.dataset.id) > readUpTo
      && Date.parse(ts) - Date.parse(previous.dataset.ts) < GROUP_MS;
    li.classList.toggle("continued", grouped);
    previous = li;
  }
  for (const sep of list.querySelectorAll("li.day")) if (!wanted.has(sep)) sep.remove();
}

// A day separator goes above the "New" line that may stand right above a message.
function firstMarkerBefore(li) {
  let at = li;
  while (at.previousElementSibling?.classList.contains("unread-line")) at = at.previousElementSibling;
  return at;
}

// The "New" line above the first message after `upTo` by someone else, once per visit.
export function placeUnreadLine(list, upTo, me) {
  if (list.querySelector("li.unread-line") || upTo <= 0) return false;
  const first = Array.from(list.querySelectorAll("li[data-id]"))
    .find((li) => Number(li.dataset.id) > upTo && li.dataset.user !== me);
  if (!first) return false;
  list.insertBefore(marker("unread-line", "New"), first);
  return true;
}

// The marker at the very top once the list holds the room's first message.
export function setStart(list, atStart, title) {
  const start = list.querySelector("li.start");
  if (!atStart) {
    start?.remove();
    return;
  }
  if (!start) list.prepend(marker("start", `This is the start of ${title}.`));
  else if (list.firstElementChild !== start) list.prepend(start);
}

// The "N new messages" button: counts what arrived while the reader was scrolled up, and
// brings them to the end of the list; reaching the end by scrolling clears it.
export function newMessagesJump(list, button, atBottom) {
  let count = 0;
  const show = () => {
    button.hidden = count === 0;
    button.textContent = count === 1 ? "1 new message ↓" : `${count} new messages ↓`;
  };
  button.addEventListener("click", () => {
    list.scrollTop = list.scrollHeight;
    count = 0;
    show();
  });
  list.addEventListener("scroll", () => {
    if (count && atBottom()) {
      count = 0;
      show();
    }
  });
  return {
    arrived() {
      count += 1;
      show();
    },
  };
}
