"""The live server's routes: the page, its static files, `/api/model`, `/healthz` (alive),
`/readyz` (model loaded and MediaPipe started; 503 with the reason until then), and the `/ws`
WebSocket, which refuses pages of other origins (--allowed-origins).

Messages are small JSON objects with a `type`. The browser sends each frame either as a JPEG
(a binary message: the server runs MediaPipe) or, where it runs MediaPipe itself, as a
`keypoints` message (the keypoints in the checkpoint's layout and the frame size; see
serve/keypoints.py); frames of both kinds are numbered in order of arrival (`seq`, from 0).
It also sends a few JSON controls (`reset`, `clip_start`, `clip_end`). The server answers each frame it processed with `frame` (the keypoints to draw
for a JPEG, idle or signing, timings), and sends `prediction` (top-5 of the sliding window), `accepted` (a
sign, once), `clip_result` (an uploaded video classified whole) and `error` (code, message).

Backpressure: a connection keeps only the newest frame waiting; when MediaPipe is slower than
the camera, older waiting frames are dropped (counted in `dropped`), so latency stays one
frame's work, never a growing queue. Each frame acknowledges every seq up to its own, which is
how the page keeps at most a few frames in flight. The windows of all connections are classified
together, in one forward pass (serve/batcher.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, WebSocket
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from accel_signs.core.errors import AccelSignsError, ConfigError
from accel_signs.extractors.choose import ExtractorChoice, warn_if_other
from accel_signs.model.checkpoint import Checkpoint
from accel_signs.serve.batcher import Batcher
from accel_signs.serve.config import ServeConfig, normalize_origin
from accel_signs.serve.keypoints import RateLimit, keypoints_from, parse_message
from accel_signs.serve.pipeline import FrameError, LiveSession, Timings, Window

logger = logging.getLogger(__name__)
CLOSE_BUSY, CLOSE_POLICY = 1013, 1008  # RFC 6455: try again later; policy violation
MAX_QUEUED = 256  # frames of an upload waiting at once: the page keeps a few in flight


def static_dir() -> Path:
    return Path(str(resources.files("accel_signs.serve") / "static"))


def serve_extractor(ckpt: Checkpoint, cfg: ServeConfig) -> ExtractorChoice:
    """The extractor every connection runs: --extractor, by default the checkpoint's."""
    return ExtractorChoice(cfg.extractor, cfg.landmarkers, cfg.model_complexity).resolved(ckpt.extractor)


def browser_landmarkers(ckpt: Checkpoint, choice: ExtractorChoice) -> dict[str, Path]:
    """The bundles a page needs to run MediaPipe itself (name -> .task file): the very files of the
    server's landmarker cache (or --landmarkers), offered when the server extracts with the
    `tasks` recipe, the one the page runs (VIDEO mode, 2 hands); none for the others."""
    if choice.name != "tasks":
        return {}
    from accel_signs.extractors.bundles import BUNDLES, bundle_dir
    from accel_signs.extractors.tasks import needed_bundles

    names = needed_bundles(ckpt.layout)
    folder = bundle_dir(choice.landmarkers, names)
    return {name: folder / BUNDLES[name].file for name in names}


def model_info(ckpt: Checkpoint, cfg: ServeConfig, landmarkers: dict[str, Path] | None = None) -> dict[str, Any]:
    """What the page needs to know once: classes' languages, the layout's bones, parts and
    MediaPipe sources, and where the landmarker bundles are (for MediaPipe in the page)."""
    layout = ckpt.layout
    part_of = {i: part for part, points in layout.parts.items() for i in points}
    languages = [lang for lang in ("en", "ar") if any(getattr(c, lang) for c in ckpt.classes)]
    metrics = ckpt.meta.metrics
    return {
        "type": "hello",
        "checkpoint": ckpt.path.name,  # not the server's paths
        "classes": len(ckpt.classes),
        "languages": languages,
        "layout": {
            "name": layout.name,
            "points": layout.num_points,
            "bones": [list(b) for b in layout.bones],
            "part_of_point": [part_of.get(i, "other") for i in range(layout.num_points)],
            "sources": [list(s) if s is not None else None for s in layout.sources],
        },
        # The page runs MediaPipe itself when every bundle its layout needs is here.
        "landmarkers": {name: f"landmarkers/{path.name}" for name, path in (landmarkers or {}).items()},
        "val_acc": metrics.get("val_acc"),
        "extractor": serve_extractor(ckpt, cfg).name,
        "trained_extractor": ckpt.extractor.describe() if ckpt.extractor is not None else None,
        "live": asdict(cfg.live),
        "limits": {
            "max_frame_bytes": cfg.max_frame_bytes,
            "max_frame_pixels": cfg.max_frame_pixels,
            "max_clip_seconds": cfg.max_clip_seconds,
            "max_keypoint_bytes": cfg.max_keypoint_bytes,
            "max_keypoint_rate": cfg.max_keypoint_rate,
        },
    }


