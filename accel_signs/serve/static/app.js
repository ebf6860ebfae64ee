// accel_signs live: the camera -> keypoints made in this page by MediaPipe (landmarks.js) or
// JPEG frames for the server's MediaPipe -> over a WebSocket -> the top-5 and the accepted signs
// back; an uploaded video always goes as JPEG frames. Plain ES modules, no build step.

import { BrowserTracker } from "./landmarks.js";
import { SessionLog } from "./sessions.js";

const $ = (id) => document.getElementById(id);
const JPEG_QUALITY = 0.8;      // measured: the top-5 moves little at this quality (README)
const MAX_WIDTH = 640;         // frames are sent at most this wide
const CAMERA_FPS = 30;
const LIVE_IN_FLIGHT = 2;      // frames sent but not yet answered: more only adds latency
const UPLOAD_IN_FLIGHT = 4;
const PART_COLOURS = { pose: "#f59e0b", face: "#94a3b8", right_hand: "#22c55e", left_hand: "#3b82f6", other: "#e879f9" };

const ui = {
  video: $("video"), overlay: $("overlay"), stage: $("stage"), hint: $("stage-hint"),
  conn: $("conn"), state: $("state"), fps: $("fps"), latency: $("latency"), dropped: $("dropped"), error: $("error"),
  gloss: $("gloss"), glossOther: $("gloss-other"), bar: $("bar"), confidence: $("confidence"),
  top5: $("top5"), history: $("history"), sentence: $("sentence"), speechLang: $("speech-lang"),
  where: $("where"), voice: $("voice"), autoSpeak: $("auto-speak"), mpTime: $("mp-ms"),
};
const grab = document.createElement("canvas");  // frames are encoded from here

const state = {
  ws: null, model: null, seq: 0, sent: new Map(), acked: -1, stream: null, timer: null, capturing: false,
  mode: "camera", points: null, upload: null, sentence: [], retry: 500,
  where: "server", tracker: null, trackerFailed: null,  // where MediaPipe runs for the camera
};
const log = new SessionLog(localStorage);

// Preferences kept between visits, in this browser only.
function pref(name, fallback) {
  try { return JSON.parse(localStorage.getItem(`accel_signs.${name}`)) ?? fallback; } catch { return fallback; }
}
function setPref(name, value) { localStorage.setItem(`accel_signs.${name}`, JSON.stringify(value)); }

// ---- theme ---------------------------------------------------------------------------------
function setTheme(theme) {
  document.documentElement.dataset.theme = theme;
  localStorage.setItem("accel_signs.theme", theme);
}
setTheme(localStorage.getItem("accel_signs.theme") ||
  (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));
$("theme").onclick = () => setTheme(document.documentElement.dataset.theme === "dark" ? "light" : "dark");

