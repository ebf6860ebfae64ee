"""The dashboard's routes: the page, its static files, and a JSON API over runs.py,
evaluation.py, clips.py and tools/info.py. Every error the library can name is one JSON
message, `{"type": "error", "message": ...}`, that the page shows; the server stays up and
never writes to a run folder (evaluations are cached in their own folder)."""

from __future__ import annotations

import contextlib
import logging
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import Body, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from accel_signs.config import parse_signers
from accel_signs.config.io import default_cache_dir
from accel_signs.core.errors import AccelSignsError, CheckpointError
from accel_signs.dashboard.clips import Cache, augment_clip, augment_config, augment_controls, inspect_clip
from accel_signs.dashboard.config import DashboardConfig
from accel_signs.dashboard.evaluation import Evaluations, recorded_store
from accel_signs.dashboard.runs import RunError, Runs
from accel_signs.model.checkpoint import read_checkpoint_meta
from accel_signs.tools.info import store_summary

logger = logging.getLogger(__name__)


def static_dir() -> Path:
    return Path(str(resources.files("accel_signs.dashboard") / "static"))


class Dashboard:
    """What the routes call: runs by name, the store and checkpoint of a run, cached work."""

    def __init__(self, cfg: DashboardConfig):
        self.runs = Runs(cfg.runs_dir)
        self.evaluations = Evaluations(cfg.cache_dir or default_cache_dir() / "dashboard")
        self.cache = Cache()

    def checkpoint(self, run: str) -> Path:
        best = self.runs.path(run) / "best"
        if not (best / "config.json").is_file():
            raise CheckpointError(f"run {run} has no best checkpoint yet (best/config.json): no epoch finished")
        return best

    def store_path(self, run: str, data: str | None) -> Path:
        if data:
            return Path(data).expanduser()
        store = recorded_store(self.checkpoint(run))
        if store is None:
            raise CheckpointError(f"run {run}'s checkpoint does not record its data store: give the store's folder")
        return Path(store)

    def checkpoint_info(self, run: str, data: str | None) -> dict[str, Any]:
        best = self.checkpoint(run)
        meta = read_checkpoint_meta(best)
        store = self.store_path(run, data)
        splits = list(self.cache.store(store).splits)
        return {
            "run": run,
            "store": str(store),
            "splits": splits,
            "classes": len(meta.classes),
            "epoch": meta.epoch,
            "metrics": dict(meta.metrics),
            "test_signers": list(meta.data.test_signers),
        }

    def evaluate(self, run: str, split: str, data: str | None, signers: str | None) -> dict[str, Any]:
        """`signers` as evaluate's --signers takes them (01,03); none: the checkpoint's test signers."""
        chosen = parse_signers(signers) if signers and signers.strip() else None
        return self.evaluations.start(self.checkpoint(run), data or None, split, chosen).status()

    def clip(self, run: str, split: str, clip: int, data: str | None) -> dict[str, Any]:
        ckpt = self.cache.checkpoint(self.checkpoint(run))
        return inspect_clip(ckpt, self.cache.store(self.store_path(run, data)), split, clip)

    def controls(self, run: str) -> dict[str, Any]:
        from accel_signs.config import AugmentConfig

        meta = read_checkpoint_meta(self.checkpoint(run))
        recorded = (meta.train_config.get("data") or {}).get("augment") or {}
        current = augment_config(recorded) if recorded else AugmentConfig()
        return {"controls": augment_controls(current)}

    def augment(self, body: dict[str, Any]) -> dict[str, Any]:
        run, values = str(body.get("run", "")), body.get("values") or {}
        if not isinstance(values, dict):
            raise CheckpointError("the augmentation settings must be an object of name: value")
        cfg = augment_config(values)
        meta = read_checkpoint_meta(self.checkpoint(run))
        store = self.cache.store(self.store_path(run, body.get("data")))
        return augment_clip(
            meta, store, str(body.get("split", "test")), int(body.get("clip", 0)), cfg, int(body.get("seed", 0))
        )

    def data(self, run: str, data: str | None) -> dict[str, Any]:
        return store_summary(self.cache.store(self.store_path(run, data)))


def create_app(cfg: DashboardConfig) -> FastAPI:
    dash = Dashboard(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        dash.evaluations.close()

    app = FastAPI(title="accel_signs dashboard", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.dashboard = dash
    static = static_dir()

    @app.exception_handler(AccelSignsError)
    async def library_error(request: Request, e: AccelSignsError) -> JSONResponse:
        return JSONResponse({"type": "error", "message": str(e)}, status_code=404 if isinstance(e, RunError) else 400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        logger.exception("%s failed", request.url.path)
        return JSONResponse(
            {"type": "error", "message": f"{request.url.path}: {type(e).__name__}: {e}"}, status_code=500
        )

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(static / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/runs")
    def runs() -> dict[str, Any]:
        return dash.runs.listing()

    @app.get("/api/runs/{run}/curves")
    def curves(run: str) -> dict[str, Any]:
        return dash.runs.curves(run)

    @app.get("/api/runs/{run}/config")
    def config(run: str) -> dict[str, Any]:
        return dash.runs.config(run)

    @app.get("/api/runs/{run}/checkpoint")
    def checkpoint(run: str, data: str | None = None) -> dict[str, Any]:
        return dash.checkpoint_info(run, data)

    @app.get("/api/diff")
    def diff(a: str, b: str) -> dict[str, Any]:
        return dash.runs.diff(a, b)

    @app.post("/api/evaluate")
    def evaluate(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        split = str(body.get("split") or "test")
        return dash.evaluate(str(body.get("run", "")), split, body.get("data") or None, body.get("signers"))

    @app.get("/api/evaluate/{key}")
    def evaluation(key: str) -> dict[str, Any]:
        return dash.evaluations.status(key).status()

    @app.get("/api/evaluate/{key}/result")
    def result(key: str) -> dict[str, Any]:
        return dash.evaluations.result(key)

    @app.get("/api/clip")
    def clip(run: str, split: str, clip: int, data: str | None = None) -> dict[str, Any]:
        return dash.clip(run, split, clip, data)

    @app.get("/api/augment/controls")
    def controls(run: str) -> dict[str, Any]:
        return dash.controls(run)

    @app.post("/api/augment")
    def augment(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        return dash.augment(body)

    @app.get("/api/data")
    def data(run: str, data: str | None = None) -> dict[str, Any]:
        return dash.data(run, data)

    app.mount("/static", StaticFiles(directory=static), name="static")
    return app


def serve(cfg: DashboardConfig) -> None:
    """Serve the dashboard until interrupted."""
    import uvicorn

    if not cfg.runs_dir.is_dir():
        raise RunError(f"{cfg.runs_dir} is not a folder: give the folder of your runs (train's --output-dir)")
    server = uvicorn.Server(uvicorn.Config(create_app(cfg), host=cfg.host, port=cfg.port, log_level="warning"))
    logger.info("dashboard of %s on http://%s:%d/  (Ctrl-C stops)", cfg.runs_dir, cfg.host, cfg.port)
    server.run()
