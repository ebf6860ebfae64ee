"""MediaPipe's Tasks model bundles (`.task` files): where they are, and fetching them once.

`--landmarkers DIR` names a folder holding them. Without it they live in a cache,
`$ACCEL_SIGNS_CACHE/landmarkers` (else `$XDG_CACHE_HOME/accel_signs/landmarkers`, else
`~/.cache/accel_signs/landmarkers`), filled on first use from the URLs MediaPipe publishes, each
checked against a pinned sha256 and written atomically. Offline with a bundle missing, the error
names the missing files, their URLs and the option.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from accel_signs.config.io import default_cache_dir
from accel_signs.core.errors import ConfigError
from accel_signs.core.progress import progress_bar

logger = logging.getLogger(__name__)

STORAGE = "https://storage.googleapis.com/mediapipe-models"
TIMEOUT_S = 30


@dataclass(frozen=True)
class Bundle:
    file: str  # its name in the cache or the --landmarkers folder
    url: str
    sha256: str
    size: int  # bytes, for the progress bar


# Version 1 of the float16 bundles, pinned by URL and content. (`latest` has changed under the
# same name: pin the version.) These sha256 are the ones projects that downloaded these exact URLs
# recorded; this machine has no internet, so they are not re-measured here.
BUNDLES: dict[str, Bundle] = {
    "pose": Bundle(
        "pose_landmarker_full.task",
        f"{STORAGE}/pose_landmarker/pose_landmarker_full/float16/1/pose_landmarker_full.task",
        "5134a3aad27a58b93da0088d431f366da362b44e3ccfbe3462b3827a839011b1",
        9_398_198,
    ),
    "hands": Bundle(
        "hand_landmarker.task",
        f"{STORAGE}/hand_landmarker/hand_landmarker/float16/1/hand_landmarker.task",
        "fbc2a30080c3c557093b5ddfc334698132eb341044ccee322ccf8bcf3607cde1",
        7_819_105,
    ),
    "face": Bundle(
        "face_landmarker.task",
        f"{STORAGE}/face_landmarker/face_landmarker/float16/1/face_landmarker.task",
        "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
        3_758_596,
    ),
}


def cache_dir() -> Path:
    """The landmarker cache: <the package's cache>/landmarkers."""
    return default_cache_dir() / "landmarkers"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_dir(landmarkers: Path | None, needed: Iterable[str], bundles: Mapping[str, Bundle] = BUNDLES) -> Path:
    """The folder holding the bundles `needed` ("pose", "hands", "face"): `landmarkers` as given
    (every file must be there), else the cache, downloading what it lacks."""
    needed = sorted(set(needed))
    unknown = [n for n in needed if n not in bundles]
    if unknown:
        raise ConfigError(f"no landmarker bundle named {', '.join(unknown)} (known: {', '.join(bundles)})")
    if landmarkers is not None:
        folder = Path(landmarkers)
        if not folder.is_dir():
            raise ConfigError(f"--landmarkers {folder}: not a folder")
        missing = [bundles[n] for n in needed if not (folder / bundles[n].file).is_file()]
        if missing:
            raise ConfigError(f"--landmarkers {folder} lacks " + _listing(missing))
        return folder
    folder = cache_dir()
    missing = [bundles[n] for n in needed if not (folder / bundles[n].file).is_file()]
    for i, bundle in enumerate(missing):
        try:
            download(bundle, folder / bundle.file)
        except OSError as e:  # offline, refused, timed out, a disk error
            raise ConfigError(
                f"cannot download MediaPipe's landmarker bundles ({_reason(e)}); missing in {folder}: "
                + _listing(missing[i:])
            ) from None
    return folder


def _listing(missing: list[Bundle]) -> str:
    files = "; ".join(f"{b.file} ({b.url})" for b in missing)
    return f"{files}. Download them into that folder, or pass --landmarkers DIR with the .task files"


def _reason(e: OSError) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return e.strerror or str(e)


def download(bundle: Bundle, target: Path) -> None:
    """Fetch one bundle to `target`: streamed to a temporary file beside it, checked against its
    sha256, then renamed. A wrong checksum is ConfigError; nothing is left behind on any failure
    (a folder this made is removed again if it stayed empty)."""
    logger.info("downloading %s from %s", bundle.file, bundle.url)
    with urllib.request.urlopen(bundle.url, timeout=TIMEOUT_S) as response:
        made = [d for d in (target.parent, *target.parent.parents) if not d.exists()]  # deepest first
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        digest = hashlib.sha256()
        try:
            total = int(response.headers.get("Content-Length") or bundle.size)
            with open(tmp, "wb") as f, progress_bar(f"download {bundle.file}", total) as advance:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    f.write(chunk)
                    digest.update(chunk)
                    advance(len(chunk))
            if digest.hexdigest() != bundle.sha256:
                raise ConfigError(
                    f"{bundle.url}: the download's sha256 is {digest.hexdigest()}, not the pinned {bundle.sha256}; "
                    f"nothing was saved. Download it yourself and pass --landmarkers DIR"
                )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
            for folder in made:
                if any(folder.iterdir()):
                    break
                folder.rmdir()
