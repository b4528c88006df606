// The kiosk page: the MJPEG stream drawn on a canvas, the prompts as chips, the
// threshold, pause and heat map, and the status - all same-origin, no library.
// Labels and messages go in with textContent, never as HTML.
//
// The stream is read with fetch() rather than an <img>, so that the page knows
// when each frame arrives (it says when the stream is down and reconnects with
// back-off) and can measure capture-to-paint latency from the X-Captured-Ms
// header (wall clock: exact when server and browser share a machine).

const $ = (id) => document.getElementById(id);
const canvas = $("view");
const context = canvas.getContext("2d");
const FIRST_RETRY_MS = 500, MAX_RETRY_MS = 8000, STALL_MS = 5000, PAINT_REPORT_MS = 2000;
const stats = (window.realtimeStats = { frames: 0, skipped: 0, lastFrame: null,
                                        lastLatencyMs: null, latencies: [] });
const state = { socket: null, prompts: [], paused: false, dragging: false, shownKey: "",
                nextPart: null, drawing: false };

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function showDown(text) {
  const element = $("down");
  element.hidden = !text;
  element.textContent = text;
}

function note(text, isError = false) {
  const element = $("prompt-note");
  element.textContent = text;
  element.classList.toggle("error", isError);
}

// ---------------------------------------------------------------- the stream

function indexOfBlankLine(bytes, limit) {
  for (let i = 0; i + 3 < Math.min(bytes.length, limit); i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
      return i;
    }
  }
  return -1;
}

function parseHeaders(text) {
  const headers = {};
  for (const line of text.split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0 && !line.startsWith("--")) {
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
  }
  return headers;
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

async function readParts(reader, onPart) {
  let buffer = new Uint8Array(0);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer = concat(buffer, value);
    for (;;) {
      const end = indexOfBlankLine(buffer, 2048);
      if (end < 0) {
        if (buffer.length > 2048) throw new Error("not an MJPEG stream");
        break;
      }
      const headers = parseHeaders(new TextDecoder().decode(buffer.subarray(0, end)));
      const length = Number.parseInt(headers["content-length"], 10);
      if (!(length >= 0)) throw new Error("a stream part without Content-Length");
      const start = end + 4;
      if (buffer.length < start + length) break;
      onPart({ jpeg: buffer.slice(start, start + length),
                     frame: Number(headers["x-frame-index"]),
                     capturedMs: Number(headers["x-captured-ms"]) });
      buffer = buffer.slice(start + length);
    }
  }
}

// Latest frame wins in the page too: parts are read as fast as they come (so no
// queue builds up in the network buffers), and while one is being decoded only
// the newest of those that arrive meanwhile is kept.
function offerPart(part) {
  if (state.nextPart) stats.skipped += 1;
  state.nextPart = part;
  if (!state.drawing) drawNewest();
}

async function drawNewest() {
  state.drawing = true;
  try {
    while (state.nextPart) {
      const part = state.nextPart;
      state.nextPart = null;
      try {
        await drawPart(part);
      } catch (error) {                  // a damaged JPEG: skip it, keep streaming
        stats.skipped += 1;
      }
    }
  } finally {
    state.drawing = false;
  }
}

async function drawPart(part) {
  const bitmap = await createImageBitmap(new Blob([part.jpeg], { type: "image/jpeg" }));
  if (canvas.width !== bitmap.width || canvas.height !== bitmap.height) {
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
  }
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  requestAnimationFrame(() => {          // just before the paint that shows this frame
    const latency = performance.timeOrigin + performance.now() - part.capturedMs;
    stats.frames += 1;
    stats.lastFrame = part.frame;
    stats.lastLatencyMs = latency;
    stats.latencies.push(latency);
    if (stats.latencies.length > 300) stats.latencies.shift();
  });
}

function streamUrl() {
  const width = Math.round($("stage").clientWidth * (window.devicePixelRatio || 1));
  return `/stream.mjpg?width=${Math.min(4096, Math.max(160, width))}`;
}

async function streamForever() {
  let retryMs = FIRST_RETRY_MS;
  for (;;) {
    const abort = new AbortController();
    let watchdog = setTimeout(() => abort.abort(), STALL_MS);
    try {
      const response = await fetch(streamUrl(), { cache: "no-store", signal: abort.signal });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      await readParts(response.body.getReader(), (part) => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => abort.abort(), STALL_MS);
        retryMs = FIRST_RETRY_MS;
        showDown("");
        offerPart(part);
      });
      throw new Error("the stream ended");
    } catch (error) {
      clearTimeout(watchdog);
      const reason = abort.signal.aborted ? `no frame for ${STALL_MS / 1000} s` : error.message;
      for (let left = retryMs; left > 0; left -= 1000) {
        showDown(`stream down (${reason}); reconnecting in ${Math.ceil(left / 1000)} s`);
        await sleep(Math.min(1000, left));
      }
      retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
    }
  }
}

