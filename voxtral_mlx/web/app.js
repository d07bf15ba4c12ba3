// voxtral live in the browser: microphone -> AudioWorklet (16 kHz PCM16) -> /v1/realtime.
"use strict";
const $ = (id) => document.getElementById(id);
const KEY_STORE = "voxtral-api-key";
const VOCABULARY_STORE = "voxtral-vocabulary";
const live = { ws: null, ctx: null, node: null, stream: null, sent: 0, opened: false, stopping: false,
               started: false, queue: [], opening: false };
// Audio captured while the connection is being set up waits here (at most this many 100 ms
// chunks), so the first words are not lost; it is sent as soon as the session has started.
const MAX_QUEUED = 300;
const UNREACHABLE = "The server is unreachable: is `voxtral serve` still running?";
let text = "";
let cues = [];  // {start, end, text}

function apiKey() { return localStorage.getItem(KEY_STORE) || ""; }
function authHeaders() { return apiKey() ? { Authorization: "Bearer " + apiKey() } : {}; }
// The custom vocabulary field: phrases separated by commas (none: the server's list).
function vocabulary() { return $("vocabulary").value.split(",").map((p) => p.trim()).filter(Boolean); }
function setState(s) { $("state").textContent = s; }
function showMessage(msg) { const m = $("message"); m.textContent = msg; m.hidden = false; }
function clearMessage() { $("message").hidden = true; $("message").textContent = ""; }

function render() {
  const t = $("transcript");
  t.textContent = text.trim();
  if (!text.trim()) t.innerHTML = '<p class="hint">Press Start and speak, or drop an audio file here.</p>';
  $("copy").disabled = $("download").disabled = !text.trim();
  t.scrollTop = t.scrollHeight;
}

function addText(piece, start, end) {
  text += piece;
  const last = cues[cues.length - 1];
  const closed = !last || /[.?!]\s*$/.test(last.text) || end - last.start > 6 || last.text.length > 42;
  if (closed && piece.trim()) cues.push({ start, end, text: piece.trim() });
  else if (last) { last.text = (last.text + piece).replace(/\s+/g, " ").trim(); last.end = Math.max(last.end, end); }
  render();
}

async function explainFailure() {
  // Why did the connection fail? Ask /health, which needs the same key.
  try {
    const r = await fetch("/health", { headers: authHeaders() });
    if (r.status === 401) showMessage(apiKey() ? "The API key is wrong: press Key to enter the right one."
                                               : "This server needs an API key: press Key to enter it.");
    else showMessage("The realtime connection was refused by the server (" + r.status + ").");
  } catch (e) {
    showMessage(UNREACHABLE);
  }
}

async function start() {
  if (live.opening) return;  // a second press while the microphone is being opened
  live.opening = true;
  try { await open(); } finally { live.opening = false; }
}

