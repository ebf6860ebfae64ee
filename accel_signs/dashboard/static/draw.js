// Canvas drawing for the dashboard: line charts, the confusion matrix, skeletons, presence.

export const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];
const PART_COLORS = { pose: "#e5e7eb", face: "#94a3b8", right_hand: "#f87171", left_hand: "#60a5fa" };
const EXTRA_PARTS = ["#fbbf24", "#34d399", "#c084fc", "#fb923c"];

export function css(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

export function partColor(part, index) {
  return PART_COLORS[part] || EXTRA_PARTS[index % EXTRA_PARTS.length];
}

function niceTicks(lo, hi, n = 4) {
  if (!(hi > lo)) return [lo];
  const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
  const err = (hi - lo) / n / step;
  const s = step * (err >= 5 ? 10 : err >= 2 ? 5 : err >= 1.5 ? 2 : 1);
  const out = [];
  for (let v = Math.ceil(lo / s) * s; v <= hi + 1e-12; v += s) out.push(+v.toPrecision(6));
  return out;
}

// series: [{color, dash, points: [[x, y], ...]}]; the axes fit every series.
export function lineChart(canvas, series, { log = false } = {}) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = { l: 54, r: 10, t: 10, b: 26 };
  ctx.clearRect(0, 0, w, h);
  const pts = series.flatMap((s) => s.points).filter(([, y]) => Number.isFinite(y) && (!log || y > 0));
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = css("--muted");
  if (!pts.length) {
    ctx.fillText("no epochs yet", w / 2 - 30, h / 2);
    return 0;
  }
  const tf = log ? Math.log10 : (v) => v;
  let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...pts.map((p) => tf(p[1]))), Math.max(...pts.map((p) => tf(p[1])))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (w - pad.l - pad.r);
  const Y = (y) => h - pad.b - ((tf(y) - y0) / (y1 - y0)) * (h - pad.t - pad.b);
  ctx.strokeStyle = css("--line");
  ctx.lineWidth = 1;
  for (const t of niceTicks(y0, y1)) {
    const y = h - pad.b - ((t - y0) / (y1 - y0)) * (h - pad.t - pad.b);
    ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(w - pad.r, y); ctx.stroke();
    const v = log ? Math.pow(10, t) : t;
    ctx.fillText(Math.abs(v) < 1e-3 && v !== 0 ? v.toExponential(0) : String(+v.toPrecision(3)), 4, y + 4);
  }
  for (const t of niceTicks(x0, x1, 6).filter(Number.isInteger)) ctx.fillText(String(t), X(t) - 3, h - 8);
  for (const s of series) {
    ctx.strokeStyle = s.color;
    ctx.lineWidth = 2;
    ctx.setLineDash(s.dash ? [6, 4] : []);
    ctx.beginPath();
    let started = false;
    for (const [x, y] of s.points) {
      if (!Number.isFinite(y) || (log && y <= 0)) continue;
      started ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y));
      started = true;
    }
    ctx.stroke();
    if (s.points.length === 1) { ctx.fillStyle = s.color; ctx.fillRect(X(s.points[0][0]) - 2, Y(s.points[0][1]) - 2, 5, 5); ctx.fillStyle = css("--muted"); }
  }
  ctx.setLineDash([]);
  return series.length;
}

