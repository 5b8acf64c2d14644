// emotion-edge live page. No build step, no dependencies: everything here is served by the daemon.
// Messages arrive on one WebSocket, each a JSON object with a type "t" ("state", "calibration", "emg",
// "frame"), a frame's JSON header being followed by its JPEG as a binary message. Each type has a handler
// in `handlers`; a new panel adds its section.panel to index.html and a handler here.
"use strict";

const EMOTIONS = ["happy", "angry", "surprise", "fear", "sad", "disgust", "neutral"];
const COLORS = {
  happy: "#16a34a", angry: "#dc2626", surprise: "#f59e0b", fear: "#7c3aed",
  sad: "#2563eb", disgust: "#0d9488", neutral: "#6b7280", uncertain: "#9ca3af",
};
const BADGES = {
  ok: ["ok", "signal ok"], flat: ["bad", "flat: electrode off?"], saturated: ["bad", "saturated"],
  clipping: ["warn", "clipping"], mains: ["info", "mains hum"],
  disconnected: ["bad", "disconnected: lead unplugged?"],
};
const VIDEO = {
  live: ["ok", "live", ""],
  privacy: ["warn", "privacy", "Privacy mode is on: the camera is closed and no picture is taken."],
  paused: ["warn", "paused", "Camera paused."],
  off: ["info", "video off", "Live video is switched off (Home Assistant switch \u201cLive page video\u201d)."],
  waiting: ["bad", "no picture", "Waiting for the camera\u2026"],
  none: ["", "no camera", "No camera configured."],
};

const EVENT_NAMES = { new: "started", update: "update", end: "ended" };

const $ = (id) => document.getElementById(id);
let frameHeader = null;
let lastState = null;

function el(tag, attrs = {}, text = "") {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text) node.textContent = text;
  return node;
}

function pct(x) { return `${Math.round((x || 0) * 100)}%`; }
function clock(ts) { return ts ? new Date(ts * 1000).toLocaleTimeString([], { hour12: false }) : ""; }
function pill(node, kind, text) { node.className = `pill ${kind}`; node.textContent = text; }

// --- estimate -----------------------------------------------------------------------------------------

function buildBars() {
  const bars = $("bars");
  for (const name of EMOTIONS) {
    const bar = el("div", { class: "bar" });
    const fill = el("div", { id: `bar-${name}` });
    fill.style.background = COLORS[name];
    bar.append(fill);
    bars.append(el("span", { id: `label-${name}` }, name), bar, el("span", { id: `value-${name}`, class: "muted" }, "–"));
  }
}

function showEstimate(msg) {
  const s = msg.state;
  $("emotion").textContent = s.emotion;
  $("emotion").style.color = COLORS[s.emotion] || "inherit";
  $("confidence").textContent = s.emotion === "uncertain" ? "" : pct(s.confidence);
  for (const name of EMOTIONS) {
    const p = (s.probs || {})[name] || 0;
    $(`bar-${name}`).style.width = pct(p);
    $(`value-${name}`).textContent = pct(p);
    $(`label-${name}`).className = name === s.emotion ? "top" : "";
  }
  // The decision keeps an episode while its emotion stays above the exit threshold (hysteresis), so the
  // shown emotion can differ from the tallest bar: say so, or a maker reads it as a bug.
  const top = EMOTIONS.reduce((a, b) => (((s.probs || {})[b] || 0) > ((s.probs || {})[a] || 0) ? b : a));
  const held = s.emotion !== "uncertain" && top !== s.emotion && (s.probs || {})[top] > 0;
  $("held").hidden = !held;
  $("held").textContent = held ? `${s.emotion} is held by the open episode while ${top} is higher (hysteresis)` : "";
  $("used").textContent = (s.modalities || []).join(" + ") || "nothing (no input)";
  const ep = msg.episode;
  $("episode").textContent = ep
    ? `Episode: ${ep.emotion} since ${clock(ep.ts)} (${ep.type === "new" ? "just started" : "ongoing"})`
    : "No episode open: the estimate is below the threshold or uncertain.";
}