async function open() {
  clearMessage();
  // The audio graph first, so that capture begins the moment the microphone opens; what is
  // captured while the connection is being set up is queued, not lost.
  let ctx, stream;
  try {
    ctx = new AudioContext({ latencyHint: "playback" });  // capture only: big buffers ride out a busy CPU
    await ctx.audioWorklet.addModule("/static/worklet.js");
  } catch (e) {
    if (ctx) ctx.close();
    // the worklet is served by the server: tell a server that has gone from a browser problem
    const up = await fetch("/health", { headers: authHeaders() }).then(() => true, () => false);
    showMessage(up ? "Audio capture failed: " + e.message : UNREACHABLE);
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1, echoCancellation: false,
      noiseSuppression: false, autoGainControl: false } });
  } catch (e) {
    ctx.close();
    if (e.name === "NotAllowedError" || e.name === "SecurityError") {
      showMessage("Microphone permission was denied: allow the microphone for this page in the browser's site settings, then press Start again.");
    } else {
      showMessage("No microphone could be opened: " + e.message);
    }
    return;
  }
  live.ws = null; live.stopping = false; live.started = false; live.queue = [];
  startAudio(ctx, stream);
  text = ""; cues = []; render();
  const protocols = ["realtime"];
  if (apiKey()) protocols.push("openai-insecure-api-key." + apiKey());
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  let ws;
  try { ws = new WebSocket(scheme + location.host + "/v1/realtime", protocols); }
  catch (e) { showMessage("The server is unreachable: " + e.message); stopAudio(); return; }
  live.ws = ws; live.opened = false; live.sent = 0;
  setState("connecting…");
  $("start").textContent = "Stop";
  ws.onmessage = (msg) => {
    const ev = JSON.parse(msg.data);
    if (ev.type === "session.created") {
      live.opened = true;
      const update = { type: "session.update", model: null };
      if ($("delay").value) update.delay_ms = Number($("delay").value);  // else the server's
      if (vocabulary().length) update.context_bias = vocabulary();  // else the server's
      ws.send(JSON.stringify(update));
      ws.send(JSON.stringify({ type: "input_audio_buffer.commit" }));
      live.started = true;
      for (const chunk of live.queue.splice(0)) sendAudio(chunk);
      setState("listening");
    } else if (ev.type === "transcription.delta") {
      addText(ev.delta, ev.start ?? live.sent, ev.end ?? live.sent);
      if (typeof ev.end === "number") $("latency").textContent = Math.max(0, Math.round(1000 * (live.sent - ev.end))) + " ms";
      if (typeof ev.rtf === "number") $("rtf").textContent = ev.rtf.toFixed(2);
    } else if (ev.type === "transcription.done") {
      text = ev.text.trim() + "\n"; render();
      if (ev.stats && typeof ev.stats.real_time_factor === "number") $("rtf").textContent = ev.stats.real_time_factor.toFixed(2);
      setState("done"); ws.close();
    } else if (ev.type === "error") {
      showMessage("Server: " + ev.error);
    }
  };
  ws.onclose = () => {
    if (!live.opened && !live.stopping) explainFailure();
    else if (!live.stopping) showMessage("The connection to the server was lost.");
    stopAudio(); live.ws = null; $("start").textContent = "Start";
    if ($("state").textContent !== "done") setState("idle");
  };
}

function startAudio(ctx, stream) {
  const node = new AudioWorkletNode(ctx, "pcm-resampler");
  node.port.onmessage = (e) => {
    $("level").value = Math.min(1, e.data.level * 2);
    if (live.stopping) return;
    if (live.started) sendAudio(e.data.pcm);
    else if (live.queue.push(e.data.pcm) > MAX_QUEUED) live.queue.shift();
  };
  ctx.createMediaStreamSource(stream).connect(node);
  live.ctx = ctx; live.node = node; live.stream = stream;
}

function sendAudio(pcm) {
  if (!live.ws || live.ws.readyState !== WebSocket.OPEN) return;
  const bytes = new Uint8Array(pcm);
  let bin = "";
  for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  live.ws.send(JSON.stringify({ type: "input_audio_buffer.append", audio: btoa(bin) }));
  live.sent += bytes.length / 2 / 16000;
}

function stopAudio() {
  if (live.stream) live.stream.getTracks().forEach((t) => t.stop());
  if (live.ctx) live.ctx.close();
  live.stream = live.ctx = live.node = null;
}

function stop() {
  live.stopping = true;
  stopAudio();
  if (live.ws && live.ws.readyState === WebSocket.OPEN && live.started) {
    live.ws.send(JSON.stringify({ type: "input_audio_buffer.commit", final: true }));
    setState("finishing…");
  } else if (live.ws) {
    live.ws.close();  // stopped before the session started: nothing to flush
  }
}

function stamp(s, sep) {
  const ms = Math.round(Math.max(0, s) * 1000);
  const p = (n, w) => String(n).padStart(w, "0");
  return `${p(Math.floor(ms / 3600000), 2)}:${p(Math.floor(ms / 60000) % 60, 2)}:${p(Math.floor(ms / 1000) % 60, 2)}${sep}${p(ms % 1000, 3)}`;
}

