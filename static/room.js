// The room page: history, live messages, who's here, typing hints.
// Every piece of user data goes into the page as text (textContent), never as HTML.
"use strict";

(() => {
  const room = document.body.dataset.room;
  const me = document.body.dataset.user;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const list = document.getElementById("messages");
  const users = document.getElementById("users");
  const status = document.getElementById("status");
  const typing = document.getElementById("typing");
  const errorLine = document.getElementById("error");
  const form = document.getElementById("send");
  const input = document.getElementById("body");
  const older = document.getElementById("older");

  const TYPING_SEND_MS = 2000;
  const TYPING_SHOW_MS = 3000;
  const RECONNECT_MAX_MS = 10000;
  const PAGE = 50;

  const shown = new Set();      // message ids on the page
  const pending = new Map();    // nonce -> body, sent but not yet acknowledged
  let lastId = 0;               // newest message id seen: resume point
  let oldestId = null;          // for scrolling back
  let socket = null;
  let retryMs = 500;
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
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = m.user;
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

  function atBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  }

  function append(m) {
    if (m.nonce && pending.has(m.nonce) && m.user === me) pending.delete(m.nonce);
    if (shown.has(m.id)) return;
    shown.add(m.id);
    const stick = atBottom();
    // Ids grow within a room: insert in order even if frames cross.
    let before = null;
    if (m.id < lastId) {
      before = Array.from(list.children).find((li) => Number(li.dataset.id) > m.id) || null;
    }
    list.insertBefore(messageItem(m), before);
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

  function wsUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const since = lastId ? `?since=${lastId}` : "";
    return `${scheme}//${location.host}/ws/rooms/${encodeURIComponent(room)}${since}`;
  }

  function connect() {
    setStatus(lastId ? "reconnecting…" : "connecting…");
    socket = new WebSocket(wsUrl());
    socket.onmessage = (event) => handle(JSON.parse(event.data));
    socket.onclose = (event) => {
      socket = null;
      if (event.code === 1008) {
        // The session is gone (expired token, signed out elsewhere): sign in again.
        setStatus("signed out", "bad");
        location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
        return;
      }
      if (event.code === 4404) {
        setStatus("no such room", "bad");
        return;
      }
      setStatus("offline, retrying…", "bad");
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, RECONNECT_MAX_MS);
    };
  }

  function handle(frame) {
    switch (frame.type) {
      case "welcome":
        retryMs = 500;
        setStatus("live", "ok");
        if (frame.truncated) list.replaceChildren(), shown.clear();
        frame.history.forEach(append);
        older.hidden = shown.size < PAGE && !frame.truncated;
        setUsers(frame.users);
        // Anything not acknowledged before the drop goes again; its nonce makes that safe.
        for (const [nonce, body] of pending) socket.send(JSON.stringify({ type: "message", body, nonce }));
        break;
      case "message":
        append(frame);
        typers.delete(frame.user);
        renderTyping();
        break;
      case "presence":
        setUsers(frame.users);
        break;
      case "typing":
        if (frame.user !== me) showTyping(frame.user);
        break;
      case "error":
        showError(frame.detail);
        break;
    }
  }

  async function postFallback(body, nonce) {
    // No socket right now: the REST API stores and delivers the message just the same.
    const response = await fetch(`/api/rooms/${encodeURIComponent(room)}/messages`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ body, nonce }),
      credentials: "same-origin",
    });
    if (response.ok) append(await response.json());
    else showError(`Not sent (${response.status}); it will be retried.`);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = input.value.trim();
    if (!body) return;
    const nonce = crypto.randomUUID();
    pending.set(nonce, body);
    input.value = "";
    showError("");
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "message", body, nonce }));
    } else {
      postFallback(body, nonce).catch(() => showError("Offline; the message will be sent on reconnect."));
    }
  });

  input.addEventListener("input", () => {
    const now = Date.now();
    if (socket && socket.readyState === WebSocket.OPEN && now - lastTypingSent > TYPING_SEND_MS) {
      lastTypingSent = now;
      socket.send(JSON.stringify({ type: "typing" }));
    }
  });

  older.addEventListener("click", async () => {
    if (oldestId === null) return;
    const response = await fetch(
      `/api/rooms/${encodeURIComponent(room)}/messages?before=${oldestId}&limit=${PAGE}`,
      { credentials: "same-origin" });
    if (!response.ok) return;
    const { messages } = await response.json();
    prepend(messages);
    older.hidden = messages.length < PAGE;
  });

  connect();
})();
