"""The live server's settings: each option's default and help are defined here, once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal
from urllib.parse import urlsplit

from accel_signs.config import Section, option
from accel_signs.config.schema import TTA_FLIP_HELP
from accel_signs.core.errors import ConfigError
from accel_signs.extractors import HELP as EXTRACTOR_HELP
from accel_signs.extractors import LANDMARKERS_HELP

SERVE_HINT = "live recognition needs the serve extra: pip install 'accel-signs[serve]' (FastAPI, uvicorn, MediaPipe)"


@dataclass(kw_only=True)
class LiveConfig(Section):
    """How a stream of frames becomes predictions and accepted signs (per connection).

    The defaults come from tests/data/signer_video.mp4 (a real signer; README, "Live
    recognition"): while signing, the hands moved 0.84-9.5 shoulder widths per second between
    frames (median 2.4), so 0.5 is under the slowest signing frame; MediaPipe lost the hands for
    up to 5 frames (0.17 s) in mid-sign, so a signer is idle only after 0.6 s without motion."""

    KEY: ClassVar[str] = "live"

    window: float = option(3.0, "Seconds of frames the model classifies: the sliding window's length.", flag="--window")
    stride: int = option(
        1,
        "Classify the window every N-th processed frame while the signer signs (when the last classification is done).",
        flag="--stride",
    )
    min_frames: int = option(4, "Frames in the window before the first prediction of a sign.", flag="--min-frames")
    threshold: float = option(
        0.5, "Probability under which a prediction is shown as unknown and never accepted.", flag="--threshold"
    )
    motion: float = option(
        0.5,
        "Hand speed, in shoulder widths per second, under which a frame counts as still; no hand also counts as still.",
        flag="--motion",
    )
    idle_seconds: float = option(
        0.6,
        "Still seconds after which the signer is idle: the window is cleared and no prediction is made.",
        flag="--idle-seconds",
    )
    preroll: float = option(
        0.3, "Seconds of frames before the first moving frame that a new window keeps.", flag="--preroll"
    )

    def _validate(self) -> None:
        for name in ("window", "stride", "min_frames"):
            self.require(name, getattr(self, name) > 0, "> 0")
        for name in ("motion", "idle_seconds", "preroll"):
            self.require(name, getattr(self, name) >= 0, ">= 0")
        self.require("threshold", 0 <= self.threshold <= 1, "in [0, 1]")


@dataclass(kw_only=True)
class ServeConfig(Section):
    """The server: where it listens, how many clients, and the limits on what a client sends.
    Every option can also come from the environment: ACCEL_SIGNS_SERVE_<OPTION> (config/options.py)."""

    ENV_PREFIX: ClassVar[str] = "ACCEL_SIGNS_SERVE_"

    checkpoint: str = option(
        help="Checkpoint folder (model.safetensors + config.json), e.g. runs/<run>/best, or a Hub model hf://USER/NAME[@REVISION].",
        flag="checkpoint",
        argument=True,
    )
    host: str = option("127.0.0.1", "Address to listen on (0.0.0.0: every interface).", flag="--host")
    port: int = option(8000, "Port to listen on (0: any free port).", flag="--port")
    max_clients: int = option(
        2,
        "Connections served at once by each worker (each runs MediaPipe: about one CPU core); more are refused.",
        flag="--max-clients",
    )
    workers: int = option(
        1,
        "Server processes sharing the port (uvicorn workers), each with its own model and --max-clients.",
        flag="--workers",
    )
    root_path: str = option(
        "",
        "The sub-path a reverse proxy serves the page under, e.g. /signs (the proxy strips it before passing requests on).",
        flag="--root-path",
    )
    allowed_origins: tuple[str, ...] = option(
        (),
        "Other origins (scheme://host[:port], comma-separated; * for any) whose pages may open the WebSocket; the page's own origin always may.",
        flag="--allowed-origins",
        cli_type=str,
    )
    max_frame_bytes: int = option(2_000_000, "Largest frame accepted, in bytes.", flag="--max-frame-bytes")
    max_frame_pixels: int = option(
        1920 * 1080,
        "Largest frame accepted, in pixels (width x height, read before decoding).",
        flag="--max-frame-pixels",
    )
    max_clip_seconds: float = option(
        60.0, "Longest uploaded video classified whole (upload mode), in seconds.", flag="--max-clip-seconds"
    )
    max_keypoint_bytes: int = option(
        64_000,
        "Largest keypoint message accepted (browser-keypoint mode), in bytes; a holistic543 frame is about 25 kB.",
        flag="--max-keypoint-bytes",
    )
    max_keypoint_rate: float = option(
        60.0,
        "Keypoint messages a connection may send per second (browser-keypoint mode); faster ones are dropped.",
        flag="--max-keypoint-rate",
    )
    max_batch: int = option(
        64, "Windows of all connections classified together in one forward pass, at most.", flag="--max-batch"
    )
    model_complexity: Literal[0, 1, 2] = option(
        1,
        "The holistic extractor's pose model; 1 is the one its wheel ships and extract uses.",
        flag="--model-complexity",
    )
    extractor: Literal["auto", "tasks", "tasks-image", "seed", "holistic"] = option(
        "auto", EXTRACTOR_HELP, flag="--extractor"
    )
    landmarkers: Path | None = option(None, LANDMARKERS_HELP, flag="--landmarkers")
    tta_flip: bool = option(False, TTA_FLIP_HELP, flag="--tta-flip/--no-tta-flip")
    live: LiveConfig = option(factory=LiveConfig)

    def _validate(self) -> None:
        self.landmarkers = Path(self.landmarkers) if self.landmarkers is not None else None
        self.require("port", 0 <= self.port < 65536, "in 0..65535")
        for name in (
            "max_clients",
            "workers",
            "max_frame_bytes",
            "max_frame_pixels",
            "max_clip_seconds",
            "max_keypoint_bytes",
            "max_keypoint_rate",
            "max_batch",
        ):
            self.require(name, getattr(self, name) > 0, "> 0")
        self.root_path = self.root_path.rstrip("/")
        self.require(
            "root_path",
            not self.root_path or (self.root_path.startswith("/") and "//" not in self.root_path),
            "a path like /signs",
        )
        if isinstance(self.allowed_origins, str):
            self.allowed_origins = tuple(t for t in self.allowed_origins.split(",") if t.strip())
        self.allowed_origins = tuple(normalize_origin(o) for o in self.allowed_origins or ())


def normalize_origin(text: str) -> str:
    """An origin as browsers send it: lower-case `scheme://host[:port]`, the scheme's default port
    left out; `*` stays `*`."""
    text = text.strip()
    if text == "*":
        return text
    parts = urlsplit(text.lower())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"--allowed-origins: {text!r} is not an origin like https://example.org[:port]")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"--allowed-origins: {text!r} has a bad port") from None
    default = {"http": 80, "https": 443}[parts.scheme]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")
