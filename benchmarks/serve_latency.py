"""Live serving, measured as a browser uses it: `accel-signs serve` in its own process, and
clients that replay a real video at 30 frames/s through the WebSocket, each keeping at most 2
frames in flight as the page does (a camera does not wait: a tick with 2 frames unanswered
sends nothing).

    python benchmarks/serve_latency.py --checkpoint runs/<run>/best
    python benchmarks/serve_latency.py --checkpoint ... --video my_signing.mp4 --seconds 60 --clients 1,2
    python benchmarks/serve_latency.py --checkpoint ... --mode keypoints --clients 10,20,30 --seconds 30

Two modes, as the page has them. `--mode jpeg` (the server runs MediaPipe): JPEG frames.
`--mode keypoints` (MediaPipe runs in the browser): the video's keypoints, extracted once here
with the server's own tracker, sent as the page sends them (one `keypoints` message a frame,
in the checkpoint's layout, with the frame size); the server runs only the model, and batches
the windows of all clients into one forward pass. `--workers N` passes `serve --workers`.
Every client runs in this one process (asyncio): on a small machine it competes with the
server for the CPU, which the figures include.

Prints, for 1 and for 2 concurrent clients: frames/s processed per client, p50/p95 latency from
a frame's arrival to the first prediction whose window includes it, over the frames processed
while the signer signs (and, apart, with the pre-roll: idle frames kept for a sign's onset,
which waited through the idle time before it), the latency to a frame's keypoints, the
latency in the first and the last 10 s (does it grow?), the server's CPU time per frame split into
JPEG decode, MediaPipe, the model's input features and the rest of the model, and its peak
memory. Then how far JPEG at the page's quality moves the top-5 from `predict`'s answer on the
same video. Writes everything to bench/results/serve_latency-<time>.json.

The video is letterboxed into --size (default 640x480) and JPEG-encoded once, at the page's
quality, before the clock starts: the browser's encoding is not the server's cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from helpers import letterboxed_frames  # noqa: E402 - the page's camera picture, as the browser test makes it

JPEG_QUALITY = 80  # the page's canvas.toBlob("image/jpeg", 0.8)
IN_FLIGHT = 2  # the page's LIVE_IN_FLIGHT
HELD_P95_MS, HELD_FPS = 250.0, 15.0  # a client is held: p95 frame -> prediction and frames/s processed


def jpeg(frame: np.ndarray) -> bytes:
    import cv2

    return cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()


class Client:
    """One browser tab: sends at 30 frames/s with at most IN_FLIGHT unanswered."""

    def __init__(self, frames: list[bytes | str], fps: float):
        self.frames, self.fps = frames, fps
        self.sent: dict[int, float] = {}
        self.keypoints_at: dict[int, float] = {}
        self.predicted_at: dict[int, float] = {}
        self.signing: set[int] = set()  # frames the server processed while the signer was signing
        self.timings: list[dict[str, float]] = []
        self.acked, self.skipped, self.predictions, self.dropped = -1, 0, 0, 0
        self.batches: list[int] = []  # windows per forward pass, as the predictions report them

    async def run(self, url: str, seconds: float) -> None:
        import websockets

        async with websockets.connect(url, max_size=None) as ws:
            hello = json.loads(await ws.recv())
            assert hello["type"] == "hello", hello
            reader = asyncio.create_task(self.read(ws))
            start = time.perf_counter()
            tick, seq = 0, 0
            while (now := time.perf_counter()) - start < seconds:
                if seq - 1 - self.acked < IN_FLIGHT:
                    self.sent[seq] = time.perf_counter()
                    await ws.send(self.frames[tick % len(self.frames)])
                    seq += 1
                else:
                    self.skipped += 1
                tick += 1
                await asyncio.sleep(max(0.0, start + tick / self.fps - time.perf_counter()))
            await asyncio.sleep(0.5)  # the answers to the last frames
            self.duration = now - start
            reader.cancel()

    async def read(self, ws) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            now = time.perf_counter()
            if msg["type"] == "frame":
                self.acked = max(self.acked, msg["seq"])
                self.keypoints_at[msg["seq"]] = now
                if msg["state"] == "signing":
                    self.signing.add(msg["seq"])
                self.timings.append(msg["timing_ms"])
                self.dropped = msg["dropped"]
            elif msg["type"] == "prediction":
                self.predictions += 1
                self.batches.append(msg.get("batch", 1))
                self.timings.append(msg["timing_ms"])
                for s in range(msg["first_seq"], msg["seq"] + 1):
                    if s in self.keypoints_at:
                        self.predicted_at.setdefault(s, now)
            elif msg["type"] == "error":
                self.acked = max(self.acked, msg.get("seq", self.acked))


def _tree(pid: int) -> list[int]:
    """pid and its descendants (the worker processes of `serve --workers`)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_seconds(pid: int) -> float:
    """CPU time of the server: its process and its workers (user + system, children reaped included)."""
    total = 0.0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return total


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory of the server's processes, summed."""
    total = 0.0
    for p in _tree(pid):
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) / 1024 for line in lines if line.startswith("VmHWM:"))
    return total