class ClientGone(ConnectionError):
    """The client left while the server was answering it."""


@dataclass
class Frame:
    seq: int
    data: bytes | Any  # a JPEG, or the keypoints (points, 4) that the browser made
    arrived: float  # time.monotonic() when its last byte arrived
    size: tuple[float, float] | None = None  # keypoints: the frame's (width, height)


@dataclass
class Control:
    kind: str
    fps: float = 30.0


class Connection:
    """One browser: a receiver (never blocks on work), a worker (MediaPipe, one frame at a
    time) and at most one classification in flight."""

    def __init__(self, ws, ckpt: Checkpoint, cfg: ServeConfig, pool, batcher: Batcher, landmarkers: dict[str, Path]):
        self.ws, self.ckpt, self.cfg, self.pool, self.batcher = ws, ckpt, cfg, pool, batcher
        self.landmarkers = landmarkers
        self.limit = RateLimit(cfg.max_keypoint_rate)
        self.queue: deque[Frame | Control] = deque()
        self.wake = asyncio.Event()
        self.send_lock = asyncio.Lock()
        self.next_seq = self.dropped = self.processed = 0
        self.arrivals: dict[int, float] = {}  # seq -> arrival, for frames still in the buffer
        self.receiving_clip = False  # between clip_start and clip_end as received: keep every frame
        self.clip_fps, self.clip_frames = 30.0, 0  # the upload being processed
        self.inference: asyncio.Task | None = None
        self.session: LiveSession | None = None
        self.rate = deque(maxlen=30)  # the last processed frames' times: frames/s actually processed
        self.busy: set[asyncio.Future] = set()  # work on the pool's threads for this connection

    async def offload(self, fn, *args):
        """fn(*args) on a worker thread. Shielded: a thread cannot be cancelled, so when the
        client leaves, the connection waits for it (run's finally) before closing the tracker."""
        future = asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        self.busy.add(future)
        future.add_done_callback(self.busy.discard)
        return await asyncio.shield(future)

    async def run(self) -> None:
        self.session = await self.offload(
            lambda: LiveSession(self.ckpt, self.cfg.live, serve_extractor(self.ckpt, self.cfg))
        )
        try:
            await self.send(model_info(self.ckpt, self.cfg, self.landmarkers))
            tasks = {asyncio.create_task(self.receive()), asyncio.create_task(self.work())}
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                if task.exception() is not None and not isinstance(task.exception(), ConnectionError):
                    logger.error("connection failed: %r", task.exception())
        finally:
            await asyncio.gather(*self.busy, *filter(None, [self.inference]), return_exceptions=True)
            # The tracker closes on a worker thread, after the last frame's work there is done.
            await asyncio.get_running_loop().run_in_executor(self.pool, self.session.close)

    async def send(self, message: dict[str, Any]) -> None:
        async with self.send_lock:
            try:
                await self.ws.send_text(json.dumps(message, ensure_ascii=False))
            except Exception as e:  # noqa: BLE001 - Starlette and the websockets library each raise their own
                raise ClientGone(str(e)) from None

    async def error(self, code: str, message: str, **extra: Any) -> None:
        await self.send({"type": "error", "code": code, "message": message, **extra})

    async def receive(self) -> None:
        """Read messages until the client goes; frames are queued, never processed here."""
        while True:
            msg = await self.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("bytes") is not None:
                frame = Frame(self.next_seq, msg["bytes"], time.monotonic())
                self.next_seq += 1
                if not await self.enqueue(frame):
                    return
            else:
                await self.text(msg.get("text") or "")
            self.wake.set()

    async def text(self, text: str) -> None:
        """A keypoint frame or a control; anything else gets one error and is dropped."""
        try:
            message = parse_message(text, self.cfg.max_keypoint_bytes)
        except FrameError as e:
            await self.error(e.code, str(e))
            return
        if message is not None and message.get("type") == "keypoints":
            await self.keypoints(message)
        else:
            await self.control(message, text)

    async def keypoints(self, message: dict[str, Any]) -> None:
        seq, now = self.next_seq, time.monotonic()
        self.next_seq += 1  # every frame message takes a seq, good or not: the page's count of them
        if not self.limit.allow(now):
            self.dropped += 1
            if self.limit.warn(now):
                await self.error(
                    "too_fast",
                    f"more than {self.cfg.max_keypoint_rate:g} keypoint messages a second (--max-keypoint-rate); "
                    "the extra ones are dropped",
                    seq=seq,
                )
            return
        try:
            points, size = keypoints_from(message, self.ckpt.layout.num_points, self.cfg.max_frame_pixels)
        except FrameError as e:
            await self.error(e.code, str(e), seq=seq)
            return
        await self.enqueue(Frame(seq, points, now, size))

    async def enqueue(self, frame: Frame) -> bool:
        if not self.receiving_clip:  # live: only the newest frame waits
            stale = [f for f in self.queue if isinstance(f, Frame)]
            self.dropped += len(stale)
            self.queue = deque(q for q in self.queue if not isinstance(q, Frame))
        elif len(self.queue) >= MAX_QUEUED:
            await self.error("too_many_frames", f"more than {MAX_QUEUED} frames of an upload are waiting")
            await self.ws.close(code=CLOSE_POLICY, reason="too many frames waiting")
            return False
        self.queue.append(frame)
        return True

    async def control(self, message: dict[str, Any] | None, text: str) -> None:
        try:
            if message is None:
                raise ValueError(text)
            kind = message["type"]
            if kind not in ("reset", "clip_start", "clip_end"):
                raise ValueError(kind)
            fps = float(message.get("fps", 30.0))
            if not 1 <= fps <= 240:
                raise ValueError(fps)
        except (ValueError, KeyError, TypeError):
            await self.error(
                "expected_frame",
                'expected a binary JPEG frame, a keypoint message or a JSON control ({"type": "keypoints" | '
                f'"reset" | "clip_start" | "clip_end"}}), got text: {text[:60]!r}',
            )
            return
        self.receiving_clip = kind == "clip_start"
        self.queue.append(Control(kind, fps))

    async def work(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                item = self.queue.popleft()
                if isinstance(item, Control):
                    await self.apply(item)
                else:
                    await self.process(item)

    async def apply(self, control: Control) -> None:
        if self.inference is not None:
            await asyncio.gather(self.inference, return_exceptions=True)
        if control.kind == "clip_end" and self.session.whole_clip:
            await self.finish_clip()
        whole = control.kind == "clip_start"
        await self.offload(self.session.restart, whole)
        self.arrivals.clear()
        self.clip_fps, self.clip_frames = control.fps, 0

    async def process(self, frame: Frame) -> None:
        s = self.session
        if s.whole_clip:
            t = self.clip_frames / self.clip_fps
            if t > self.cfg.max_clip_seconds:
                await self.error(
                    "clip_too_long", f"uploads are classified up to {self.cfg.max_clip_seconds:g} s", seq=frame.seq
                )
                return
            self.clip_frames += 1
        else:
            t = frame.arrived
        try:
            if frame.size is not None:  # the browser's keypoints: no thread hop, nothing to decode
                drawn, timings = s.add_keypoints(frame.data, frame.size, frame.seq, t), Timings()
            else:
                drawn, timings = await self.offload(
                    s.process, frame.data, frame.seq, t, self.cfg.max_frame_bytes, self.cfg.max_frame_pixels
                )
        except FrameError as e:
            await self.error(e.code, str(e), seq=frame.seq)
            return
        now = time.monotonic()
        self.processed += 1
        self.rate.append(now)
        self.arrivals[frame.seq] = frame.arrived
        if s.buffer:  # idle frames leave the buffer without being classified
            self._forget(s.buffer[0][0])
        stopped = drawn.pop("stopped")
        fps = (len(self.rate) - 1) / (self.rate[-1] - self.rate[0]) if len(self.rate) > 1 else 0.0
        await self.send(
            {"type": "frame", **drawn, "dropped": self.dropped, "fps": round(fps, 1)}
            | {"latency_ms": round((now - frame.arrived) * 1000, 1), "timing_ms": _ms(timings)}
        )
        if stopped:
            await self.accepted(s.stop(), frame.seq)
        self.classify_if_due()

    def classify_if_due(self) -> None:
        """Start a classification of the window unless one runs: after each frame, and as soon
        as one ends if frames came meanwhile (so a frame never waits for the next one)."""
        if self.inference is None and self.session.due():
            self.inference = asyncio.create_task(self.classify(self.session.window()))

    async def classify(self, window: Window) -> None:
        try:
            top, timings, batch = await self.batcher.classify(window)
            arrived = self.arrivals.get(window.last_seq, time.monotonic())
            self._forget(window.first_seq)
            await self.send(self.prediction("prediction", window, top, timings, arrived) | {"batch": batch})
            await self.accepted(self.session.accept(top), window.last_seq)
        except ClientGone:  # the connection is closing; run() cleans up
            return
        finally:
            self.inference = None
        self.classify_if_due()

    async def finish_clip(self) -> None:
        if not self.session.buffer:
            await self.error("empty_clip", "the upload ended before any frame was processed")
            return
        window = self.session.window()
        top, timings, _ = await self.batcher.classify(window)
        await self.send(self.prediction("clip_result", window, top, timings, self.arrivals.get(window.last_seq)))

    def prediction(self, kind, window, top, timings: Timings, arrived: float | None) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "type": kind,
            "seq": window.last_seq,
            "first_seq": window.first_seq,
            "frames": len(window.clip),
            "top": top,
            "unknown": top[0]["probability"] < self.cfg.live.threshold,
            "latency_ms": round((now - arrived) * 1000, 1) if arrived is not None else None,
            "timing_ms": _ms(timings),
        }

    async def accepted(self, sign: dict[str, Any] | None, seq: int) -> None:
        if sign is not None:
            await self.send({"type": "accepted", "seq": seq, **sign})

    def _forget(self, first_seq: int) -> None:
        for seq in [s for s in self.arrivals if s < first_seq]:
            del self.arrivals[seq]