// ---------------------------------------------------------------- the controls

function send(message) {
  const socket = state.socket;
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    note("not connected to the server; retrying", true);
    return false;
  }
  socket.send(JSON.stringify(message));
  return true;
}

function sendPrompts(prompts) {
  if (prompts.length === 0) {
    note("at least one prompt is needed", true);
    return;
  }
  if (send({ type: "prompts", prompts })) note("applying...");
}

function renderChips(prompts) {
  const key = JSON.stringify(prompts);
  if (key === state.shownKey) return;
  state.shownKey = key;
  state.prompts = prompts;
  $("chips").replaceChildren(...prompts.map((text, i) => {
    const item = document.createElement("li");
    const label = document.createElement("span");
    label.textContent = text;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "\u00d7";
    remove.setAttribute("aria-label", `remove ${text}`);
    remove.addEventListener("click", () => sendPrompts(prompts.filter((_, j) => j !== i)));
    item.append(label, remove);
    return item;
  }));
}

function renderDetections(message) {
  $("detections").replaceChildren(...(message.detections || []).map((detection) => {
    const item = document.createElement("li");
    const label = document.createElement("span");
    label.textContent = detection.label;
    const score = document.createElement("span");
    score.textContent = `${Math.round(detection.score * 100)}%`;
    item.append(label, score);
    return item;
  }));
}

function fixed(value, digits, unit) {
  return value === null || value === undefined ? "-" : `${value.toFixed(digits)}${unit}`;
}

function renderStatus(message) {
  renderChips(message.prompts);
  if (message.failure) note(`not applied: ${message.failure.message}`, true);
  else if (message.pending !== null) note("applying...");
  else if (message.warnings.length) note(message.warnings.join("; "));
  else if ($("prompt-note").textContent === "applying...") note("");
  if (message.frame === null) return;
  if (!state.dragging) {
    $("threshold").value = message.threshold;
    $("threshold-value").textContent = message.threshold.toFixed(2);
  }
  state.paused = message.paused;
  $("pause").textContent = message.paused ? "resume" : "pause";
  $("heatmap").checked = message.heatmap;
  $("status").textContent = [
    `capture ${fixed(message.capture_fps, 1, " fps")}`,
    `inference ${fixed(message.inference_fps, 1, " fps")}`,
    `latency ${fixed(message.latency_ms, 0, " ms")}`,
    `paint ${fixed(stats.lastLatencyMs, 0, " ms")}`,
    `${message.viewers} viewer${message.viewers === 1 ? "" : "s"}`,
  ].join(" \u00b7 ");
  renderDetections(message);
}

function onMessage(event) {
  const message = JSON.parse(event.data);
  if (message.type === "status") renderStatus(message);
  else if (message.type === "error") note(message.message, true);
}

function connect(retryMs = FIRST_RETRY_MS) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws`);
  let opened = false;
  socket.addEventListener("open", () => { opened = true; state.socket = socket; });
  socket.addEventListener("message", onMessage);
  socket.addEventListener("close", () => {
    state.socket = null;
    const next = opened ? FIRST_RETRY_MS : Math.min(retryMs * 2, MAX_RETRY_MS);
    $("status").textContent = `controls disconnected; reconnecting in ${Math.ceil(next / 1000)} s`;
    setTimeout(() => connect(next), next);
  });
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor(sorted.length / 2)] : null;
}

function wire() {
  $("add").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text) return;
    sendPrompts([...state.prompts, text]);
    $("prompt").value = "";
  });
  const threshold = $("threshold");
  threshold.addEventListener("pointerdown", () => { state.dragging = true; });
  threshold.addEventListener("change", () => { state.dragging = false; });
  threshold.addEventListener("input", () => {
    $("threshold-value").textContent = Number(threshold.value).toFixed(2);
    send({ type: "threshold", value: Number(threshold.value) });
  });
  $("pause").addEventListener("click", () => send({ type: "paused", value: !state.paused }));
  $("heatmap").addEventListener("change", (event) =>
    send({ type: "heatmap", value: event.target.checked }));
  setInterval(() => {
    const latency = median(stats.latencies.slice(-60));
    if (latency !== null && state.socket) send({ type: "paint", latency_ms: latency });
  }, PAINT_REPORT_MS);
}

wire();
connect();
streamForever();