def start_server(checkpoint: str, port: int, clients: int, workers: int = 1, extra=()) -> subprocess.Popen:
    env = dict(os.environ, GLOG_minloglevel="2", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "accel_signs", "-q", "serve", checkpoint, "--port", str(port)]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    # --max-clients is per worker, and the kernel, not uvicorn, spreads the connections over the
    # workers (not evenly): each may take them all.
    cmd += ["--max-clients", str(clients), *extra]
    server = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/model", timeout=1).read()
            return server
        except OSError:
            if server.poll() is not None:
                raise SystemExit(f"the server exited with {server.returncode}") from None
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not start in 60 s")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def measure(
    checkpoint: str,
    frames: list[bytes | str],
    clients: int,
    seconds: float,
    port: int,
    workers: int = 1,
    fps: float = 30.0,
    extra: tuple[str, ...] = (),
) -> dict:
    server = start_server(checkpoint, port, clients, workers, extra)
    try:
        time.sleep(1.0)  # the workers' start-up is not the clients' cost
        cpu0, mine0, load0 = cpu_seconds(server.pid), time.process_time(), os.getloadavg()[0]
        runs = [Client(frames, fps) for _ in range(clients)]

        async def all_clients():
            await asyncio.gather(*(c.run(f"ws://127.0.0.1:{port}/ws", seconds) for c in runs))

        asyncio.run(all_clients())
        cpu = cpu_seconds(server.pid) - cpu0
        clients_cpu, load = time.process_time() - mine0, (load0 + os.getloadavg()[0]) / 2
        peak = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(30)
    processed = sum(len(c.keypoints_at) for c in runs)
    to_prediction = [1000 * (c.predicted_at[s] - c.sent[s]) for c in runs for s in c.predicted_at]
    # The pre-roll: frames that arrived while the signer was still idle, kept for the sign's onset;
    # their wait includes the idle time before the sign began.
    while_signing = [1000 * (c.predicted_at[s] - c.sent[s]) for c in runs for s in c.predicted_at if s in c.signing]
    to_keypoints = [1000 * (c.keypoints_at[s] - c.sent[s]) for c in runs for s in c.keypoints_at]

    def window_latency(lo: float, hi: float) -> float:
        vals = [
            1000 * (c.predicted_at[s] - c.sent[s])
            for c in runs
            for s in c.predicted_at
            if s in c.signing and lo <= c.sent[s] - min(c.sent.values()) < hi
        ]
        return percentile(vals, 50)

    stage = {
        k: sum(t.get(k, 0.0) for c in runs for t in c.timings) / max(processed, 1)
        for k in ("decode", "features", "model")
    }
    mediapipe_wall = sum(t.get("mediapipe", 0.0) for c in runs for t in c.timings) / max(processed, 1)
    cpu_ms = 1000 * cpu / max(processed, 1)
    fps_each = [round(len(c.keypoints_at) / c.duration, 2) for c in runs]
    batches = [b for c in runs for b in c.batches]
    return {
        "clients": clients,
        "workers": workers,
        "seconds": seconds,
        "held": bool(percentile(while_signing, 95) <= HELD_P95_MS and min(fps_each) >= HELD_FPS),
        "server_cpu_cores": cpu / seconds,
        "server_cpu_cores_per_client": cpu / seconds / clients,
        "clients_cpu_cores": clients_cpu / seconds,  # this process: every simulated client
        "load_average": load,  # the machine's 1-minute load, at the start and the end (mean)
        "mean_batch": float(np.mean(batches)) if batches else float("nan"),
        "fps_per_client": fps_each,
        "frames_processed": processed,
        "skipped_by_client": sum(c.skipped for c in runs),
        "dropped_by_server": sum(c.dropped for c in runs),
        "predictions": sum(c.predictions for c in runs),
        "latency_to_prediction_ms": {"p50": percentile(while_signing, 50), "p95": percentile(while_signing, 95)},
        "latency_to_prediction_with_preroll_ms": {
            "p50": percentile(to_prediction, 50),
            "p95": percentile(to_prediction, 95),
        },
        "latency_to_keypoints_ms": {"p50": percentile(to_keypoints, 50), "p95": percentile(to_keypoints, 95)},
        "latency_p50_first_10s_ms": window_latency(0, 10),
        "latency_p50_last_10s_ms": window_latency(seconds - 10, seconds),
        "cpu_ms_per_frame": {
            "total": cpu_ms,
            "decode": stage["decode"],
            "mediapipe_and_server": cpu_ms - sum(stage.values()),
            "features": stage["features"],
            "model": stage["model"],
        },
        "mediapipe_wall_ms_per_frame": mediapipe_wall,
        "peak_rss_mb": peak,
    }