function download() {
  const fmt = $("format").value;
  let body = text.trim() + "\n";
  if (fmt === "srt") body = cues.map((c, i) => `${i + 1}\n${stamp(c.start, ",")} --> ${stamp(c.end, ",")}\n${c.text}\n`).join("\n");
  if (fmt === "vtt") body = "WEBVTT\n\n" + cues.map((c) => `${stamp(c.start, ".")} --> ${stamp(c.end, ".")}\n${c.text}\n`).join("\n");
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([body], { type: "text/plain" }));
  a.download = "transcript." + fmt;
  a.click();
  URL.revokeObjectURL(a.href);
}

function upload(file) {
  clearMessage();
  const form = new FormData();
  form.append("file", file);
  form.append("response_format", "verbose_json");
  for (const phrase of vocabulary()) form.append("context_bias", phrase);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/v1/audio/transcriptions");
  for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
  $("upload").hidden = false; $("progress").value = 0; $("upload-label").textContent = "uploading " + file.name;
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) $("progress").value = e.loaded / e.total; };
  xhr.upload.onload = () => { $("progress").removeAttribute("value"); $("upload-label").textContent = "transcribing " + file.name + "…"; };
  xhr.onload = () => {
    $("upload").hidden = true;
    if (xhr.status === 200) {
      const r = JSON.parse(xhr.responseText);
      text = r.text + "\n";
      cues = (r.segments || []).map((s) => ({ start: s.start, end: s.end, text: s.text }));
      render();
    } else if (xhr.status === 401) {
      showMessage(apiKey() ? "The API key is wrong: press Key to enter the right one." : "This server needs an API key: press Key to enter it.");
    } else {
      let msg = xhr.statusText;
      try { msg = JSON.parse(xhr.responseText).error.message; } catch (e) { /* keep the status */ }
      showMessage("The file could not be transcribed: " + msg);
    }
  };
  xhr.onerror = () => { $("upload").hidden = true; showMessage(UNREACHABLE); };
  xhr.send(form);
}

// The delays the server accepts and its default come from /health (which needs the key).
function loadDelays() {
  fetch("/health", { headers: authHeaders() }).then((r) => r.ok ? r.json() : null).then((h) => {
    if (!h || !h.valid_delays_ms) return;
    const select = $("delay");
    const chosen = Number(select.value) || h.delay_ms;
    select.replaceChildren(...h.valid_delays_ms.map((d) => new Option(d + " ms", d, d === h.delay_ms, d === chosen)));
  }).catch(() => {});
}

function setup() {
  $("delay").add(new Option("server default", ""));  // until /health answers
  $("vocabulary").value = localStorage.getItem(VOCABULARY_STORE) || "";
  $("vocabulary").onchange = () => localStorage.setItem(VOCABULARY_STORE, $("vocabulary").value);
  loadDelays();
  $("start").onclick = () => (live.ws ? stop() : start());
  $("copy").onclick = () => navigator.clipboard.writeText(text.trim());
  $("download").onclick = download;
  $("key").onclick = () => { $("key-input").value = apiKey(); $("key-dialog").showModal(); };
  $("key-dialog").addEventListener("close", () => {
    if ($("key-dialog").returnValue === "save") { localStorage.setItem(KEY_STORE, $("key-input").value.trim()); clearMessage(); loadDelays(); }
  });
  const area = $("transcript");
  area.addEventListener("dragover", (e) => { e.preventDefault(); area.classList.add("dragging"); });
  area.addEventListener("dragleave", () => area.classList.remove("dragging"));
  area.addEventListener("drop", (e) => {
    e.preventDefault(); area.classList.remove("dragging");
    if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
  });
  document.addEventListener("keydown", (e) => {
    if (e.code === "Space" && e.target === document.body) { e.preventDefault(); $("start").click(); }
  });
  window.voxtral = { upload };  // for scripted use and tests
}
setup();