def _ms(t: Timings) -> dict[str, float]:
    return {k: round(v * 1000, 2) for k, v in asdict(t).items() if v}


@dataclass
class Readiness:
    """What /readyz reports. The server listens at once; the model and MediaPipe load meanwhile
    (a Hub checkpoint or a cold disk can take a while), so a proxy or an orchestrator can tell
    "alive" (/healthz) from "ready for signers" (/readyz)."""

    ckpt: Checkpoint | None = None
    reason: str = "loading the checkpoint"
    landmarkers: dict[str, Path] = field(default_factory=dict)  # the bundles for MediaPipe in the page


def load_ready(cfg: ServeConfig, state: Readiness) -> Checkpoint:
    """Load the checkpoint and start MediaPipe once (fails now if it cannot run), saying which."""
    from accel_signs.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(cfg.checkpoint)
    state.reason = "starting MediaPipe"
    choice = serve_extractor(ckpt, cfg)
    session = LiveSession(ckpt, cfg.live, choice)
    # MediaPipe must run here: it is the fallback for browsers without it, and uploads use it.
    warn_if_other(ckpt.extractor, session.open_tracker().record)  # once, for every connection to come
    session.close()
    state.landmarkers = browser_landmarkers(ckpt, choice)
    return ckpt


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """Whether a WebSocket handshake's Origin may open a session: its own page's origin (the host
    the browser addressed, as the Host header says), one of --allowed-origins, or none at all (not
    a browser: cross-site WebSocket hijacking needs a victim's browser, which always sends Origin)."""
    if origin is None or "*" in allowed:
        return True
    try:
        origin = normalize_origin(origin)
    except ConfigError:  # "null" (a sandboxed frame, a file:// page) or garbage
        return False
    if origin in allowed:
        return True
    scheme, _, netloc = origin.partition("://")
    if not host:
        return False
    host = host.strip().lower()
    default = ":443" if scheme == "https" else ":80"
    return netloc == (host[: -len(default)] if host.endswith(default) else host)