// ---- connection ----------------------------------------------------------------------------
function connect() {
  // Relative to the page's <base>: the server's --root-path behind a proxy, "/" otherwise.
  const url = new URL("ws", document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  state.seq = 0; state.acked = -1; state.sent.clear();
  setConn("connecting", "");
  ws.onopen = () => { setConn("connected", "on"); state.retry = 500; };
  ws.onmessage = (event) => handle(JSON.parse(event.data));
  ws.onclose = (event) => {
    setConn(event.code === 1013 ? "server busy" : "disconnected", "off");
    if (state.ws === ws) setTimeout(connect, state.retry = Math.min(state.retry * 2, 8000));
  };
}

function setConn(text, cls) {
  ui.conn.textContent = text;
  ui.conn.className = `pill ${cls}`;
  document.body.dataset.connection = text;
}

function handle(msg) {
  switch (msg.type) {
    case "hello": return hello(msg);
    case "frame": return frame(msg);
    case "prediction": return prediction(msg);
    case "accepted": return accepted(msg);
    case "clip_result": return clipResult(msg);
    case "error": return showError(msg);
  }
}

function hello(msg) {
  state.model = msg;
  const acc = msg.val_acc == null ? "" : `, val accuracy ${(msg.val_acc * 100).toFixed(1)}%`;
  $("model").textContent = `${msg.classes} signs · layout ${msg.layout.name}${acc}`;
  ui.speechLang.replaceChildren(...msg.languages.map((lang) => new Option(LANG_NAMES[lang] || lang, lang)));
  ui.speechLang.value = msg.languages.includes(pref("speechLang", "")) ? pref("speechLang", "") : msg.languages[0];
  fillVoices();
  chooseWhere(pref("where", "browser")).finally(() => { document.body.dataset.ready = "1"; });
}

// ---- where MediaPipe runs: in this page (the default where it can), or on the server ----------
async function chooseWhere(wanted) {
  if (wanted === "browser" && !state.tracker && !state.trackerFailed) {
    ui.where.disabled = true;
    try {
      state.tracker = await BrowserTracker.create(state.model);
    } catch (e) {
      state.trackerFailed = String(e.message || e);
      console.warn("MediaPipe cannot run in this page; the server runs it:", e);
    }
    ui.where.disabled = false;
  }
  state.where = wanted === "browser" && state.tracker ? "browser" : "server";
  ui.where.value = state.where;
  ui.where.title = state.trackerFailed ? `MediaPipe in this browser: ${state.trackerFailed}` : "";
  $("where-note").textContent = wanted === "browser" && !state.tracker ? "(not available here)" : "";
  document.body.dataset.where = state.where;
}
ui.where.onchange = () => { setPref("where", ui.where.value); chooseWhere(ui.where.value); };
const LANG_NAMES = { en: "English", ar: "العربية" };

function showError(msg) {
  ui.error.textContent = `${msg.code}: ${msg.message}`;
  ui.error.hidden = false;
  clearTimeout(showError.timer);
  showError.timer = setTimeout(() => { ui.error.hidden = true; }, 6000);
  if (msg.seq != null) ack(msg.seq);
}

function ack(seq) {
  if (seq <= state.acked) return;
  for (let s = state.acked + 1; s <= seq; s++) state.sent.delete(s);
  state.acked = seq;
}

// ---- what the server sends back ------------------------------------------------------------
function frame(msg) {
  const sentAt = state.sent.get(msg.seq);
  if (sentAt != null) ui.latency.textContent = Math.round(performance.now() - sentAt);
  ack(msg.seq);
  ui.fps.textContent = msg.fps.toFixed(1);
  ui.dropped.textContent = msg.dropped;
  ui.state.textContent = msg.state;
  ui.state.className = `pill ${msg.state === "signing" ? "signing" : ""}`;
  document.body.dataset.state = msg.state;
  if (!msg.points) return count("frames");  // keypoints from this page: drawn when made
  state.points = msg.points;
  if (state.upload) {
    state.upload.frames.set(msg.seq - state.upload.firstSeq, msg.points);
    $("upload-progress").textContent = `processed ${state.upload.frames.size} of ${state.upload.total} frames`;
  }
  if (!state.upload || !state.upload.replaying) drawSkeleton(msg.points);
  count("frames");
}

function count(what, n = 1) {  // counters the browser test reads
  document.body.dataset[what] = String(Number(document.body.dataset[what] || 0) + n);
}

function names(entry) {
  const langs = state.model ? state.model.languages : ["en"];
  return langs.map((lang) => entry[lang]).filter(Boolean);
}

function prediction(msg) {
  const best = msg.top[0];
  const [first, ...others] = names(best);
  ui.gloss.textContent = msg.unknown ? "unknown" : first;
  ui.gloss.classList.toggle("unknown", msg.unknown);
  ui.glossOther.textContent = msg.unknown ? "" : others.join(" · ");
  ui.bar.style.width = `${(best.probability * 100).toFixed(1)}%`;
  ui.confidence.textContent = msg.unknown
    ? `best guess ${first} at ${(best.probability * 100).toFixed(0)}%, under the ${(state.model.live.threshold * 100).toFixed(0)}% threshold`
    : `${(best.probability * 100).toFixed(1)}% · ${msg.frames} frames · model ${msg.timing_ms.model ?? 0} ms`;
  ui.top5.replaceChildren(...msg.top.map((entry) => {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.className = "names";
    for (const name of names(entry)) {
      const bdi = document.createElement("bdi");
      bdi.textContent = name;
      label.append(bdi);
    }
    const p = document.createElement("span");
    p.className = "p";
    p.textContent = `${(entry.probability * 100).toFixed(1)}%`;
    const mini = document.createElement("div");
    mini.className = "mini";
    mini.innerHTML = `<div style="width:${(entry.probability * 100).toFixed(1)}%"></div>`;
    li.append(label, p, mini);
    return li;
  }));
  count("predictions");
  if (!msg.unknown && msg.type === "prediction") state.lastTop = { seq: msg.seq, top: msg.top };
}

function accepted(sign) {
  // The sentence skips a sign repeated back to back (the history keeps each).
  const last = state.sentence[state.sentence.length - 1];
  if (!last || last.class_id !== sign.class_id) {
    state.sentence.push(sign);
    if (ui.autoSpeak.checked) speak(signName(sign));
  }
  renderSentence();
  log.add(sign);
  renderSessions();
  const li = document.createElement("li");
  const when = new Date().toLocaleTimeString();
  li.innerHTML = `<bdi></bdi> <span class="when"></span>`;
  li.firstChild.textContent = names(sign).join(" · ");
  li.lastChild.textContent = `${(sign.probability * 100).toFixed(0)}% · ${when}`;
  ui.history.prepend(li);
}

function renderSentence() {
  const lang = ui.speechLang.value || "en";
  ui.sentence.replaceChildren(...state.sentence.map((sign) => {
    const chip = document.createElement("bdi");
    chip.className = "chip";
    chip.textContent = signName(sign);
    return chip;
  }));
}
function signName(sign) {
  const lang = ui.speechLang.value || "en";
  return sign[lang] || sign.en || String(sign.sign);
}
ui.speechLang.onchange = () => { setPref("speechLang", ui.speechLang.value); fillVoices(); renderSentence(); };
$("clear").onclick = () => { state.sentence = []; renderSentence(); };
$("speak").onclick = () => { if (state.sentence.length) speak(state.sentence.map(signName).join(" ")); };

// ---- speech: the browser's own voices, one chosen per language ------------------------------
const PREFERRED_VOICES = { ar: ["ar-EG", "ar-SA"], en: ["en-US", "en-GB"] };
function voicesFor(lang) {
  if (!("speechSynthesis" in window)) return [];
  const preferred = PREFERRED_VOICES[lang] || [];
  const rank = (v) => { const i = preferred.indexOf(v.lang.replace("_", "-")); return i < 0 ? preferred.length : i; };
  return speechSynthesis.getVoices().filter((v) => v.lang.toLowerCase().startsWith(lang)).sort((a, b) => rank(a) - rank(b));
}
function fillVoices() {
  const lang = ui.speechLang.value || "en";
  const voices = voicesFor(lang);
  ui.voice.replaceChildren(new Option("default voice", ""),
    ...voices.map((v) => new Option(`${v.name} (${v.lang})`, v.name)));
  const saved = pref(`voice.${lang}`, "");
  ui.voice.value = voices.some((v) => v.name === saved) ? saved : "";
}
if ("speechSynthesis" in window) speechSynthesis.onvoiceschanged = fillVoices;
ui.voice.onchange = () => setPref(`voice.${ui.speechLang.value || "en"}`, ui.voice.value);
ui.autoSpeak.checked = pref("autoSpeak", false);
ui.autoSpeak.onchange = () => setPref("autoSpeak", ui.autoSpeak.checked);

function speak(text) {
  if (!("speechSynthesis" in window) || !text) return;
  const lang = ui.speechLang.value || "en";
  const utterance = new SpeechSynthesisUtterance(text);
  const voice = voicesFor(lang).find((v) => v.name === ui.voice.value);
  utterance.lang = voice ? voice.lang : lang;
  if (voice) utterance.voice = voice;
  speechSynthesis.speak(utterance);  // queued: signs accepted in a row are spoken in turn
}

// ---- the session log: this browser's storage only, exportable as text -----------------------
function renderSessions() {
  const list = $("sessions");
  list.replaceChildren(...log.sessions().slice(0, 8).map((session) => {
    const li = document.createElement("li");
    const when = new Date(session.start).toLocaleString();
    li.innerHTML = "<span class=\"when\"></span> <bdi></bdi>";
    li.firstChild.textContent = `${when} · ${session.signs.length} sign(s)`;
    li.lastChild.textContent = session.signs.map((s) => s.en || s.ar || s.sign).slice(-6).join(" · ");
    return li;
  }));
  $("sessions-count").textContent = `${log.sessions().length} kept`;
}
$("export-log").onclick = () => {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([log.text()], { type: "text/plain;charset=utf-8" }));
  link.download = `accel_signs-sessions-${new Date().toISOString().slice(0, 10)}.txt`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
};
$("clear-log").onclick = () => { if (confirm("Delete every past session kept in this browser?")) { log.clear(); renderSessions(); } };
renderSessions();

