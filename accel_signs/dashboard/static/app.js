// The dashboard's page: five views over the JSON API of accel_signs/dashboard/app.py.
// State the tests read is mirrored in document.body.dataset (runs, curves, evalState, ...).
import { Matrix, PALETTE, bounds, lineChart, presence, skeleton } from "./draw.js";

const $ = (id) => document.getElementById(id);
const state = { runs: [], selected: new Set(), colors: {}, evalResult: null, clip: null, lab: null, controls: [] };
const mark = (key, value) => { document.body.dataset[key] = String(value); };
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
const fmt = (v, d = 4) => (v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(d));

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
  if (message) mark("error", message);
}

async function api(path, body) {
  const init = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new Error(`the dashboard server does not answer (${e.message}); is it still running?`);
  }
  const data = await res.json().catch(() => ({ message: `${path}: HTTP ${res.status}` }));
  if (!res.ok) throw new Error(data.message || `${path}: HTTP ${res.status}`);
  return data;
}

// Runs a handler; its error becomes the page's one message.
const guard = (fn) => async (...args) => {
  try {
    await fn(...args);
  } catch (e) {
    showError(e.message);
  }
};

/* ---------- theme and views ---------- */

function initTheme() {
  const saved = localStorage.getItem("accel-signs-theme");
  const dark = saved ? saved === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  $("theme").addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    localStorage.setItem("accel-signs-theme", next);
    redraw();
  });
}

function showView(name) {
  for (const b of document.querySelectorAll("nav button")) b.setAttribute("aria-selected", String(b.dataset.view === name));
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== `view-${name}`;
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  mark("view", name);
  if (name === "lab" && !state.lab) guard(loadLab)();
  if (name === "data") guard(loadData)();
}

function redraw() {
  drawCurves();
  if (state.evalResult) setMatrix();
  if (state.clip) drawClip();
  if (state.lab) drawLab();
}

/* ---------- runs ---------- */

async function loadRuns() {
  const data = await api("/api/runs");
  $("root").textContent = data.root;
  state.runs = data.runs;
  $("runs-note").textContent = data.problem || `${data.runs.length} run(s); updated every 3 s`;
  data.runs.forEach((r, i) => { state.colors[r.name] ??= PALETTE[i % PALETTE.length]; });
  if (!state.selected.size) for (const r of data.runs.slice(0, 2)) state.selected.add(r.name);
  const rows = data.runs.map((r) => `<tr data-run="${esc(r.name)}">
      <td><input type="checkbox" ${state.selected.has(r.name) ? "checked" : ""} aria-label="curves of ${esc(r.name)}"></td>
      <td><b style="color:${state.colors[r.name]}">${esc(r.name)}</b></td>
      <td><span class="state ${esc(r.state.split(" ")[0])}">${esc(r.state)}</span></td>
      <td class="num">${r.epochs}${r.num_epochs ? ` / ${r.num_epochs}` : ""}</td>
      <td>${esc(r.model_size ?? "–")}</td>
      <td class="num">${fmt(r.best.val_acc)}</td><td class="num">${fmt(r.best.val_loss)}</td>
      <td class="num">${r.best_epoch ?? "–"}</td>
      <td>${r.problems.map((p) => `<div class="problem">${esc(p)}</div>`).join("")}</td></tr>`);
  $("runs").tBodies[0].innerHTML = rows.join("");
  for (const box of $("runs").querySelectorAll("input[type=checkbox]"))
    box.addEventListener("change", guard(async () => {
      const name = box.closest("tr").dataset.run;
      box.checked ? state.selected.add(name) : state.selected.delete(name);
      await loadCurves();
    }));
  fillRunSelects();
  mark("runs", data.runs.length);
  await loadCurves();
}

function fillRunSelects() {
  const names = state.runs.map((r) => r.name);
  const withCkpt = state.runs.filter((r) => r.has_checkpoint).map((r) => r.name);
  const fill = (sel, list, pick) => {
    const keep = sel.value;
    sel.innerHTML = list.map((n) => `<option>${esc(n)}</option>`).join("");
    sel.value = list.includes(keep) ? keep : list[pick] ?? list[0] ?? "";
  };
  fill($("diff-a"), names, 0);
  fill($("diff-b"), names, 1);
  for (const id of ["eval-run", "clip-run", "data-run"]) fill($(id), withCkpt, 0);
}