// The confusion matrix: n x n counts drawn once into an n x n bitmap, then scaled by the
// view (zoom, pan) without smoothing; hover and click map a pixel back to a cell.
export class Matrix {
  constructor(canvas, onHover, onClick) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.onHover = onHover;
    this.onClick = onClick;
    this.view = { x: 0, y: 0, size: 1 };  // the visible square of the matrix, in cells
    this.bitmap = null;
    canvas.addEventListener("mousemove", (e) => this.hover(e));
    canvas.addEventListener("mouseleave", () => this.onHover(null));
    canvas.addEventListener("wheel", (e) => { e.preventDefault(); this.zoomAt(e.deltaY < 0 ? 0.8 : 1.25, this.cellAt(e, true)); }, { passive: false });
    canvas.addEventListener("mousedown", (e) => { this.drag = { x: e.clientX, y: e.clientY, view: { ...this.view }, moved: false }; });
    window.addEventListener("mouseup", (e) => {
      if (this.drag && !this.drag.moved && e.target === canvas) { const c = this.cellAt(e); if (c) this.onClick(c); }
      this.drag = null;
    });
    window.addEventListener("mousemove", (e) => {
      if (!this.drag) return;
      const r = canvas.getBoundingClientRect(), per = this.view.size / r.width;
      const dx = (e.clientX - this.drag.x) * per, dy = (e.clientY - this.drag.y) * per;
      if (Math.abs(e.clientX - this.drag.x) + Math.abs(e.clientY - this.drag.y) > 3) this.drag.moved = true;
      this.view.x = this.clamp(this.drag.view.x - dx);
      this.view.y = this.clamp(this.drag.view.y - dy);
      this.draw();
    });
  }

  set(counts, n, hideDiagonal) {
    this.counts = counts;
    this.n = n;
    const img = new ImageData(n, n);
    let max = 0;
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (!(hideDiagonal && i === j)) max = Math.max(max, counts[i * n + j]);
    const dark = document.documentElement.dataset.theme === "dark";
    const base = dark ? [24, 32, 43] : [255, 255, 255];
    const hot = dark ? [96, 165, 250] : [29, 78, 216];
    const off = dark ? [248, 113, 113] : [220, 38, 38];
    const logMax = Math.log1p(max || 1);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
      const v = hideDiagonal && i === j ? 0 : counts[i * n + j];
      const t = v ? 0.15 + 0.85 * Math.log1p(v) / logMax : 0;
      const to = i === j ? hot : off;
      const k = 4 * (i * n + j);
      for (let c = 0; c < 3; c++) img.data[k + c] = Math.round(base[c] + (to[c] - base[c]) * t);
      img.data[k + 3] = 255;
    }
    this.bitmap = document.createElement("canvas");
    this.bitmap.width = this.bitmap.height = n;
    this.bitmap.getContext("2d").putImageData(img, 0, 0);
    if (this.view.size > n || this.view.size === 1) this.view = { x: 0, y: 0, size: n };
    this.draw();
  }

  clamp(v) { return Math.max(0, Math.min(this.n - this.view.size, v)); }

  zoomAt(factor, at) {
    const size = Math.max(8, Math.min(this.n, this.view.size * factor));
    const cx = at ? at.fx : this.view.x + this.view.size / 2, cy = at ? at.fy : this.view.y + this.view.size / 2;
    const rx = (cx - this.view.x) / this.view.size, ry = (cy - this.view.y) / this.view.size;
    this.view.size = size;
    this.view.x = this.clamp(cx - rx * size);
    this.view.y = this.clamp(cy - ry * size);
    this.draw();
  }

  reset() { this.view = { x: 0, y: 0, size: this.n }; this.draw(); }

  draw() {
    if (!this.bitmap) return;
    const { ctx, canvas, view } = this;
    ctx.imageSmoothingEnabled = false;
    ctx.fillStyle = css("--panel");
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(this.bitmap, view.x, view.y, view.size, view.size, 0, 0, canvas.width, canvas.height);
    const cell = canvas.width / view.size;
    if (cell >= 6) {  // grid lines once cells are big enough to see
      ctx.strokeStyle = css("--line");
      ctx.lineWidth = 1;
      ctx.beginPath();
      for (let k = Math.ceil(view.x); k <= view.x + view.size; k++) { const p = (k - view.x) * cell; ctx.moveTo(p, 0); ctx.lineTo(p, canvas.height); }
      for (let k = Math.ceil(view.y); k <= view.y + view.size; k++) { const p = (k - view.y) * cell; ctx.moveTo(0, p); ctx.lineTo(canvas.width, p); }
      ctx.stroke();
    }
    if (cell >= 22) {  // counts inside the cells when zoomed in far enough
      const max = Math.max(1, ...this.counts);
      ctx.font = `${Math.min(14, cell / 2.4)}px system-ui, sans-serif`;
      ctx.textAlign = "center";
      for (let i = Math.floor(view.y); i < Math.min(this.n, view.y + view.size); i++)
        for (let j = Math.floor(view.x); j < Math.min(this.n, view.x + view.size); j++) {
          const v = this.counts[i * this.n + j];
          if (!v) continue;
          ctx.fillStyle = Math.log1p(v) / Math.log1p(max) > 0.45 ? "#fff" : css("--text");  // readable on dark cells
          ctx.fillText(String(v), (j - view.x + 0.5) * cell, (i - view.y + 0.5) * cell + 4);
        }
      ctx.textAlign = "start";
    }
    if (this.mark) {
      ctx.strokeStyle = css("--text");
      ctx.lineWidth = 2;
      ctx.strokeRect((this.mark.col - view.x) * cell, (this.mark.row - view.y) * cell, cell, cell);
    }
    this.canvas.dataset.draws = String(Number(this.canvas.dataset.draws || 0) + 1);
  }

  cellAt(e, fractional = false) {
    const r = this.canvas.getBoundingClientRect();
    const fx = this.view.x + ((e.clientX - r.left) / r.width) * this.view.size;
    const fy = this.view.y + ((e.clientY - r.top) / r.height) * this.view.size;
    const row = Math.floor(fy), col = Math.floor(fx);
    if (row < 0 || col < 0 || row >= this.n || col >= this.n) return fractional ? { fx, fy } : null;
    return { row, col, fx, fy, count: this.counts[row * this.n + col] };
  }

  hover(e) {
    if (this.drag && this.drag.moved) return;
    this.onHover(this.cellAt(e));
  }
}