// ---- the skeleton, as the drawing controls say (kept between visits) --------------------------
const drawing = { face: true, pose: true, hands: true, style: "both", simpleFace: true, ...pref("drawing", {}) };
for (const key of ["face", "pose", "hands", "simpleFace"]) {
  const box = $(`draw-${key}`);
  box.checked = drawing[key];
  box.onchange = () => { drawing[key] = box.checked; setPref("drawing", drawing); drawSkeleton(state.points); };
}
$("draw-style").value = drawing.style;
$("draw-style").onchange = (e) => { drawing.style = e.target.value; setPref("drawing", drawing); drawSkeleton(state.points); };

// The face mesh's contours (lips, eyes, brows, oval), by MediaPipe face index: the points of the
// vendored module's FaceLandmarker.FACE_LANDMARKS_CONTOURS (128; here so that the page need not
// load MediaPipe to draw). A layout with the whole mesh (holistic543) draws only these when
// "simple face" is on; karsl184's face is these points already.
const FACE_CONTOURS = new Set([
  0, 7, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67, 70, 78, 80, 81, 82, 84,
  87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145, 146, 148, 149, 150, 152, 153, 154, 155,
  157, 158, 159, 160, 161, 162, 163, 172, 173, 176, 178, 181, 185, 191, 234, 246, 249, 251, 263, 267, 269, 270,
  276, 282, 283, 284, 285, 288, 291, 293, 295, 296, 297, 300, 308, 310, 311, 312, 314, 317, 318, 321, 323, 324,
  332, 334, 336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381, 382, 384, 385, 386, 387, 388,
  389, 390, 397, 398, 400, 402, 405, 409, 415, 454, 466,
]);

