// The admin page: active users per room and live figures, pushed over /ws/admin.
import { backoffMs } from "/static/backoff.js";

const status = document.getElementById("status");
const tbody = document.getElementById("active-rooms");

const RECONNECT_BASE_MS = 500;
const RECONNECT_CAP_MS = 10000;
let attempt = 0;              // reconnect attempts since the last stats frame

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
  socket.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    if (frame.type !== "stats") return;
    // Not on open: the server accepts every socket before it checks who is there.
    attempt = 0;
    status.textContent = "live";
    status.className = "status ok";
    render(frame);
  };
  socket.onclose = (event) => {
    status.className = "status bad";
    if (event.code === 1008) {
      status.textContent = "signed out";
      location.assign("/login?next=/admin");
      return;
    }
    status.textContent = "offline, retrying…";
    setTimeout(connect, backoffMs(attempt, RECONNECT_BASE_MS, RECONNECT_CAP_MS));
    attempt += 1;
  };
}

connect();