// --- events and status --------------------------------------------------------------------------------

function showEvents(events) {
  const list = $("events");
  const key = events.map((e) => e.seq).join(",");
  if (list.dataset.key === key) return;
  list.dataset.key = key;
  list.replaceChildren();
  if (!events.length) list.append(el("li", { class: "muted" }, "none yet"));
  for (const e of [...events].reverse()) {
    const li = el("li", { class: `event ${e.type}`, "data-seq": String(e.seq) });
    const name = el("b", {}, e.emotion);
    name.style.color = COLORS[e.emotion] || "inherit";
    li.append(el("span", { class: "muted" }, clock(e.ts)), el("span", {}, EVENT_NAMES[e.type] || e.type), name, el("span", { class: "muted" }, pct(e.confidence)));
    list.append(li);
  }
}

function showStatus(msg) {
  $("device").textContent = msg.device_id;
  pill($("mqtt"), msg.mqtt ? "ok" : "bad", msg.mqtt ? "MQTT connected" : "MQTT disconnected");
  const mods = $("modalities");
  mods.replaceChildren();
  for (const [name, up] of Object.entries(msg.modalities)) {
    const item = el("li");
    pill(item, up ? "ok" : "bad", `${name === "emg" ? "EMG" : "Camera"} ${up ? "available" : "unavailable"}`);
    mods.append(item);
  }
  for (const button of document.querySelectorAll("button.switch")) {
    const name = button.dataset.switch;
    if (!(name in msg.switches)) continue;
    button.hidden = false;
    if (!button.disabled) button.setAttribute("aria-pressed", String(msg.switches[name]));
  }
  const st = msg.stats || {};
  const rows = [
    ["uptime", st.uptime_s !== undefined ? `${Math.round(st.uptime_s)} s` : "–"],
    ["EMG windows", st.emg ? st.emg.windows : "–"],
    ["frames classified", st.camera ? st.camera.frames_classified : "–"],
    ["frames captured", st.camera ? st.camera.frames_captured : "–"],
    ["events waiting for broker", st.outbox ? st.outbox.pending : "–"],
    ["frames sent to pages", st.web ? st.web.frames_served : "–"],
    ["pages open", st.web ? st.web.viewers : "–"],
  ];
  const dl = $("stats");
  dl.replaceChildren();
  for (const [k, v] of rows) dl.append(el("dt", {}, k), el("dd", {}, String(v)));
}

// --- camera -------------------------------------------------------------------------------------------

function showVideoStatus(status) {
  const [kind, label, note] = VIDEO[status] || VIDEO.waiting;
  pill($("video-status"), kind, label);
  $("video-note").hidden = status === "live";
  if (status !== "live") $("video-note").textContent = note;
  document.body.dataset.video = status;
}

async function drawFrame(blob) {
  const header = frameHeader;
  frameHeader = null;
  if (!header || !lastState || lastState.video !== "live") return;
  const bitmap = await createImageBitmap(blob);
  const canvas = $("frame");
  if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
  }
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  // Boxes are in the camera frame's pixels; the JPEG may have been scaled down.
  const k = header.scale;
  ctx.lineWidth = Math.max(2, canvas.width / 200);
  ctx.font = `bold ${Math.max(14, Math.round(canvas.width / 30))}px system-ui, sans-serif`;
  for (const face of header.faces) {
    const [x, y, w, h] = face.box.map((v) => v * k);
    const color = COLORS[face.emotion] || "#fff";
    ctx.strokeStyle = color;
    ctx.strokeRect(x, y, w, h);
    const label = `${face.emotion} ${pct(face.confidence)}`;
    const tw = ctx.measureText(label).width + 8;
    const th = parseInt(ctx.font.match(/\d+/)[0], 10) + 6;
    const ty = y >= th ? y - th : y + h;
    ctx.fillStyle = color;
    ctx.fillRect(x, ty, tw, th);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x + 4, ty + th - 6);
  }
  $("faces").textContent = header.faces.length
    ? `${header.faces.length} face${header.faces.length > 1 ? "s" : ""}; the box in use is the largest`
    : "no face in this picture";
  canvas.dataset.frames = String(Number(canvas.dataset.frames || 0) + 1);
  canvas.dataset.faces = String(header.faces.length);
}