function shownPoints() {
  // Which of the layout's points the controls show: a part switched off, and the mesh's inner points.
  const layout = state.model.layout, parts = layout.part_of_point;
  const key = `${drawing.face}${drawing.pose}${drawing.hands}${drawing.simpleFace}${layout.name}`;
  if (shownPoints.cache && shownPoints.cacheKey === key) return shownPoints.cache;
  const on = (i) => {
    const part = parts[i];
    if (part === "face") {
      if (!drawing.face) return false;
      const source = layout.sources && layout.sources[i];
      return !drawing.simpleFace || !source || FACE_CONTOURS.has(source[1]);
    }
    if (part === "pose") return drawing.pose;
    if (part === "left_hand" || part === "right_hand") return drawing.hands;
    return true;
  };
  shownPoints.cache = parts.map((_, i) => on(i));
  shownPoints.cacheKey = key;
  return shownPoints.cache;
}

function drawSkeleton(points) {
  const canvas = ui.overlay, video = ui.video;
  const w = video.videoWidth || canvas.clientWidth, h = video.videoHeight || canvas.clientHeight;
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  if (!points || !state.model) return;
  const parts = state.model.layout.part_of_point, shown = shownPoints();
  ctx.lineWidth = Math.max(2, w / 320);
  if (drawing.style !== "points") {
    for (const [a, b] of state.model.layout.bones) {
      const p = points[a], q = points[b];
      if (!p || !q || !shown[a] || !shown[b]) continue;
      ctx.strokeStyle = PART_COLOURS[parts[a]] || PART_COLOURS.other;
      ctx.beginPath();
      ctx.moveTo(p[0] * w, p[1] * h);
      ctx.lineTo(q[0] * w, q[1] * h);
      ctx.stroke();
    }
  }
  if (drawing.style === "lines") return;
  const r = Math.max(1.5, w / 400);
  points.forEach((p, i) => {
    if (!p || !shown[i]) return;
    ctx.fillStyle = PART_COLOURS[parts[i]] || PART_COLOURS.other;
    ctx.beginPath();
    ctx.arc(p[0] * w, p[1] * h, parts[i] === "face" ? r * 0.6 : r, 0, 2 * Math.PI);
    ctx.fill();
  });
}