def create_app(
    ckpt: Checkpoint | None,
    cfg: ServeConfig,
    *,
    loader: Callable[[ServeConfig, Readiness], Checkpoint] = load_ready,
    on_failure: Callable[[BaseException], None] | None = None,
    landmarkers: dict[str, Path] | None = None,
):
    """The FastAPI application for one checkpoint: `ckpt` when loaded already, else the app
    loads cfg.checkpoint with `loader` after it starts (/readyz says 503 until then; when the
    load fails, /readyz says why and `on_failure` is called, e.g. to stop the server).
    `landmarkers` (bundle name -> .task file) are served to pages that run MediaPipe themselves;
    the loader finds them in the server's landmarker cache."""
    # Each connection uses about two threads: MediaPipe, and the model beside it.
    pool = concurrent.futures.ThreadPoolExecutor(2 * cfg.max_clients + 2, thread_name_prefix="live")
    state = Readiness(
        ckpt, "ready" if ckpt is not None else "loading the checkpoint", landmarkers=dict(landmarkers or {})
    )

    async def load() -> None:
        try:
            state.ckpt = await asyncio.to_thread(loader, cfg, state)
            state.reason = "ready"
            logger.info("ready: %s (%d classes)", state.ckpt.path, len(state.ckpt.classes))
        except Exception as e:  # noqa: BLE001 - whatever it is, /readyz reports it and the server stops
            state.reason = f"failed: {e}"
            logger.error("cannot serve %s: %s", cfg.checkpoint, e)
            if on_failure is not None:
                on_failure(e)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        loading = asyncio.create_task(load()) if state.ckpt is None else None
        yield
        if loading is not None:
            loading.cancel()  # the thread itself finishes on its own; nothing waits for it
        await batcher.close()
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="accel_signs live", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    clients: set[Connection] = set()
    batcher = Batcher(ckpt, pool, cfg.max_batch, cfg.tta_flip)
    static = static_dir()
    # Behind a proxy under a sub-path, the page's relative URLs (static files, the WebSocket)
    # resolve against <base>, whether the browser asked for /signs or /signs/.
    base = f'<head>\n  <base href="{cfg.root_path}/">'
    index_html = (static / "index.html").read_text("utf-8").replace("<head>", base, 1)

    def not_ready() -> JSONResponse:
        return JSONResponse({"ready": False, "reason": state.reason}, status_code=503)

    @app.get("/")
    async def index() -> HTMLResponse:
        return HTMLResponse(index_html, headers={"Cache-Control": "no-cache"})

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"alive": True})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if state.ckpt is None:
            return not_ready()
        return JSONResponse(
            {"ready": True, "checkpoint": state.ckpt.path.name, "clients": len(clients), "max_clients": cfg.max_clients}
        )

    @app.get("/api/model")
    async def model() -> JSONResponse:
        if state.ckpt is None:
            return not_ready()
        return JSONResponse(model_info(state.ckpt, cfg, state.landmarkers))

    @app.get("/landmarkers/{name}")
    async def landmarker(name: str) -> FileResponse:
        files = {path.name: path for path in state.landmarkers.values()}
        if name not in files:  # only the named bundles: never a path the client makes up
            raise HTTPException(404, f"no landmarker bundle {name!r}")
        return FileResponse(files[name], media_type="application/octet-stream")

    @app.websocket("/ws")
    async def live(ws: WebSocket) -> None:
        origin = ws.headers.get("origin")
        if not origin_allowed(origin, ws.headers.get("host"), cfg.allowed_origins):
            # Closing before accepting refuses the handshake: the browser sees HTTP 403.
            logger.warning("refused a WebSocket from origin %r (--allowed-origins)", origin)
            await ws.close(code=CLOSE_POLICY)
            return
        await ws.accept()
        if state.ckpt is None:
            await _refuse(ws, "not_ready", f"the server is not ready yet ({state.reason}); try again shortly")
            return
        if len(clients) >= cfg.max_clients:
            await _refuse(
                ws,
                "busy",
                f"the server is serving its limit of {cfg.max_clients} client(s) "
                "(--max-clients); try again when one leaves",
            )
            return
        if batcher.ckpt is None:
            batcher.ckpt = state.ckpt
        conn = Connection(ws, state.ckpt, cfg, pool, batcher, state.landmarkers)
        clients.add(conn)
        logger.info("client connected (%d of %d)", len(clients), cfg.max_clients)
        try:
            await conn.run()
        finally:
            clients.discard(conn)
            logger.info("client left after %d frames (%d dropped)", conn.processed, conn.dropped)

    app.mount("/static", StaticFiles(directory=static), name="static")
    return app