async function loadCurves() {
  const names = [...state.selected].filter((n) => state.runs.some((r) => r.name === n));
  state.curves = await Promise.all(names.map((n) => api(`/api/runs/${encodeURIComponent(n)}/curves`)));
  drawCurves();
}

function drawCurves() {
  if (!state.curves) return;
  const series = (key, dash) => state.curves.map((c) => ({
    color: state.colors[c.name], dash, points: (c.columns[key] || []).map((v, i) => [c.columns.epoch[i], v]),
  }));
  lineChart($("chart-loss"), [...series("train_loss", false), ...series("val_loss", true)]);
  lineChart($("chart-acc"), series("val_acc", false));
  lineChart($("chart-lr"), series("lr", false), { log: true });
  $("legend").innerHTML = state.curves.map((c) => `<span><i style="background:${state.colors[c.name]}"></i>${esc(c.name)}
     ${c.problems.map((p) => `<span class="problem">${esc(p)}</span>`).join(" ")}</span>`).join("");
  mark("curves", state.curves.filter((c) => (c.columns.epoch || []).length).length);
}

async function loadDiff() {
  const a = $("diff-a").value, b = $("diff-b").value;
  if (!a || !b) return;
  const d = await api(`/api/diff?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
  $("diff-ha").textContent = a;
  $("diff-hb").textContent = b;
  const show = (v) => esc(typeof v === "object" ? JSON.stringify(v) : v);
  $("diff").tBodies[0].innerHTML = d.rows.map((r) => `<tr><td><code>${esc(r.key)}</code></td><td>${show(r.a)}</td><td>${show(r.b)}</td></tr>`).join("");
  $("diff-note").textContent = a === b ? "the same run on both sides" : `${d.rows.length} field(s) differ, ${d.same} are the same (runtime left out)`;
  mark("diffRows", d.rows.length);
}

/* ---------- evaluation ---------- */

async function loadSplits(runSel, splitSel, dataInput) {
  const run = runSel.value;
  if (!run) return;
  const data = dataInput && dataInput.value.trim();
  const info = await api(`/api/runs/${encodeURIComponent(run)}/checkpoint${data ? `?data=${encodeURIComponent(data)}` : ""}`);
  const keep = splitSel.value;
  splitSel.innerHTML = info.splits.map((s) => `<option>${esc(s)}</option>`).join("");
  splitSel.value = info.splits.includes(keep) ? keep : info.splits.includes("test") ? "test" : info.splits[0];
  if (dataInput && !dataInput.value) dataInput.placeholder = info.store;
  return info;
}

async function startEval() {
  showError("");
  const body = {
    run: $("eval-run").value, split: $("eval-split").value || "test",
    data: $("eval-data").value.trim() || null, signers: $("eval-signers").value.trim() || null,
  };
  mark("evalState", "running");
  let job = await api("/api/evaluate", body);
  const bar = $("eval-progress");
  bar.hidden = false;
  const started = performance.now();
  while (job.state === "running") {
    bar.querySelector(".bar > div").style.width = `${job.total ? (100 * job.done) / job.total : 2}%`;
    bar.querySelector("span").textContent = job.total ? `batch ${job.done} of ${job.total}` : "loading the checkpoint and the data…";
    await new Promise((r) => setTimeout(r, 300));
    job = await api(`/api/evaluate/${job.key}`);
  }
  if (job.state === "failed") {
    bar.hidden = true;
    mark("evalState", "failed");
    throw new Error(job.message);
  }
  mark("evalKey", job.key);
  bar.querySelector(".bar > div").style.width = "100%";
  bar.querySelector("span").textContent = "done";
  const t0 = performance.now();
  state.evalResult = await api(`/api/evaluate/${job.key}/result`);
  showResult();
  mark("evalMs", Math.round(performance.now() - started));
  mark("matrixMs", Math.round(performance.now() - t0));
  mark("evalState", "done");
}

function showResult() {
  const { metrics } = state.evalResult;
  $("eval-results").hidden = false;
  const card = (label, value) => `<div class="metric"><b>${value}</b><span>${label}</span></div>`;
  $("metrics").innerHTML = [
    card("top-1 accuracy", fmt(metrics.top1)), card(`top-${metrics.top5_k} accuracy`, fmt(metrics.top5)),
    card("macro F1", fmt(metrics.macro_f1)), card("mean loss", fmt(metrics.mean_loss)),
    card("clips", metrics.num_samples), card("classes", metrics.num_classes),
  ].join("");
  for (const [i, el] of [...$("metrics").children].entries()) el.dataset.metric = ["top1", "top5", "macro_f1", "mean_loss", "num_samples", "num_classes"][i];
  $("signers").tBodies[0].innerHTML = Object.entries(metrics.per_signer).map(([s, v]) =>
    `<tr><td>${esc(s)}</td><td class="num">${v.num_samples}</td><td class="num">${fmt(v.accuracy)}</td></tr>`).join("");
  const most = Math.max(1, ...metrics.top_confusions.map((c) => c.count));
  $("pairs").innerHTML = metrics.top_confusions.map((c) => `<li data-true="${c.true_sign}" data-pred="${c.pred_sign}">
      <span class="bar" style="width:${(60 * c.count) / most}px"></span><b>${c.count}</b>
      ${c.true_sign} <bdi>${esc(c.true)}</bdi> → ${c.pred_sign} <bdi>${esc(c.pred)}</bdi></li>`).join("") || "<li class=muted>no confusions</li>";
  for (const li of $("pairs").querySelectorAll("li[data-true]"))
    li.addEventListener("click", () => listClips(Number(li.dataset.true), Number(li.dataset.pred)));
  drawClasses();
  setMatrix();
  $("cell-clips").innerHTML = "";
  $("clips-title").textContent = "(click a cell or a pair)";
}

function setMatrix() {
  const r = state.evalResult;
  if (!r) return;
  state.signIndex = Object.fromEntries(r.classes.map((c, i) => [c.sign, i]));
  state.matrix.set(r.confusion, r.classes.length, $("matrix-diagonal").checked);
  mark("matrix", r.classes.length);
}

function describeCell(cell) {
  const t0 = performance.now();
  if (!cell || !state.evalResult) {
    $("matrix-tip").textContent = "";
    return;
  }
  const c = state.evalResult.classes;
  const a = c[cell.row], b = c[cell.col];
  $("matrix-tip").textContent = `true ${a.sign} ${a.en || ""} → predicted ${b.sign} ${b.en || ""}: ${cell.count} clip(s)`;
  // How long the hover took, to the next frame: the tests and the benchmark read it.
  requestAnimationFrame(() => {
    const ms = performance.now() - t0;
    state.hovers = (state.hovers || []).concat(ms).slice(-200);
    mark("hoverMs", ms.toFixed(2));
  });
}

function listClips(trueSign, predSign) {
  const rows = state.evalResult.predictions.rows.filter((p) => p[2] === trueSign && p[3] === predSign);
  const cls = state.evalResult.classes, i = state.signIndex[trueSign], j = state.signIndex[predSign];
  $("clips-title").textContent = `true ${trueSign} (${cls[i]?.en ?? ""}) predicted as ${predSign} (${cls[j]?.en ?? ""}): ${rows.length}`;
  $("cell-clips").innerHTML = rows.map((p) =>
    `<li data-clip="${p[0]}">clip ${p[0]} · signer ${esc(p[1])} · confidence ${fmt(p[4], 3)} · top-5 ${p[5].join(", ")}</li>`).join("") || "<li class=muted>no clips</li>";
  for (const li of $("cell-clips").querySelectorAll("li[data-clip]"))
    li.addEventListener("click", guard(() => openClip($("eval-run").value, state.evalResult.metrics.split, Number(li.dataset.clip))));
  state.matrix.mark = i !== undefined && j !== undefined ? { row: i, col: j } : null;
  state.matrix.draw();
  mark("cellClips", rows.length);
}

function drawClasses() {
  const r = state.evalResult;
  const q = $("class-filter").value.trim().toLowerCase();
  const sort = state.sort || { key: "sign", dir: "asc" };
  let rows = r.classes.filter((c) => !q || String(c.sign) === q || `${c.sign} ${c.en} ${c.ar}`.toLowerCase().includes(q));
  rows = rows.slice().sort((a, b) => {
    const x = a[sort.key] ?? -1, y = b[sort.key] ?? -1;
    const d = typeof x === "string" ? x.localeCompare(y) : x - y;
    return sort.dir === "asc" ? d : -d;
  });
  const heat = (v) => v === null ? "" : `background: color-mix(in srgb, var(--bad) ${Math.round(100 * (1 - v))}%, var(--good))`;
  $("classes").tBodies[0].innerHTML = rows.map((c) => `<tr><td class="num">${c.sign}</td><td><bdi>${esc(c.en)}</bdi></td><td dir="rtl"><bdi>${esc(c.ar)}</bdi></td>
     <td class="num">${c.support}</td><td class="num">${c.predicted}</td><td class="num">${fmt(c.precision, 3)}</td><td class="num">${fmt(c.recall, 3)}</td>
     <td class="num heat" style="${heat(c.f1)}; color:#fff">${fmt(c.f1, 3)}</td></tr>`).join("");
  for (const th of $("classes").tHead.rows[0].cells) th.dataset.dir = th.dataset.key === sort.key ? sort.dir : "";
  mark("classRows", rows.length);
}

/* ---------- inspector ---------- */

async function openClip(run, split, clip) {
  showError("");
  $("clip-run").value = run;
  await loadSplits($("clip-run"), $("clip-split"));
  $("clip-split").value = split;
  $("clip-id").value = clip;
  showView("inspect");
  const data = $("eval-data").value.trim();
  state.clip = await api(`/api/clip?run=${encodeURIComponent(run)}&split=${encodeURIComponent(split)}&clip=${clip}${data ? `&data=${encodeURIComponent(data)}` : ""}`);
  // x is a fraction of the video's width, y of its height: drawn in units of the height, a
  // portrait video's signer is not squeezed.
  const aspect = state.clip.aspect;
  state.clip.xy = state.clip.xy.map((f) => f.map((p) => (p && p[0] !== null ? [p[0] * aspect, p[1]] : p)));
  state.clip.box = bounds(state.clip.xy);
  state.clip.frame = 0;
  state.parts = Object.fromEntries(state.clip.layout.parts.map((p) => [p, true]));
  $("clip-body").hidden = false;
  $("frame").max = state.clip.frames - 1;
  $("parts").innerHTML = state.clip.layout.parts.map((p) => `<label><input type="checkbox" data-part="${esc(p)}" checked> ${esc(p.replace("_", " "))}</label>`).join("");
  for (const box of $("parts").querySelectorAll("input"))
    box.addEventListener("change", () => { state.parts[box.dataset.part] = box.checked; drawClip(); });
  const c = state.clip;
  $("clip-true").innerHTML = `<span>${c.true.sign}</span> <bdi>${esc(c.true.en)}</bdi> <bdi dir="rtl">${esc(c.true.ar)}</bdi>`;
  $("clip-verdict").innerHTML = `<span class="verdict ${c.correct ? "right" : "wrong"}">${c.correct ? "right" : "wrong"}</span>`
    + (c.true.in_model ? "" : ' <span class="problem">the model has no class for this sign</span>');
  $("clip-top").innerHTML = c.top.map((t) => `<li class="${t.sign === c.true.sign ? "true" : ""}"><span>${t.rank}. ${t.sign} <bdi>${esc(t.en)}</bdi> <bdi dir="rtl">${esc(t.ar)}</bdi></span>
     <span class="p">${(100 * t.probability).toFixed(1)}%</span><div class="mini"><div style="width:${100 * t.probability}%"></div></div></li>`).join("");
  $("clip-meta").textContent = `clip ${c.clip} of split ${c.split} · signer ${c.signer} · ${c.frames} frames · ${c.sampled.length} sampled (bin centres, as evaluate samples) · aspect ${c.aspect.toFixed(3)}`;
  $("clip-note").textContent = "";
  mark("clip", c.clip);
  setPlaying(true);
  drawClip();
}

function drawClip() {
  const c = state.clip;
  if (!c) return;
  const n = skeleton($("skeleton"), c.xy[c.frame], c.layout, c.box, state.parts);
  presence($("presence"), c.presence, c.sampled, c.frames, c.frame);
  $("frame").value = c.frame;
  $("frame-label").textContent = `frame ${c.frame + 1} / ${c.frames}`;
  mark("clipFrame", c.frame);
  mark("clipPoints", n);
}

function setPlaying(on) {
  state.playing = on;
  $("play").textContent = on ? "Pause" : "Play";
  mark("playing", on ? 1 : 0);
}

/* ---------- augmentation lab ---------- */

async function loadLab() {
  const run = $("clip-run").value || $("eval-run").value;
  if (!run) throw new Error("the lab needs a run with a checkpoint (best/): none in this folder yet");
  const { controls } = await api(`/api/augment/controls?run=${encodeURIComponent(run)}`);
  state.controls = controls;
  state.labRun = run;
  const box = $("lab-controls");
  box.innerHTML = "";
  for (const c of controls) {
    const label = document.createElement("label");
    label.textContent = c.name;
    label.title = `${c.key}: ${c.help} (default ${c.default})`;
    label.htmlFor = `aug-${c.name}`;
    let input, value;
    if (c.kind === "bool") {
      input = Object.assign(document.createElement("input"), { type: "checkbox", checked: !!c.value });
      value = document.createElement("span");
    } else if (c.kind === "choice") {
      input = document.createElement("select");
      input.innerHTML = c.choices.map((o) => `<option>${esc(o)}</option>`).join("");
      input.value = c.value;
      value = document.createElement("span");
    } else if (c.kind === "number") {
      input = Object.assign(document.createElement("input"), { type: "range", min: c.min, max: Math.max(c.max, c.value), step: c.step, value: c.value });
      value = Object.assign(document.createElement("input"), { type: "number", step: c.step, value: c.value });
      value.addEventListener("change", () => { input.value = value.value; labChanged(); });
      input.addEventListener("input", () => { value.value = input.value; });
    } else {
      input = Object.assign(document.createElement("input"), { type: "text", value: c.value });
      value = document.createElement("span");
    }
    input.id = `aug-${c.name}`;
    input.dataset.name = c.name;
    input.title = c.help;
    input.addEventListener("change", labChanged);
    value.dataset.for = c.name;
    box.append(label, input, value);
  }
  await labChanged();
}

function labValues() {
  const out = {};
  for (const c of state.controls) {
    const input = $(`aug-${c.name}`);
    out[c.name] = c.kind === "bool" ? input.checked : c.kind === "number" ? Number($("lab-controls").querySelector(`[data-for="${c.name}"]`).value) : input.value;
  }
  return out;
}

async function labChanged() {
  // Answers can overtake each other: only the newest request's is drawn.
  const seq = (state.labSeq = (state.labSeq || 0) + 1);
  try {
    const values = labValues();
    for (const c of state.controls) $(`aug-${c.name}`).previousSibling.classList.toggle("changed", values[c.name] !== c.value);
    const clip = state.clip && state.clip.split ? state.clip : null;
    const body = {
      run: state.labRun, values, seed: Number($("lab-seed").value) || 0,
      split: clip ? clip.split : $("clip-split").value || "test", clip: clip ? clip.clip : Number($("clip-id").value) || 0,
      data: $("eval-data").value.trim() || null,
    };
    const lab = await api("/api/augment", body);
    if (seq !== state.labSeq) return;
    showError("");
    lab.box = bounds(lab.original, lab.augmented);
    lab.frame = state.lab ? Math.min(state.lab.frame, lab.original.length - 1) : 0;
    state.lab = lab;
    $("lab-snippet").textContent = lab.snippet;
    $("lab-frame").max = lab.original.length - 1;
    $("lab-note").textContent = `clip ${lab.clip} of split ${body.split}, draw ${lab.seed}: both in the model's ${lab.space}, through the training code's sampling and Augmenter`;
    drawLab();
    mark("labDraws", Number(document.body.dataset.labDraws || 0) + 1);
    mark("labSum", checksum(lab.augmented));
  } catch (e) {
    if (seq === state.labSeq) showError(e.message);
  }
}

function checksum(frames) {
  let s = 0;
  frames.forEach((f, t) => f.forEach((p, i) => { if (p && p[0] !== null) s += (p[0] * 3 + p[1] * 7) * ((t + i) % 13 + 1); }));
  return s.toFixed(6);
}

function drawLab() {
  const lab = state.lab;
  const all = Object.fromEntries(lab.layout.parts.map((p) => [p, true]));
  skeleton($("lab-original"), lab.original[lab.frame], lab.layout, lab.box, all);
  skeleton($("lab-augmented"), lab.augmented[lab.frame], lab.layout, lab.box, all);
  $("lab-frame").value = lab.frame;
}

/* ---------- data ---------- */

async function loadData() {
  const run = $("data-run").value;
  if (!run) throw new Error("the Data page shows the store of a run with a checkpoint: none in this folder yet");
  const s = await api(`/api/data?run=${encodeURIComponent(run)}`);
  $("data-path").textContent = s.path;
  const pct = (v) => `${(100 * v).toFixed(1)}%`;
  const rates = (obj) => `<div class="rates">${Object.entries(obj).map(([p, v]) => `<span>${esc(p)}</span><div class="bar"><div style="width:${100 * v}%"></div></div><span class="num">${pct(v)}</span>`).join("")}</div>`;
  const splits = Object.entries(s.splits).map(([name, sp]) => {
    const perClass = sp.clips_per_class;
    const bySigner = Object.entries(sp.detected_by_signer).map(([sg, r]) => `<tr><td>${esc(sg)}</td><td class="num">${sp.clips_per_signer[sg] ?? 0}</td>${s.parts.map((p) => `<td class="num">${pct(r[p])}</td>`).join("")}</tr>`).join("");
    const q = sp.length_percentiles;
    return `<div class="card"><h2>split ${esc(name)} <span class="muted small">${sp.clips} clips, ${sp.frames} frames</span></h2>
      <p class="small">clips per class: min ${Math.min(...perClass)}, max ${Math.max(...perClass)} · clip length (frames): min ${q.min}, 5% ${q["5%"]}, median ${q.median}, 95% ${q["95%"]}, max ${q.max}</p>
      <p class="small">video frame sizes: ${esc(sp.frame_sizes)}</p>
      <p class="small">clips with no detection in any frame: ${esc(s.empty_clips[name])}</p>
      <h2>detected in frames, by part <span class="muted small">(${sp.sampled_frames} frames read)</span></h2>${rates(sp.detected)}
      <h2 style="margin-top:10px">by signer</h2><table class="table"><thead><tr><th>signer</th><th class="num">clips</th>${s.parts.map((p) => `<th class="num">${esc(p)}</th>`).join("")}</tr></thead><tbody>${bySigner}</tbody></table></div>`;
  });
  $("data-body").innerHTML = `<div class="card"><h2>store</h2>
      <p>${s.classes.length} signs (${s.classes[0]?.sign}–${s.classes[s.classes.length - 1]?.sign}), signers ${s.signers.map(esc).join(", ")}, dtype ${esc(s.dtype)},
      layout ${esc(s.layout.name)} (${s.layout.points} points; parts ${s.parts.map(esc).join(", ")})${s.source ? `, source ${esc(typeof s.source === "object" ? JSON.stringify(s.source) : s.source)}` : ""}</p>
      <p class="small">duplicate clips: ${esc(s.duplicates)}</p></div>${splits.join("")}
      <div class="card"><h2>signs</h2><div class="scroll"><table class="table"><thead><tr><th>sign</th><th>English</th><th>Arabic</th>${Object.keys(s.splits).map((n) => `<th class="num">${esc(n)}</th>`).join("")}</tr></thead><tbody>
      ${s.classes.map((c, i) => `<tr><td class="num">${c.sign}</td><td><bdi>${esc(c.en)}</bdi></td><td dir="rtl"><bdi>${esc(c.ar)}</bdi></td>${Object.values(s.splits).map((sp) => `<td class="num">${sp.clips_per_class[i]}</td>`).join("")}</tr>`).join("")}
      </tbody></table></div></div>`;
  mark("data", Object.keys(s.splits).length);
}

/* ---------- wiring ---------- */

function tick() {
  // One clock for both animations: about 15 frames a second.
  if (state.playing && state.clip && !document.hidden && !$("view-inspect").hidden) {
    state.clip.frame = (state.clip.frame + 1) % state.clip.frames;
    drawClip();
  }
  if (state.labPlaying !== false && state.lab && !$("view-lab").hidden) {
    state.lab.frame = (state.lab.frame + 1) % state.lab.original.length;
    drawLab();
  }
}

function init() {
  initTheme();
  state.matrix = new Matrix($("matrix"), describeCell, (cell) => listClips(state.evalResult.classes[cell.row].sign, state.evalResult.classes[cell.col].sign));
  for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => showView(b.dataset.view));
  $("diff-a").addEventListener("change", guard(loadDiff));
  $("diff-b").addEventListener("change", guard(loadDiff));
  $("eval-run").addEventListener("change", guard(() => loadSplits($("eval-run"), $("eval-split"), $("eval-data"))));
  $("eval-data").addEventListener("change", guard(() => loadSplits($("eval-run"), $("eval-split"), $("eval-data"))));
  $("eval-start").addEventListener("click", guard(async () => { $("eval-start").disabled = true; try { await startEval(); } finally { $("eval-start").disabled = false; } }));
  $("zoom-in").addEventListener("click", () => state.matrix.zoomAt(0.5));
  $("zoom-out").addEventListener("click", () => state.matrix.zoomAt(2));
  $("zoom-reset").addEventListener("click", () => state.matrix.reset());
  $("matrix-diagonal").addEventListener("change", setMatrix);
  $("class-filter").addEventListener("input", drawClasses);
  for (const th of $("classes").tHead.rows[0].cells)
    th.addEventListener("click", () => {
      const s = state.sort || { key: "sign", dir: "asc" };
      state.sort = { key: th.dataset.key, dir: s.key === th.dataset.key && s.dir === "asc" ? "desc" : "asc" };
      drawClasses();
    });
  $("clip-run").addEventListener("change", guard(() => loadSplits($("clip-run"), $("clip-split"))));
  $("clip-open").addEventListener("click", guard(() => openClip($("clip-run").value, $("clip-split").value, Number($("clip-id").value))));
  $("play").addEventListener("click", () => setPlaying(!state.playing));
  $("frame").addEventListener("input", () => { setPlaying(false); state.clip.frame = Number($("frame").value); drawClip(); });
  $("lab-redraw").addEventListener("click", () => { $("lab-seed").value = Number($("lab-seed").value) + 1; labChanged(); });
  $("lab-seed").addEventListener("change", labChanged);
  $("lab-reset").addEventListener("click", guard(async () => { state.lab = null; await loadLab(); }));
  $("lab-copy").addEventListener("click", () => navigator.clipboard?.writeText($("lab-snippet").textContent));
  $("lab-play").addEventListener("click", () => { state.labPlaying = state.labPlaying === false; $("lab-play").textContent = state.labPlaying ? "Pause" : "Play"; });
  $("lab-frame").addEventListener("input", () => { state.labPlaying = false; $("lab-play").textContent = "Play"; state.lab.frame = Number($("lab-frame").value); drawLab(); });
  $("data-run").addEventListener("change", guard(loadData));
  setInterval(tick, 66);
  guard(async () => {
    await loadRuns();
    await loadDiff();
    await loadSplits($("eval-run"), $("eval-split"), $("eval-data"));
    await loadSplits($("clip-run"), $("clip-split"));
    showView((location.hash || "#runs").slice(1));
    mark("ready", 1);
  })();
  // Runs keep training: the list and the curves follow them.
  setInterval(guard(async () => { if (!$("view-runs").hidden) await loadRuns(); }), 3000);
}

init();
