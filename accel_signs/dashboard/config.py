"""The dashboard's settings: each option's default and help are defined here, once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from accel_signs.config import Section, option

DASHBOARD_HINT = "the dashboard needs FastAPI and uvicorn: pip install 'accel-signs[serve]'"


@dataclass(kw_only=True)
class DashboardConfig(Section):
    """Where the runs are, where the server listens, and where evaluations are cached."""

    runs_dir: Path = option(
        Path("runs"), "Folder of run folders (train's --output-dir), or one run folder.", flag="runs_dir", argument=True
    )
    host: str = option("127.0.0.1", "Address to listen on (0.0.0.0: every interface).", flag="--host")
    port: int = option(8050, "Port to listen on (0: any free port).", flag="--port")
    cache_dir: Path | None = option(
        None,
        "Where evaluations are cached, by checkpoint, data and split (default: $ACCEL_SIGNS_CACHE/dashboard, "
        "else ~/.cache/accel_signs/dashboard); nothing is ever written into a run folder.",
        flag="--cache-dir",
    )

    def _validate(self) -> None:
        self.runs_dir = Path(self.runs_dir)
        self.cache_dir = Path(self.cache_dir) if self.cache_dir is not None else None
        self.require("port", 0 <= self.port < 65536, "in 0..65535")
