// The outbox: messages typed in a room and not yet acknowledged, kept in localStorage so that
// neither a reconnect, a server restart nor a page reload loses one.
//
// Each message keeps the nonce it got when typed, for every send. The server stores at most
// one message per (room, user, nonce) and answers a repeat with the stored message, so a
// message sent again after a lost acknowledgement is never stored twice.
//
// Order: only the first waiting message is ever on the wire; the next goes after its
// acknowledgement (which comes after its commit). A rate-limited one is held until its
// `retry_after` and sent again by itself, the others waiting behind it.
//
// Tabs: every tab of the room shows the same outbox (one localStorage key per message, so two
// tabs writing at once never overwrite each other's messages). Only one tab sends it: the
// holder of a Web Lock named for the user and room; the others show it and take over when
// that tab goes. Where Web Locks are missing (plain HTTP off localhost) every tab sends, which
// is still safe: each message goes under its one nonce, and message k+1 goes only after k
// was acknowledged, i.e. stored.

const PREFIX = "chat.outbox.";

function keyPrefix(user, room) {
  return `${PREFIX}${encodeURIComponent(user.toLowerCase())}.${encodeURIComponent(room)}.`;
}

export function newNonce() {
  // getRandomValues, not randomUUID: the latter only exists on HTTPS and localhost.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// Messages waiting in one room, for one user. `onChange()` runs whenever the set or a state
// changes, here or in another tab.
export class Outbox {
  constructor(user, room, onChange) {
    this.prefix = keyPrefix(user, room);
    this.onChange = onChange;
    this.sender = !("locks" in navigator);
    // nonce -> "sending": what this tab put on the wire and awaits an answer for.
    this.inFlight = null;
    this.holdTimer = null;
    window.addEventListener("storage", (event) => {
      if (event.key === null || event.key.startsWith(this.prefix)) this.onChange();
    });
  }

  // Become the tab that sends, once no other tab of this room is; `ready()` runs then.
  claim(ready) {
    if (this.sender) {
      ready();
      return;
    }
    navigator.locks.request(`${this.prefix}sender`, () => {
      this.sender = true;
      ready();
      // Held until the page goes.
      return new Promise(() => {});
    });
  }

  // Entries oldest first: {nonce, body, at, state: "queued"|"held"|"refused", until?, reason?}.
  entries() {
    const found = [];
    for (let i = 0; i < localStorage.length; i += 1) {
      const key = localStorage.key(i);
      if (!key || !key.startsWith(this.prefix)) continue;
      try {
        const entry = JSON.parse(localStorage.getItem(key));
        if (entry && typeof entry.body === "string") found.push(entry);
      } catch {
        // Not ours after all, or damaged: leave it.
      }
    }
    return found.sort((a, b) => a.at - b.at || (a.nonce < b.nonce ? -1 : 1));
  }

  get(nonce) {
    const raw = localStorage.getItem(this.prefix + nonce);
    return raw === null ? null : JSON.parse(raw);
  }

  has(nonce) {
    return localStorage.getItem(this.prefix + nonce) !== null;
  }

  put(entry) {
    localStorage.setItem(this.prefix + entry.nonce, JSON.stringify(entry));
  }

  add(body) {
    const last = this.entries().at(-1);
    // Strictly after the last one, even within one millisecond or with the clock put back.
    const at = Math.max(Date.now(), last ? last.at + 1 : 0);
    const entry = { nonce: newNonce(), body, at, state: "queued" };
    this.put(entry);
    this.onChange();
    return entry;
  }

  remove(nonce) {
    localStorage.removeItem(this.prefix + nonce);
    if (this.inFlight === nonce) this.inFlight = null;
    this.onChange();
  }

  // The message with this nonce is stored: it leaves the outbox.
  acknowledged(nonce) {
    if (this.has(nonce)) {
      this.remove(nonce);
    } else if (this.inFlight === nonce) {
      // Another tab saw it stored first and took it out.
      this.inFlight = null;
      this.onChange();
    }
  }

  // Refused for a while (`rate_limited`, `unavailable`): sent again by itself at `until`.
  hold(nonce, ms) {
    const entry = this.get(nonce);
    if (this.inFlight === nonce) this.inFlight = null;
    if (!entry) return;
    entry.state = "held";
    entry.until = Date.now() + ms;
    this.put(entry);
    this.onChange();
  }

  // Refused for what it is: sending it again would be refused again. It stays, with the
  // reason, until the user retries or discards it; the messages after it go on.
  refuse(nonce, reason) {
    const entry = this.get(nonce);
    if (this.inFlight === nonce) this.inFlight = null;
    if (!entry) return;
    entry.state = "refused";
    entry.reason = reason;
    this.put(entry);
    this.onChange();
  }

  // Retry a refused message: it goes at the end of the queue, under the same nonce.
  retry(nonce) {
    const entry = this.get(nonce);
    if (!entry) return;
    const last = this.entries().at(-1);
    entry.at = Math.max(Date.now(), last ? last.at + 1 : 0);
    entry.state = "queued";
    delete entry.reason;
    delete entry.until;
    this.put(entry);
    this.onChange();
  }

  // The socket went: what was on the wire goes again after the next welcome (unless the
  // welcome's history holds it).
  lost() {
    this.inFlight = null;
  }

  // The message to put on the wire now, if any: the first one not refused, unless it is
  // held for a while yet or already on the wire. Marks it as sent.
  next() {
    clearTimeout(this.holdTimer);
    this.holdTimer = null;
    if (!this.sender || this.inFlight !== null) return null;
    const head = this.entries().find((e) => e.state !== "refused");
    if (!head) return null;
    const wait = head.state === "held" ? head.until - Date.now() : 0;
    if (wait > 0) {
      this.holdTimer = setTimeout(() => this.onChange(), wait);
      return null;
    }
    this.inFlight = head.nonce;
    return head;
  }

  sending(nonce) {
    return this.inFlight === nonce;
  }
}

// One line of the message list for a waiting message: its text, and what it is waiting for.
export function outboxItem(entry, me, sending) {
  const li = document.createElement("li");
  li.className = "mine pending";
  li.dataset.nonce = entry.nonce;
  const head = document.createElement("div");
  head.className = "message-head";
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = me;
  const state = document.createElement("span");
  state.className = "pending-state";
  head.append(who, state);
  const body = document.createElement("div");
  body.className = "body";
  body.textContent = entry.body;
  li.append(head, body);
  if (entry.state === "refused") {
    li.classList.add("refused");
    state.textContent = `Not sent: ${entry.reason}`;
    const actions = document.createElement("div");
    actions.className = "pending-actions";
    const retry = document.createElement("button");
    retry.type = "button";
    retry.className = "secondary small";
    retry.dataset.outbox = "retry";
    retry.textContent = "Retry";
    const discard = document.createElement("button");
    discard.type = "button";
    discard.className = "secondary small";
    discard.dataset.outbox = "discard";
    discard.textContent = "Discard";
    actions.append(retry, discard);
    li.append(actions);
  } else if (entry.state === "held" && entry.until > Date.now()) {
    state.textContent = `waiting ${Math.ceil((entry.until - Date.now()) / 1000)} s to send…`;
  } else {
    state.textContent = sending ? "sending…" : "waiting to send…";
  }
  return li;
}
