// accel_signs live: camera (or an uploaded video) -> JPEG frames over a WebSocket -> the
// skeleton, the top-5 and the accepted signs back. Plain ES module, no build step.

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
};
const grab = document.createElement("canvas");  // frames are encoded from here

const state = {
  ws: null, model: null, seq: 0, sent: new Map(), acked: -1, stream: null, timer: null, capturing: false,
  mode: "camera", points: null, upload: null, sentence: [], retry: 500,
};

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
  document.body.dataset.ready = "1";
}
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
  state.points = msg.points;
  if (state.upload) {
    state.upload.frames.set(msg.seq - state.upload.firstSeq, msg.points);
    $("upload-progress").textContent = `processed ${state.upload.frames.size} of ${state.upload.total} frames`;
  }
  if (!state.upload || !state.upload.replaying) drawSkeleton(msg.points);
  document.body.dataset.frames = String(Number(document.body.dataset.frames || 0) + 1);
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
  document.body.dataset.predictions = String(Number(document.body.dataset.predictions || 0) + 1);
}

function accepted(sign) {
  state.sentence.push(sign);
  renderSentence();
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
    chip.textContent = sign[lang] || sign.en || String(sign.sign);
    return chip;
  }));
}
ui.speechLang.onchange = renderSentence;
$("clear").onclick = () => { state.sentence = []; renderSentence(); };
$("speak").onclick = () => {
  if (!("speechSynthesis" in window) || !state.sentence.length) return;
  const lang = ui.speechLang.value || "en";
  const utterance = new SpeechSynthesisUtterance(state.sentence.map((s) => s[lang] || s.en).join(" "));
  utterance.lang = lang;
  speechSynthesis.cancel();
  speechSynthesis.speak(utterance);
};

// ---- the skeleton ----------------------------------------------------------------------------
function drawSkeleton(points) {
  const canvas = ui.overlay, video = ui.video;
  const w = video.videoWidth || canvas.clientWidth, h = video.videoHeight || canvas.clientHeight;
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  if (!points || !state.model) return;
  const parts = state.model.layout.part_of_point;
  ctx.lineWidth = Math.max(2, w / 320);
  for (const [a, b] of state.model.layout.bones) {
    const p = points[a], q = points[b];
    if (!p || !q) continue;
    ctx.strokeStyle = PART_COLOURS[parts[a]] || PART_COLOURS.other;
    ctx.beginPath();
    ctx.moveTo(p[0] * w, p[1] * h);
    ctx.lineTo(q[0] * w, q[1] * h);
    ctx.stroke();
  }
  const r = Math.max(1.5, w / 400);
  points.forEach((p, i) => {
    if (!p) return;
    ctx.fillStyle = PART_COLOURS[parts[i]] || PART_COLOURS.other;
    ctx.beginPath();
    ctx.arc(p[0] * w, p[1] * h, parts[i] === "face" ? r * 0.6 : r, 0, 2 * Math.PI);
    ctx.fill();
  });
}

// ---- sending frames ----------------------------------------------------------------------
async function sendFrame(inFlight) {
  const ws = state.ws, video = ui.video;
  if (!ws || ws.readyState !== WebSocket.OPEN || !video.videoWidth) return false;
  if (state.seq - 1 - state.acked >= inFlight) return false;  // wait for answers, drop this tick
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
  state.timer = setInterval(async () => {
    if (state.capturing) return;
    state.capturing = true;
    try { await sendFrame(LIVE_IN_FLIGHT); } finally { state.capturing = false; }
  }, 1000 / CAMERA_FPS);
}

function stopCamera() {
  clearInterval(state.timer);
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
  if (mode === "upload") stopCamera();
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
    if (!(await sendFrame(UPLOAD_IN_FLIGHT + 1))) break;
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