// The bounds of every point of every frame (null: missing), padded, as a square.
export function bounds(...clips) {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const frames of clips) for (const f of frames) for (const p of f) {
    if (!p || p[0] === null) continue;
    x0 = Math.min(x0, p[0]); x1 = Math.max(x1, p[0]); y0 = Math.min(y0, p[1]); y1 = Math.max(y1, p[1]);
  }
  if (!Number.isFinite(x0)) return { x: 0, y: 0, size: 1 };
  const size = Math.max(x1 - x0, y1 - y0, 1e-6) * 1.1;
  return { x: (x0 + x1) / 2 - size / 2, y: (y0 + y1) / 2 - size / 2, size };
}

// One frame of a skeleton: bones and points of the parts that are on.
export function skeleton(canvas, frame, layout, box, partsOn) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.fillStyle = "#0b0f14";
  ctx.fillRect(0, 0, w, h);
  if (!frame) return 0;
  const X = (p) => ((p[0] - box.x) / box.size) * w, Y = (p) => ((p[1] - box.y) / box.size) * h;
  const parts = layout.parts;
  const on = (i) => partsOn[layout.part_of_point[i]] !== false;
  const color = (i) => partColor(layout.part_of_point[i], parts.indexOf(layout.part_of_point[i]));
  ctx.lineWidth = Math.max(1.5, w / 260);
  let drawn = 0;
  for (const [a, b] of layout.bones) {
    const p = frame[a], q = frame[b];
    if (!p || !q || p[0] === null || q[0] === null || !on(a) || !on(b)) continue;
    ctx.strokeStyle = color(a);
    ctx.beginPath(); ctx.moveTo(X(p), Y(p)); ctx.lineTo(X(q), Y(q)); ctx.stroke();
  }
  const r = Math.max(1.5, w / 220);
  frame.forEach((p, i) => {
    if (!p || p[0] === null || !on(i)) return;
    ctx.fillStyle = color(i);
    ctx.beginPath(); ctx.arc(X(p), Y(p), r, 0, 2 * Math.PI); ctx.fill();
    drawn++;
  });
  return drawn;
}

// Presence of each part per frame (rows), the sampled frames as ticks, the current frame as a line.
export function presence(canvas, rows, sampled, frames, current) {
  const ctx = canvas.getContext("2d");
  const names = Object.keys(rows);
  const w = canvas.width, h = canvas.height, left = 80, tick = 12;
  const rowH = (h - tick) / Math.max(names.length, 1);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  const colW = (w - left) / Math.max(frames, 1);
  names.forEach((name, r) => {
    ctx.fillStyle = css("--muted");
    ctx.fillText(name, 2, r * rowH + rowH / 2 + 4);
    const color = partColor(name, r);
    rows[name].forEach((v, t) => {
      ctx.globalAlpha = 0.12 + 0.88 * v;
      ctx.fillStyle = v > 0 ? color : css("--line");
      ctx.fillRect(left + t * colW, r * rowH + 1, Math.max(colW, 1), rowH - 2);
    });
    ctx.globalAlpha = 1;
  });
  ctx.fillStyle = "#e7ebf2";  // the strip is dark in both themes, as the skeleton's canvas
  for (const s of sampled) ctx.fillRect(left + (s + 0.5) * colW - 0.5, h - tick + 2, 1, tick - 2);
  ctx.fillStyle = css("--accent");
  ctx.fillRect(left + (current + 0.5) * colW - 1, 0, 2, h);
}
