// The session log: the signs accepted while the camera ran, one session per start of the camera,
// kept in this browser's localStorage (never sent anywhere) and exportable as plain text.

const KEY = "accel_signs.sessions";
const KEEP = 100;  // sessions kept; the oldest go first

export class SessionLog {
  constructor(storage) {
    this.storage = storage;
    this.current = null;
  }

  sessions() {  // newest first
    try {
      const all = JSON.parse(this.storage.getItem(KEY) || "[]");
      return Array.isArray(all) ? all : [];
    } catch {
      return [];  // another page's junk under our key: start over rather than fail
    }
  }

  save(all) {
    try {
      this.storage.setItem(KEY, JSON.stringify(all.slice(0, KEEP)));
    } catch (e) {  // storage full or disabled: the log is a convenience, recognition goes on
      console.warn("the session log cannot be saved:", e);
    }
  }

  start() {
    this.current = { start: new Date().toISOString(), end: null, signs: [] };
    this.save([this.current, ...this.sessions()]);
  }

  end() {
    if (!this.current) return;
    this.current.end = new Date().toISOString();
    if (this.current.signs.length) this.update();
    else this.save(this.sessions().filter((s) => s.start !== this.current.start));  // nothing signed: not kept
    this.current = null;
  }

  add(sign) {
    if (!this.current) this.start();  // an upload's or a reconnection's signs still belong somewhere
    this.current.signs.push({
      t: new Date().toISOString(), sign: sign.sign, en: sign.en || "", ar: sign.ar || "",
      p: Math.round(sign.probability * 1000) / 1000,
    });
    this.update();
  }

  update() {
    const all = this.sessions();
    const i = all.findIndex((s) => s.start === this.current.start);
    if (i >= 0) all[i] = this.current; else all.unshift(this.current);
    this.save(all);
  }

  clear() {
    this.storage.removeItem(KEY);
    this.current = null;
  }

  text() {  // oldest first, one line per sign
    const lines = ["accel_signs live: session log (kept in this browser only)", ""];
    for (const s of this.sessions().slice().reverse()) {
      lines.push(`session ${s.start} to ${s.end || "(not ended)"}: ${s.signs.length} sign(s)`);
      for (const x of s.signs) lines.push(`  ${x.t}\t${x.sign}\t${x.en}\t${x.ar}\t${x.p}`);
      lines.push("");
    }
    return lines.join("\n");
  }
}