def keypoint_messages(checkpoint: str, frames: list[np.ndarray]) -> list[str]:
    """The page's keypoint messages for the frames: the keypoints in the checkpoint's layout (by
    the server's own tracker, once, before the clock starts), rounded as the page rounds them."""
    import cv2

    from accel_signs.model.checkpoint import load_checkpoint
    from accel_signs.serve.config import LiveConfig
    from accel_signs.serve.pipeline import LiveSession

    session = LiveSession(load_checkpoint(checkpoint), LiveConfig(), whole_clip=True)
    try:
        for i, frame in enumerate(frames):
            session.track(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), i, i / 30)
        height, width = frames[0].shape[:2]
        return [
            json.dumps({"type": "keypoints", "width": width, "height": height, "points": np.round(k, 6).tolist()})
            for _, _, k in session.buffer
        ]
    finally:
        session.close()


def jpeg_effect(checkpoint: str, frames: list[np.ndarray]) -> dict:
    """`predict`'s top-5 on the frames as decoded, against the same frames through JPEG at the
    page's quality, both through the live pipeline with the window covering the clip."""
    import cv2

    from accel_signs.model.checkpoint import load_checkpoint
    from accel_signs.serve.config import LiveConfig
    from accel_signs.serve.pipeline import LiveSession

    ckpt = load_checkpoint(checkpoint)

    def top5(images: list[np.ndarray]) -> list[dict]:
        session = LiveSession(ckpt, LiveConfig(), whole_clip=True)
        try:
            for i, image in enumerate(images):
                session.track(image, i, i / 30)
            return session.classify(session.window())[0]
        finally:
            session.close()

    rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]
    through_jpeg = [
        cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg(f), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        for f in frames
    ]
    exact, lossy = top5(rgb), top5(through_jpeg)
    exact_p = {t["class_id"]: t["probability"] for t in exact}
    lossy_p = {t["class_id"]: t["probability"] for t in lossy}
    return {
        "exact_top5": [(t["en"], t["probability"]) for t in exact],
        "jpeg_top5": [(t["en"], t["probability"]) for t in lossy],
        "same_top1": exact[0]["class_id"] == lossy[0]["class_id"],
        "top5_overlap": len(set(exact_p) & set(lossy_p)),
        "max_probability_change": max(abs(exact_p[c] - lossy_p.get(c, 0.0)) for c in exact_p),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="A checkpoint folder (runs/<run>/best).")
    parser.add_argument("--video", default=str(ROOT / "tests" / "data" / "signer_video.mp4"))
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT the frames are sent at.")
    parser.add_argument("--seconds", type=float, default=60.0, help="Length of each replay.")
    parser.add_argument("--clients", default="1,2", help="Concurrent clients to measure, comma-separated.")
    parser.add_argument("--port", type=int, default=8769)
    parser.add_argument("--mode", choices=("jpeg", "keypoints"), default="jpeg", help="What the clients send.")
    parser.add_argument("--workers", type=int, default=1, help="serve --workers (server processes).")
    parser.add_argument("--fps", type=float, default=30.0, help="Frames per second each client sends.")
    parser.add_argument("--max-batch", type=int, default=None, help="serve --max-batch (1: no batching).")
    parser.add_argument("--skip-jpeg-check", action="store_true", help="Skip the JPEG-vs-exact top-5 comparison.")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    frames = letterboxed_frames(Path(args.video), size)
    if not frames:
        raise SystemExit(f"{args.video}: no frames")
    encoded = [jpeg(f) for f in frames] if args.mode == "jpeg" else keypoint_messages(args.checkpoint, frames)
    print(
        f"{args.video}: {len(frames)} frames at {size[0]}x{size[1]}, {args.mode} messages "
        f"~{np.mean([len(e) for e in encoded]) / 1000:.1f} kB, {args.fps:g} frames/s per client, "
        f"{args.workers} worker(s)"
    )
    results = {
        "video": args.video,
        "size": args.size,
        "mode": args.mode,
        "workers": args.workers,
        "fps": args.fps,
        "max_batch": args.max_batch,
        "cpu_count": os.cpu_count(),
        "runs": [],
    }
    for n in (int(v) for v in args.clients.split(",")):
        extra = ("--max-batch", str(args.max_batch)) if args.max_batch else ()
        r = measure(args.checkpoint, encoded, n, args.seconds, args.port, args.workers, args.fps, extra)
        results["runs"].append(r)
        c = r["cpu_ms_per_frame"]
        fps = r["fps_per_client"]
        print(
            f"{n} client(s){' HELD' if r['held'] else ''}: frames/s processed per client min {min(fps):.1f} "
            f"mean {np.mean(fps):.1f}; server CPU {r['server_cpu_cores']:.2f} cores "
            f"({r['server_cpu_cores_per_client']:.3f} per client), clients {r['clients_cpu_cores']:.2f} cores, "
            f"load average {r['load_average']:.1f}; mean batch {r['mean_batch']:.1f}; "
            f"to prediction p50 {r['latency_to_prediction_ms']['p50']:.0f} ms, p95 {r['latency_to_prediction_ms']['p95']:.0f} ms "
            f"(first 10 s p50 {r['latency_p50_first_10s_ms']:.0f}, last 10 s {r['latency_p50_last_10s_ms']:.0f}; "
            f"pre-roll frames included: p95 {r['latency_to_prediction_with_preroll_ms']['p95']:.0f}); "
            f"to keypoints p95 {r['latency_to_keypoints_ms']['p95']:.0f} ms; dropped {r['dropped_by_server']}, "
            f"skipped {r['skipped_by_client']}; CPU/frame {c['total']:.1f} ms = decode {c['decode']:.1f} + MediaPipe "
            f"and server {c['mediapipe_and_server']:.1f} + features {c['features']:.1f} + model {c['model']:.1f} "
            f"(MediaPipe wall {r['mediapipe_wall_ms_per_frame']:.1f} ms); peak memory {r['peak_rss_mb']:.0f} MB"
        )
    if args.mode == "jpeg" and not args.skip_jpeg_check:
        results["jpeg"] = jpeg_effect(args.checkpoint, frames)
        j = results["jpeg"]
        print(
            f"JPEG q{JPEG_QUALITY} vs exact frames: same top-1 {j['same_top1']}, top-5 overlap {j['top5_overlap']}/5, "
            f"largest probability change {j['max_probability_change']:.4f}"
        )
    out = ROOT / "bench" / "results" / f"serve_latency-{args.mode}-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(out)


if __name__ == "__main__":
    main()