// ---- sending frames ----------------------------------------------------------------------
async function sendFrame(inFlight, jpeg = false) {
  const ws = state.ws, video = ui.video;
  if (!ws || ws.readyState !== WebSocket.OPEN || !video.videoWidth) return false;
  if (state.seq - 1 - state.acked >= inFlight) return false;  // wait for answers, drop this tick
  if (!jpeg && state.where === "browser") return sendKeypoints(ws, video);
  const scale = Math.min(1, MAX_WIDTH / video.videoWidth);
  grab.width = Math.round(video.videoWidth * scale);
  grab.height = Math.round(video.videoHeight * scale);
  grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
  const blob = await new Promise((resolve) => grab.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
  if (!blob || ws.readyState !== WebSocket.OPEN) return false;
  state.sent.set(state.seq++, performance.now());
  ws.send(await blob.arrayBuffer());
  return true;
}

// MediaPipe in this page on the camera's frame; the server gets the keypoints, never the image.
function sendKeypoints(ws, video) {
  const start = performance.now();
  let found;
  try {
    found = state.tracker.detect(video, start);
  } catch (e) {  // MediaPipe failed on this browser's frames: the server takes over
    state.trackerFailed = String(e.message || e);
    state.tracker = null;
    chooseWhere("browser");
    showError({ code: "mediapipe", message: `MediaPipe stopped in this page (${state.trackerFailed}); the server runs it now` });
    return false;
  }
  const took = performance.now() - start;
  state.mpMs = state.mpMs == null ? took : 0.9 * state.mpMs + 0.1 * took;
  ui.mpTime.textContent = `MediaPipe here ${Math.round(state.mpMs)} ms`;
  state.points = found.points.map((p) => (p[0] !== 0 || p[1] !== 0 ? p : null));
  drawSkeleton(state.points);
  state.sent.set(state.seq++, performance.now());
  ws.send(JSON.stringify({ type: "keypoints", width: video.videoWidth, height: video.videoHeight, points: found.points }));
  count("keypointsSent");
  return true;
}

async function startCamera() {
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (e) {
    return showError({ code: "camera", message: `the camera is not available (${e.name}): ${e.message}` });
  }
  ui.video.srcObject = state.stream;
  await ui.video.play();
  ui.hint.hidden = true;
  $("start").disabled = true; $("stop").disabled = false;
  log.start();
  renderSessions();
  state.timer = setInterval(async () => {
    if (state.capturing) return;
    state.capturing = true;
    try { await sendFrame(LIVE_IN_FLIGHT); } finally { state.capturing = false; }
  }, 1000 / CAMERA_FPS);
}

function stopCamera() {
  clearInterval(state.timer);
  log.end();
  renderSessions();
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.stream = null;
  ui.video.srcObject = null;
  $("start").disabled = false; $("stop").disabled = true;
  ui.hint.hidden = false;
  drawSkeleton(null);
}
$("start").onclick = startCamera;
$("stop").onclick = stopCamera;
$("mirror").onchange = (e) => ui.stage.classList.toggle("mirrored", e.target.checked && state.mode === "camera");
ui.stage.classList.add("mirrored");

// ---- upload mode: every frame of a video, classified whole, then replayed --------------------
function setMode(mode) {
  state.mode = mode;
  $("mode-camera").setAttribute("aria-selected", String(mode === "camera"));
  $("mode-upload").setAttribute("aria-selected", String(mode === "upload"));
  $("camera-controls").hidden = mode !== "camera";
  $("upload-controls").hidden = mode !== "upload";
  ui.stage.classList.toggle("mirrored", mode === "camera" && $("mirror").checked);
  if (mode === "upload" && state.stream) stopCamera();
  ui.hint.textContent = mode === "camera" ? "Press “Start camera”, or upload a video." : "Choose a video file.";
}
$("mode-camera").onclick = () => setMode("camera");
$("mode-upload").onclick = () => setMode("upload");

function seek(video, t) {
  return new Promise((resolve) => {
    video.addEventListener("seeked", resolve, { once: true });
    video.currentTime = t;
  });
}

async function waitForAnswers(limit) {
  while (state.seq - 1 - state.acked >= limit) await new Promise((r) => setTimeout(r, 5));
}

$("file").onchange = async (event) => {
  const file = event.target.files[0];
  if (!file || !state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  const video = ui.video;
  video.srcObject = null;
  video.src = URL.createObjectURL(file);
  await new Promise((resolve, reject) => { video.onloadedmetadata = resolve; video.onerror = reject; })
    .catch(() => showError({ code: "video", message: `${file.name}: the browser cannot play this video` }));
  if (!video.duration) return;
  ui.hint.hidden = true;
  const fps = 30, total = Math.max(1, Math.floor(video.duration * fps));
  state.upload = { frames: new Map(), firstSeq: state.seq, total, fps, replaying: false };
  $("replay").disabled = true;
  state.ws.send(JSON.stringify({ type: "clip_start", fps }));
  for (let i = 0; i < total; i++) {
    await seek(video, Math.min(i / fps, video.duration - 1e-3));
    await waitForAnswers(UPLOAD_IN_FLIGHT);
    if (!(await sendFrame(UPLOAD_IN_FLIGHT + 1, true))) break;
  }
  await waitForAnswers(1);
  state.ws.send(JSON.stringify({ type: "clip_end" }));
};

function clipResult(msg) {
  prediction(msg);
  $("upload-progress").textContent = `${msg.frames} frames classified whole`;
  $("replay").disabled = false;
  document.body.dataset.clipResult = "1";
  replay();
}

function replay() {
  const up = state.upload, video = ui.video;
  if (!up) return;
  up.replaying = true;
  video.currentTime = 0;
  video.play();
  const step = () => {
    drawSkeleton(up.frames.get(Math.min(up.total - 1, Math.floor(video.currentTime * up.fps))));
    if (!video.paused && !video.ended) requestAnimationFrame(step);
    else up.replaying = false;
  };
  requestAnimationFrame(step);
}
$("replay").onclick = replay;

connect();
