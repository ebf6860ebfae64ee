"""Videos -> keypoint clips (`accel-signs extract`): one npz per video, a manifest, resumable.

The keypoints come from an extractor of `accel_signs.extractors` (`--extractor`: MediaPipe's
Tasks landmarkers, or legacy Holistic), arranged in a layout whose points name their MediaPipe
source (karsl184, holistic543, pose33-hands42, pose33). Each npz records which extractor made it
(`data/extractor.py`), and a folder holds clips of one extractor only.
"""

from __future__ import annotations

import concurrent.futures
import csv
import logging
import multiprocessing
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from accel_signs.core.errors import ConfigError, DatasetError
from accel_signs.core.progress import progress_bar
from accel_signs.data.extractor import ExtractorRecord, npz_entry, record_from_npz
from accel_signs.data.layout import KeypointLayout, load_layout
from accel_signs.extractors.base import IMAGE_SUFFIXES, VIDEO_SUFFIXES, read_frames
from accel_signs.extractors.choose import ExtractorChoice

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "ExtractResult", "Extractor", "extract", "find_inputs", "labels_for"]

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = (
    "path",
    "sign",
    "signer",
    "split",
    "width",
    "height",
    "fps",
    "frames",
    "pose_frames",
    "hand_frames",
    "source",
)


@dataclass
class ExtractResult:
    """One clip's keypoints and what was detected in it."""

    keypoints: np.ndarray  # (frames, points, 4) float32
    width: int
    height: int
    fps: float
    pose_frames: int  # frames with a person (pose) detected
    hand_frames: int  # frames with at least one hand detected
    record: ExtractorRecord  # the extractor that made them


@dataclass
class ExtractReport:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already extracted
    no_person: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "path: problem"
    frames: int = 0
    hand_frames: int = 0
    record: ExtractorRecord | None = None

    def summary(self) -> str:
        text = (
            f"extracted {len(self.done)} clip(s), {len(self.skipped)} already done; hands detected in "
            f"{self.hand_frames}/{self.frames} frames ({self.hand_frames / max(self.frames, 1):.1%})"
        )
        if self.record is not None:
            text += f"; extractor: {self.record.describe()}"
        if self.no_person:
            text += f"; no person detected in {len(self.no_person)}: {', '.join(self.no_person[:5])}" + (
                " ..." if len(self.no_person) > 5 else ""
            )
        if self.failed:
            text += f"; {len(self.failed)} failed"
        return text


class Extractor:
    """An extractor, checked once (MediaPipe, bundles, layout), for clips in one layout."""

    def __init__(self, layout: KeypointLayout, choice: ExtractorChoice | None = None):
        self.layout, self.choice = layout, (choice or ExtractorChoice()).resolved()
        self.record = self.choice.record(layout)  # fail now, not on the first clip

    def __call__(self, path: Path) -> ExtractResult:
        frames, width, height, fps = read_frames(path)
        # A new tracker per clip: its tracking state must not carry over from the previous video.
        with self.choice.open(self.layout, fps) as tracker:
            tracked = tracker.track(frames)
        if not len(tracked.keypoints):
            raise DatasetError(f"{path}: holds no frames")
        return ExtractResult(
            tracked.keypoints, width, height, fps, tracked.pose_frames, tracked.hand_frames, tracker.record
        )


def find_inputs(paths: list[Path]) -> list[tuple[Path, str]]:
    """(input, name) per clip: video files, and folders of frame images; a folder holding videos
    or frame folders is searched recursively. The name is the path relative to the argument."""
    found: list[tuple[Path, str]] = []
    for root in paths:
        if not root.exists():
            raise DatasetError(f"{root} does not exist")
        if root.is_file():
            if root.suffix.lower() not in VIDEO_SUFFIXES:
                raise DatasetError(f"{root}: not a video ({', '.join(VIDEO_SUFFIXES)})")
            found.append((root, root.stem))
            continue
        if any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir()):
            found.append((root, root.name))
            continue
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).with_suffix("").as_posix()
            if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES:
                found.append((p, rel))
            elif p.is_dir() and any(q.suffix.lower() in IMAGE_SUFFIXES for q in p.iterdir()):
                found.append((p, p.relative_to(root).as_posix()))
    if not found:
        raise DatasetError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) or frame folders in {', '.join(map(str, paths))}")
    names = [n for _, n in found]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise DatasetError(f"two inputs would both be written as {dup}.npz; give them distinct names or folders")
    return found