// --- EMG ----------------------------------------------------------------------------------------------

function showTraces(msg) {
  const box = $("traces");
  if (box.dataset.empty !== "no") { box.replaceChildren(); box.dataset.empty = "no"; }
  msg.channels.forEach((ch, i) => {
    let row = box.children[i];
    if (!row) {
      row = el("div", { class: "trace" });
      const label = el("div", { class: "label" }, `EMG${i + 1} `);
      label.append(el("br"), el("span", { class: "pill", id: `badge-${i}` }));
      row.append(label, el("canvas", { id: `trace-${i}`, width: "600", height: "64" }));
      box.append(row);
    }
    const [kind, text] = BADGES[ch.badge] || BADGES.ok;
    pill($(`badge-${i}`), msg.stale ? "" : kind, msg.stale ? "no signal" : text);
    $(`badge-${i}`).title = `std ${ch.std}, at rail ${pct(ch.at_rail)}, mains ${pct(ch.mains_share)}`;
    $(`badge-${i}`).dataset.badge = ch.badge;
    plot($(`trace-${i}`), ch, msg);
  });
}

function plot(canvas, ch, msg) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const lo = Math.min(...ch.min), hi = Math.max(...ch.max);
  const pad = Math.max((hi - lo) * 0.1, 2);
  const y = (v) => height - ((v - (lo - pad)) / (hi - lo + 2 * pad)) * height;
  // The newest sample is at the right edge; a trace shorter than the span starts part-way.
  const n = ch.min.length;
  const x0 = width * (1 - msg.seconds / msg.span);
  const dx = (width - x0) / Math.max(n, 1);
  // The min/max envelope as one filled band: every spike and every flat stretch stays visible.
  ctx.beginPath();
  for (let i = 0; i < n; i++) ctx.lineTo(x0 + i * dx, y(ch.max[i]) - 0.5);
  for (let i = n - 1; i >= 0; i--) ctx.lineTo(x0 + i * dx, y(ch.min[i]) + 0.5);
  ctx.closePath();
  ctx.fillStyle = msg.stale ? "#d1d5db" : "#93b4f5";
  ctx.strokeStyle = msg.stale ? "#9ca3af" : "#2563eb";
  ctx.fill();
  ctx.stroke();
  ctx.fillStyle = "#6b7280";
  ctx.font = "10px system-ui, sans-serif";
  ctx.fillText(String(Math.round(hi)), 2, 10);
  ctx.fillText(String(Math.round(lo)), 2, height - 2);
}

// --- switches -----------------------------------------------------------------------------------------

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)ee_csrf=([^;]+)/);
  return match ? match[1] : "";
}

// A POST with the CSRF token; resolves to the JSON reply, throws an Error with the daemon's message.
async function post(url, body = {}) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken() },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  const text = await response.text();
  let data;
  try { data = JSON.parse(text); } catch { data = { error: text.trim() }; }
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

async function toggle(button) {
  const name = button.dataset.switch;
  const on = button.getAttribute("aria-pressed") !== "true";
  button.disabled = true;
  try {
    await post(`/api/switch/${name}`, { on });
    // The button follows the daemon's state (as Home Assistant does): the next state message sets it.
  } catch (err) {
    button.title = `failed: ${err.message}`;
  } finally {
    setTimeout(() => { button.disabled = false; }, 300);
  }
}

// --- calibration and personal models ------------------------------------------------------------------

const PHASES = {
  idle: ["", "ready"], countdown: ["warn", "get ready"], record: ["ok", "recording"], rest: ["info", "rest"],
  recorded: ["info", "training"], fitting: ["info", "training"], done: ["ok", "done"],
  refused: ["warn", "not activated"], failed: ["bad", "failed"], cancelled: ["", "cancelled"],
};
const COUNT_LABELS = { countdown: "until recording starts", record: "hold the face", rest: "relax" };
const RUNNING = new Set(["countdown", "record", "rest", "recorded", "fitting"]);
const FINAL = new Set(["done", "refused", "failed", "cancelled"]);
let calPhase = null;