async def _refuse(ws: WebSocket, code: str, message: str) -> None:
    await ws.send_text(json.dumps({"type": "error", "code": code, "message": message}))
    await ws.close(code=CLOSE_BUSY, reason=code.replace("_", " "))


def _uvicorn_options(cfg: ServeConfig) -> dict[str, Any]:
    """uvicorn's settings from ours: a frame up to twice the byte limit gets an error message,
    a larger message is refused by the WebSocket layer itself (close code 1009)."""
    return {
        "host": cfg.host,
        "port": cfg.port,
        "root_path": cfg.root_path,
        "ws_max_size": 2 * cfg.max_frame_bytes,
        "log_level": "warning",
        "lifespan": "on",
    }


def make_server(ckpt: Checkpoint | None, cfg: ServeConfig, **app_options: Any):
    """A uvicorn server for the app (one process); app_options go to create_app."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(create_app(ckpt, cfg, **app_options), **_uvicorn_options(cfg)))


# How `serve --workers N` hands its config to the worker processes uvicorn spawns: they import
# worker_app by name and call it, so the config travels in their environment, as JSON.
WORKER_CONFIG = "ACCEL_SIGNS_SERVE_WORKER_CONFIG"


def worker_app():
    """The app in one of `serve --workers N`'s processes (uvicorn's factory)."""
    import torch

    from accel_signs.config import from_dict

    torch.set_num_threads(1)  # as serve() does: see there
    return create_app(None, from_dict(ServeConfig, json.loads(os.environ[WORKER_CONFIG])))


def serve(cfg: ServeConfig) -> None:
    """Check the checkpoint, then serve until interrupted; the model loads once the server listens."""
    import torch
    import uvicorn

    from accel_signs.model.checkpoint import checkpoint_folder, read_checkpoint_meta

    # A wrong path or Hub id fails now, with one line; a Hub checkpoint is fetched once, here,
    # and every worker loads the same local snapshot.
    folder = checkpoint_folder(cfg.checkpoint).path
    read_checkpoint_meta(folder)
    cfg = dataclasses.replace(cfg, checkpoint=str(folder))
    shown = f"http://{cfg.host}:{cfg.port}{cfg.root_path}/"
    if cfg.workers > 1:
        logger.info("serving %s with %d workers on %s  (Ctrl-C stops)", folder, cfg.workers, shown)
        os.environ[WORKER_CONFIG] = json.dumps(dataclasses.asdict(cfg), default=str)
        uvicorn.run("accel_signs.serve.app:worker_app", factory=True, workers=cfg.workers, **_uvicorn_options(cfg))
        return
    # MediaPipe runs its own threads beside the model: one torch thread per classification
    # measured faster end to end on 2 cores (README, "Live recognition").
    torch.set_num_threads(1)
    failed: list[BaseException] = []

    def stop(error: BaseException) -> None:
        failed.append(error)
        server.should_exit = True

    server = make_server(None, cfg, on_failure=stop)
    logger.info("serving %s on %s  (Ctrl-C stops; /readyz says when the model is loaded)", folder, shown)
    server.run()
    if failed:
        error = failed[0]
        raise error if isinstance(error, AccelSignsError) else AccelSignsError(f"cannot serve {folder}: {error}")