def labels_for(found: list[tuple[Path, str]], manifest: Path | None, pattern: str | None) -> dict[str, dict[str, str]]:
    """name -> {"sign", "signer", "split"} from a manifest CSV (column `video`: a path or a name)
    or from a regex with named groups sign, signer (and split) searched in each name."""
    if manifest is not None and pattern is not None:
        raise ConfigError("give --manifest or --pattern, not both")
    labels: dict[str, dict[str, str]] = {name: {"sign": "", "signer": "", "split": "train"} for _, name in found}
    if pattern is not None:
        try:
            regex = re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"--pattern {pattern!r} is not a regular expression ({e})") from None
        if not {"sign", "signer"} <= set(regex.groupindex):
            raise ConfigError(f"--pattern needs named groups (?P<sign>...) and (?P<signer>...), got {pattern!r}")
        for _, name in found:
            m = regex.search(name)
            if not m:
                raise DatasetError(f"--pattern {pattern!r} does not match {name!r}")
            labels[name] = {"sign": m["sign"], "signer": m["signer"], "split": m.groupdict().get("split") or "train"}
    if manifest is not None:
        try:
            with open(manifest, newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
        except OSError as e:
            raise DatasetError(f"manifest {manifest}: cannot be read ({e.strerror or e})") from None
        if not rows or not {"video", "sign", "signer"} <= set(rows[0]):
            raise DatasetError(f"manifest {manifest}: needs columns video, sign, signer (and optionally split)")
        by_key = {}
        for row in rows:
            by_key[Path(row["video"]).with_suffix("").as_posix()] = row
            by_key[Path(row["video"]).stem] = row
        for path, name in found:
            row = by_key.get(name) or by_key.get(path.with_suffix("").as_posix()) or by_key.get(path.stem)
            if row is None:
                raise DatasetError(f"manifest {manifest}: no row for {name}")
            labels[name] = {
                "sign": row["sign"].strip(),
                "signer": row["signer"].strip(),
                "split": (row.get("split") or "train").strip(),
            }
    return labels


_WORKER: Extractor | None = None


def _init_worker(layout: KeypointLayout, choice: ExtractorChoice) -> None:
    global _WORKER
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging: warnings and worse only
    _WORKER = Extractor(layout, choice)


def _run_one(path: Path, target: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Extract one input and write its npz atomically; (stats, None) or (None, error)."""
    try:
        result = _WORKER(path)
    except DatasetError as e:
        return None, str(e)
    except Exception as e:  # noqa: BLE001 - MediaPipe and OpenCV raise their own types; report, continue
        return None, f"{path}: {type(e).__name__}: {e}"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp.npz")
    np.savez_compressed(
        tmp,
        keypoints=result.keypoints,
        frame_size=np.array([result.width, result.height], dtype=np.float32),
        fps=np.array(result.fps, dtype=np.float32),
        pose_frames=np.array(result.pose_frames),
        hand_frames=np.array(result.hand_frames),
        extractor=npz_entry(result.record),
    )
    os.replace(tmp, target)
    return _stats(target), None


def _check_same_extractor(target: Path, record: ExtractorRecord) -> None:
    """An npz already in the output folder must come from this run's extractor (or predate records)."""
    try:
        with np.load(target, allow_pickle=False) as npz:
            theirs = record_from_npz(npz, str(target))
    except (OSError, ValueError) as e:
        raise DatasetError(f"{target}: not a readable npz ({e}); delete it to extract it again") from None
    if theirs is not None and theirs.differences(record):
        raise DatasetError(
            f"{target} was extracted with {theirs.describe()}, this run uses {record.describe()}; "
            "extract into another folder (one folder, one extractor), or pass that folder's --extractor"
        )


def _stats(npz_path: Path) -> dict[str, Any]:
    with np.load(npz_path, allow_pickle=False) as d:
        width, height = (float(v) for v in d["frame_size"])
        return {
            "width": int(width),
            "height": int(height),
            "fps": float(d["fps"]),
            "frames": len(d["keypoints"]),
            "pose_frames": int(d["pose_frames"]),
            "hand_frames": int(d["hand_frames"]),
        }


def extract(
    inputs: list[Path],
    out: Path,
    layout: str = "karsl184",
    workers: int = 1,
    manifest: Path | None = None,
    pattern: str | None = None,
    extractor: ExtractorChoice | None = None,
) -> tuple[ExtractReport, Path]:
    """Extract every input into out/<name>.npz (keypoints, frame_size, fps, detection counts)
    and write out/manifest.csv, which `prepare --from clips` reads. Inputs whose npz exists are
    skipped (resumable); a failing input is recorded in the report (not logged: the caller
    says it) and the others go on. When none is extracted or skipped, nothing is written.
    A clip already there from another extractor is an error: one folder, one extractor."""
    lay = load_layout(layout)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    found = find_inputs(inputs)
    labels = labels_for(found, manifest, pattern)
    # Fail now, in this process, if MediaPipe or a bundle is missing or the layout can't be made.
    checked = Extractor(lay, extractor)
    choice, record = checked.choice, checked.record
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} is a file; the output is a folder")
    report = ExtractReport(record=record)
    todo, rows = [], {}
    for path, name in found:
        target = out / f"{name}.npz"
        if target.exists():
            _check_same_extractor(target, record)
            report.skipped.append(name)
            rows[name] = (path, _stats(target))
        else:
            todo.append((path, name, target))
    for path, name, (stats, error) in _run_all(todo, lay, choice, workers):
        if error is not None:
            report.failed.append(error)
        else:
            report.done.append(name)
            rows[name] = (path, stats)
    for name, (_, stats) in rows.items():
        report.frames += stats["frames"]
        report.hand_frames += stats["hand_frames"]
        if stats["pose_frames"] == 0 and name not in report.no_person:
            report.no_person.append(name)
    if rows:  # nothing extracted, nothing written: the folder is made by the first clip
        _write_manifest(out / MANIFEST, found, rows, labels)
    return report, out / MANIFEST


def _run_all(
    todo: list[tuple[Path, str, Path]], layout: KeypointLayout, choice: ExtractorChoice, workers: int
) -> Iterator[tuple[Path, str, tuple[dict[str, Any] | None, str | None]]]:
    """(path, name, (stats, error)) of each input as it is done, in `workers` processes."""
    with progress_bar("extract: videos", len(todo)) as advance:
        if workers == 1:
            _init_worker(layout, choice)
            for path, name, target in todo:
                yield path, name, _run_one(path, target)
                advance(1)
            return
        # Spawned, not forked: MediaPipe's graph threads in this process do not survive a fork.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(layout, choice)
        ) as pool:
            futures = {pool.submit(_run_one, p, t): (p, n) for p, n, t in todo}
            for fut in concurrent.futures.as_completed(futures):
                yield *futures[fut], fut.result()
                advance(1)


def _write_manifest(
    path: Path, found: list[tuple[Path, str]], rows: dict[str, tuple[Path, dict[str, Any]]], labels: dict
) -> None:
    """manifest.csv (atomically): one row per extracted input, in the inputs' order."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(MANIFEST_COLUMNS)
        for _, name in found:
            if name not in rows:
                continue
            source, stats = rows[name]
            lab = labels[name]
            writer.writerow(
                [f"{name}.npz", lab["sign"], lab["signer"], lab["split"], stats["width"], stats["height"]]
                + [f"{stats['fps']:g}", stats["frames"], stats["pose_frames"], stats["hand_frames"], str(source)]
            )
    os.replace(tmp, path)