// An error stays 10 s (or until the next command): long enough to read, not so long it looks current.
function showError(id, err) {
  $(id).hidden = !err;
  $(id).textContent = err ? err.message : "";
  clearTimeout($(id).timer);
  if (err) $(id).timer = setTimeout(() => { $(id).hidden = true; }, 10000);
}

function showLevels(msg) {
  const box = $("cal-levels");
  msg.levels.forEach((level, i) => {
    let row = box.children[i];
    if (!row) {
      row = el("div", { class: "level" });
      const meter = el("div", { class: "meter" });
      meter.append(el("div", { id: `cal-level-${i}` }));
      row.append(el("b", {}, `EMG${i + 1}`), meter, el("span", { class: "pill", id: `cal-verdict-${i}` }));
      box.append(row);
    }
    const status = msg.channels[i];
    const [kind, text] = BADGES[status] || BADGES.ok;
    $(`cal-level-${i}`).style.width = pct(Math.min(1, level));
    $(`cal-level-${i}`).className = status === "ok" ? "" : "bad";
    pill($(`cal-verdict-${i}`), kind, text);
    $(`cal-verdict-${i}`).dataset.status = status;
  });
  while (box.children.length > msg.levels.length) box.lastChild.remove();
}

function showResult(msg) {
  const box = $("cal-result");
  const r = msg.result;
  // The outcome once the session ends; at idle, that of the last session since the daemon started.
  box.hidden = !(FINAL.has(msg.phase) || (msg.phase === "idle" && r && r.model_id));
  if (box.hidden) return;
  box.replaceChildren();
  box.className = `result ${msg.phase === "done" ? "ok" : msg.phase === "refused" || msg.phase === "failed" ? "bad" : ""}`;
  if (r && r.model_id) {
    const head = r.activated ? `Personal model ${r.model_id} is active` : `Model ${r.model_id} was not activated`;
    const line = el("div", { class: "head" });
    line.append(el("b", {}, head), el("span", { class: "acc" }, `accuracy ${pct(r.accuracy)}`));
    box.append(line);
    box.append(el("p", { class: "small muted" }, "tested on repetitions of this session it was not trained on"));
    const notes = [...(r.reasons || []), ...(r.warnings || [])];
    if (notes.length) {
      const list = el("ul", { class: "small" });
      for (const n of notes) list.append(el("li", {}, n));
      box.append(list);
    }
  } else {
    box.append(el("b", {}, msg.message || msg.prompt || "no result"));
  }
  box.dataset.phase = msg.phase;
}

function showCalibration(msg) {
  const panel = $("calibration");
  const running = RUNNING.has(msg.phase);
  const live = running && msg.phase !== "recorded" && msg.phase !== "fitting";
  panel.dataset.phase = msg.phase;
  const [kind, label] = PHASES[msg.phase] || ["", msg.phase];
  pill($("cal-phase"), kind, label);
  $("cal-intro").hidden = running;
  $("cal-live").hidden = !running;
  $("cal-prompt").textContent = msg.prompt;
  $("cal-count").textContent = live ? `${msg.remaining_s.toFixed(1)} s` : "";
  $("cal-count-label").textContent = live ? COUNT_LABELS[msg.phase] : "this takes a few seconds";
  $("cal-progress").style.width = pct(msg.progress);
  $("cal-step").textContent = running ? `step ${msg.step} of ${msg.steps}` +
    (msg.label ? ` · ${msg.label}, repetition ${msg.rep + 1}` : "") + (msg.flagged.length ? ` · ${msg.flagged.length} repeated` : "") : "";
  if (live) showLevels(msg); else $("cal-levels").replaceChildren();
  // The session's advice while it runs ("repeating happy: EMG2 ... check ..."); the outcome's text after.
  const advice = running ? msg.message : "";
  $("cal-advice").hidden = !advice;
  $("cal-advice").textContent = advice;
  showResult(msg);
  $("cal-start").disabled = running;
  $("cal-cancel").hidden = !running;
  if (msg.phase !== calPhase && (calPhase === null || FINAL.has(msg.phase))) loadModels();
  calPhase = msg.phase;
}

