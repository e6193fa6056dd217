// The admin page: active users per room and live figures, pushed over /ws/admin; the
// last hour's figures as charts (from /api/admin/stats/history, moved on by every stats
// frame); and the alerts, the latest from /api/admin/alerts, then live.
import { backoffMs } from "/static/backoff.js";

const status = document.getElementById("status");
const tbody = document.getElementById("active-rooms");

const RECONNECT_BASE_MS = 500;
const RECONNECT_CAP_MS = 10000;
const HISTORY_MINUTES = 60;
const HISTORY_REFRESH_MS = 60000;
const ALERTS_SHOWN = 100;
const SVG = "http://www.w3.org/2000/svg";
// The chart's drawing box; CSS scales it to the figure.
const CHART_W = 300;
const CHART_H = 80;
const SERIES = ["connections", "messages_per_sec", "deliveries_per_sec", "loop_lag_p99_ms"];
let attempt = 0;              // reconnect attempts since the last stats frame

// Per-minute points of the cluster, oldest first, and the live point of this moment.
let history = [];
let nodeHistory = {};  // each node's points, drawn beside the total when there are several
let live = null;
const alertsList = document.getElementById("alerts");
const shownAlerts = new Set();  // ids, so that one from the API and the socket shows once

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function svg(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

function chartPoints() {
  // The live point stands for now: history's last minute is already over.
  return live === null ? history : [...history, live];
}

function drawCharts() {
  const points = chartPoints();
  // At most the last hour; a younger server's whole life, but a minute at least.
  const end = Date.now();
  const first = points.length ? Date.parse(points[0].ts) : end;
  const start = Math.max(end - HISTORY_MINUTES * 60000, Math.min(first, end - 60000));
  const nodes = Object.values(nodeHistory);
  for (const figure of document.querySelectorAll(".chart")) {
    const series = figure.dataset.series;
    const valuesOf = (list) => list.map((p) => [Date.parse(p.ts), Number(p[series])]);
    const values = valuesOf(points);
    const top = Math.max(1, ...values.map(([, v]) => v)) * 1.1;
    const line = (of) => of
      .filter(([t]) => t >= start)
      .map(([t, v]) => {
        const x = ((t - start) / (end - start)) * CHART_W;
        const y = CHART_H - (v / top) * CHART_H;
        return `${x.toFixed(1)},${y.toFixed(1)}`;
      })
      .join(" ");
    const drawing = svg("svg", {
      viewBox: `0 0 ${CHART_W} ${CHART_H}`,
      preserveAspectRatio: "none",
      role: "img",
      "aria-label": `${figure.querySelector("figcaption").firstChild.textContent.trim()}, last hour`,
    });
    drawing.append(svg("line", { class: "axis", x1: 0, y1: CHART_H, x2: CHART_W, y2: CHART_H }));
    if (nodes.length > 1) {
      for (const node of nodes) drawing.append(svg("polyline", { class: "node", points: line(valuesOf(node)) }));
    }
    drawing.append(svg("polyline", { class: "total", points: line(values) }));
    const old = figure.querySelector("svg");
    if (old === null) figure.append(drawing); else old.replaceWith(drawing);
    const last = values.length ? values[values.length - 1][1] : 0;
    figure.querySelector(".value").textContent = Number.isInteger(last) ? String(last) : last.toFixed(1);
  }
}

async function loadHistory() {
  try {
    const response = await fetch(`/api/admin/stats/history?minutes=${HISTORY_MINUTES}`,
      { credentials: "same-origin" });
    if (!response.ok) return;
    const body = await response.json();
    history = body.total;
    nodeHistory = body.nodes;
    const nodes = Object.keys(body.nodes);
    document.getElementById("nodes").textContent =
      nodes.length ? `${nodes.length} node${nodes.length === 1 ? "" : "s"}: ${nodes.join(", ")}` : "no points yet";
    drawCharts();
  } catch {
    // Offline for a moment: the next refresh tries again.
  }
}

function alertItem(alert) {
  const li = document.createElement("li");
  li.className = `level-${alert.level}`;
  li.dataset.id = alert.id;
  li.dataset.kind = alert.kind;
  const time = document.createElement("time");
  time.dateTime = alert.ts;
  time.textContent = new Date(alert.ts).toLocaleString();
  const level = document.createElement("span");
  level.className = "level";
  level.textContent = alert.level;
  const kind = document.createElement("span");
  kind.className = "alert-kind";
  kind.textContent = alert.kind.replaceAll("_", " ");
  const detail = document.createElement("span");
  detail.className = "detail";
  detail.textContent = alert.detail;
  li.append(time, level, kind, detail);
  return li;
}

function showAlert(alert) {
  if (shownAlerts.has(alert.id)) return;
  shownAlerts.add(alert.id);
  alertsList.querySelector("li.empty")?.remove();
  const item = alertItem(alert);
  // Newest first, by when it happened: one stored late (the database was down) goes in its place.
  const later = [...alertsList.children].find((li) => li.querySelector("time").dateTime < alert.ts);
  alertsList.insertBefore(item, later ?? null);
  while (alertsList.children.length > ALERTS_SHOWN) alertsList.lastElementChild.remove();
}

async function loadAlerts() {
  const status = document.getElementById("alerts-status");
  try {
    const response = await fetch(`/api/admin/alerts?limit=${ALERTS_SHOWN}`, { credentials: "same-origin" });
    if (!response.ok) throw new Error(String(response.status));
    const body = await response.json();
    for (const alert of body.alerts) showAlert(alert);
    status.textContent = "";
  } catch {
    status.textContent = "could not load earlier alerts";
  }
  if (!alertsList.children.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "No alerts.";
    alertsList.append(li);
  }
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
    if (frame.type === "alert") {
      showAlert(frame);
      return;
    }
    if (frame.type !== "stats") return;
    // Not on open: the server accepts every socket before it checks who is there.
    attempt = 0;
    status.textContent = "live";
    status.className = "status ok";
    render(frame);
    live = {
      ts: new Date().toISOString(),
      connections: frame.connections,
      messages_per_sec: frame.messages_per_sec,
      deliveries_per_sec: frame.deliveries_per_sec,
      loop_lag_p99_ms: frame.loop_lag_ms,
    };
    drawCharts();
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

// The socket first, then the stored alerts: one raised in between is in one or the other.
connect();
loadAlerts();
loadHistory();
setInterval(loadHistory, HISTORY_REFRESH_MS);
