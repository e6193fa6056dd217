// The admin page: active users per room and live figures, pushed over /ws/admin.
"use strict";

(() => {
  const status = document.getElementById("status");
  const tbody = document.getElementById("active-rooms");
  let retryMs = 500;

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function render(stats) {
    document.getElementById("connections").textContent = String(stats.connections);
    document.getElementById("rate").textContent = stats.messages_per_sec.toFixed(1);
    const rooms = Object.entries(stats.rooms);
    document.getElementById("room-count").textContent = String(rooms.length);
    document.getElementById("lag").textContent = stats.loop_lag_ms.toFixed(0);
    tbody.replaceChildren(...rooms.map(([room, names]) => {
      const tr = document.createElement("tr");
      tr.dataset.room = room;
      tr.append(cell(`#${room}`), cell(names.join(", ")));
      return tr;
    }));
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/ws/admin`);
    socket.onopen = () => { retryMs = 500; status.textContent = "live"; status.className = "status ok"; };
    socket.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      if (frame.type === "stats") render(frame);
    };
    socket.onclose = (event) => {
      status.className = "status bad";
      if (event.code === 1008) {
        status.textContent = "signed out";
        location.assign("/login?next=/admin");
        return;
      }
      status.textContent = "offline, retrying…";
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 10000);
    };
  }

  connect();
})();