async function calibrationCommand(what) {
  try {
    await post(`/api/calibration/${what}`);
    showError("cal-error", null);
  } catch (err) {
    showError("cal-error", err);
  }
}

// A model's id is the UTC time it was made (20261201T044036Z): shown in the browser's time zone.
function modelDate(m) {
  const t = m.id.match(/^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z/);
  if (!t) return m.session_date || "–";
  const [y, mo, d, h, mi, sec] = t.slice(1).map(Number);
  return new Date(Date.UTC(y, mo - 1, d, h, mi, sec)).toLocaleString([], { hour12: false });
}

function showModels(data) {
  $("models-in-use").textContent = `EMG runs ${data.in_use}.`;
  $("models-rollback").disabled = !data.active;
  const body = $("models-list");
  body.replaceChildren();
  if (!data.models.length) {
    const row = el("tr");
    row.append(el("td", { colspan: "6", class: "muted" }, "none yet: a calibration session makes one"));
    body.append(row);
  }
  for (const m of data.models) {
    const row = el("tr", { "data-id": m.id, "data-active": String(m.active) });
    const marker = el("td");
    if (m.active) pill(marker.appendChild(el("span")), "ok", "\u25CF active");
    const verdict = el("td");
    pill(verdict.appendChild(el("span")), m.passed ? "ok" : "warn", m.passed ? "passed" : "refused");
    for (const reason of m.reasons) verdict.append(el("div", { class: "small muted" }, reason));
    const action = el("td");
    if (!m.active) {
      const button = el("button", { class: "action", "data-activate": m.id }, "Activate");
      button.addEventListener("click", () => activate(m.id));
      action.append(button);
    }
    const date = modelDate(m);
    row.append(marker, el("td", { class: "id" }, m.id), el("td", {}, date),
      el("td", {}, m.accuracy === null ? "–" : pct(m.accuracy)), verdict, action);
    body.append(row);
  }
}

async function loadModels() {
  try {
    const response = await fetch("/api/models", { credentials: "same-origin" });
    if (!response.ok) throw new Error(await response.text());
    showModels(await response.json());
  } catch (err) {
    showError("models-error", err);
  }
}

async function modelsCommand(url) {
  try {
    const data = await post(url);
    showModels(data);
    showError("models-error", null);
    const done = data.message.charAt(0).toUpperCase() + data.message.slice(1);
    $("models-in-use").textContent += ` ${done}: the daemon is reloading.`;
  } catch (err) {
    showError("models-error", err);
  }
}

function activate(id) { return modelsCommand(`/api/models/${encodeURIComponent(id)}/activate`); }

// --- the connection -----------------------------------------------------------------------------------

const handlers = {
  state(msg) {
    lastState = msg;
    showEstimate(msg);
    showEvents(msg.events);
    showStatus(msg);
    showVideoStatus(msg.video);
  },
  calibration: showCalibration,
  emg: showTraces,
  frame(msg) { frameHeader = msg; },
};

function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  ws.binaryType = "blob";
  ws.onopen = () => pill($("link"), "ok", "live");
  ws.onmessage = (event) => {
    if (typeof event.data !== "string") { drawFrame(event.data); return; }
    const msg = JSON.parse(event.data);
    const handler = handlers[msg.t];
    if (handler) handler(msg);
  };
  ws.onclose = () => {
    pill($("link"), "bad", "reconnecting…");
    setTimeout(connect, 1000);
  };
}

buildBars();
$("cal-start").addEventListener("click", () => calibrationCommand("start"));
$("cal-cancel").addEventListener("click", () => calibrationCommand("cancel"));
$("models-rollback").addEventListener("click", () => modelsCommand("/api/models/rollback"));
for (const button of document.querySelectorAll("button.switch")) {
  button.addEventListener("click", () => toggle(button));
}
connect();
