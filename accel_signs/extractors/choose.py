"""`--extractor`: naming an extractor, picking the default, opening trackers, and warning when the
keypoints would come from another extractor than a checkpoint's."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from accel_signs.core.errors import ConfigError
from accel_signs.data.extractor import ExtractorRecord
from accel_signs.data.layout import KeypointLayout
from accel_signs.extractors import CHOICES, holistic, tasks
from accel_signs.extractors.base import Tracker

logger = logging.getLogger(__name__)

# The tasks recipes: (running mode, hands per frame).
TASKS_RECIPES = {"tasks": ("video", 2), "tasks-image": ("image", 2), "seed": ("image", 1)}


def _version() -> tuple[int, ...] | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return tuple(int(p) for p in version("mediapipe").split(".")[:3] if p.isdigit())
    except PackageNotFoundError:
        return None


def installed_default() -> str:
    """The extractor `auto` means: tasks where MediaPipe >= 0.10.30 (or none) is installed, holistic
    where a MediaPipe that still has it is."""
    found = _version()
    if found is not None and found < (0, 10, 30) and holistic.available():
        return "holistic"
    return "tasks"


def runnable(name: str) -> bool:
    """Whether the installed MediaPipe can run this extractor."""
    return holistic.available() if name == "holistic" else tasks.available()


@dataclass(frozen=True)
class ExtractorChoice:
    """An extractor as the user named it, with what it needs to run. Picklable (extract's workers)."""

    name: str = "auto"
    landmarkers: Path | None = None
    model_complexity: int = 1  # holistic's pose model

    def __post_init__(self) -> None:
        if self.name not in CHOICES:
            raise ConfigError(f"--extractor must be one of {', '.join(CHOICES)}, got {self.name!r}")

    def resolved(self, checkpoint: ExtractorRecord | None = None) -> ExtractorChoice:
        """`auto` made concrete: the checkpoint's recipe where it has one this MediaPipe runs, else
        the installed default. Other names stay."""
        if self.name != "auto":
            return self
        if checkpoint is not None and checkpoint.recipe in CHOICES and runnable(checkpoint.recipe):
            name = checkpoint.recipe
        else:
            name = installed_default()
        return ExtractorChoice(name, self.landmarkers, self.model_complexity)

    def open(self, layout: KeypointLayout, fps: float = 0.0) -> Tracker:
        """A tracker for one stream (fps: the stream's, for VIDEO mode's timestamps; 0: unknown)."""
        name = self.resolved().name
        if name == "holistic":
            return holistic.HolisticTracker(layout, self.model_complexity)
        mode, hands = TASKS_RECIPES[name]
        return tasks.TasksTracker(layout, name, mode, hands, self.landmarkers, fps)

    def record(self, layout: KeypointLayout) -> ExtractorRecord:
        """What this extractor will record (checks that it can run: MediaPipe, bundles, layout)."""
        with self.open(layout) as tracker:
            return tracker.record


def warn_if_other(checkpoint: ExtractorRecord | None, used: ExtractorRecord, where: str = "the checkpoint") -> bool:
    """One warning, naming both, when `used` makes keypoints differently from the extractor that
    made `where`'s training data. True if it warned."""
    if checkpoint is None:
        return False
    differs = checkpoint.differences(used)
    if not differs:
        return False
    logger.warning(
        "%s was trained on keypoints from %s; these come from %s (they differ in %s), and its accuracy may "
        "drop (pass --extractor %s to match, where it runs)",
        where,
        checkpoint.describe(),
        used.describe(),
        ", ".join(differs),
        checkpoint.recipe,
    )
    return True
