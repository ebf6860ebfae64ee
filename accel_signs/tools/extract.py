"""Videos -> MediaPipe Holistic keypoints (`accel-signs extract`, `predict` on a video).

Each video (or folder of frame images) becomes one clip: MediaPipe Holistic runs on every
frame in video mode (tracking between frames), as the KArSL pipeline did, with the face
mesh's iris rings (refine_face_landmarks) that the karsl184 layout includes. The landmarks
are arranged in a layout whose points name their MediaPipe source (karsl184, holistic543,
pose33-hands42, pose33). An undetected part is zeros; the pose's visibility is kept, face
and hand points get 1 where detected.

MediaPipe is the optional `extract` extra. Its wheels up to 0.10.21 ship the Holistic models
(0.10.30 and later dropped `mediapipe.solutions` and its bundled models), so nothing is
downloaded at run time.
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
from accel_signs.data.layout import NUM_CHANNELS, KeypointLayout, load_layout

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# The largest video frame read: 8K UHD (7680x4320), in either orientation. A header that claims
# more is refused before a frame is decoded (one such frame, decoded, is gigabytes).
MAX_PIXELS = 7680 * 4320
MEDIAPIPE_HINT = "extracting keypoints needs MediaPipe: pip install 'accel-signs[extract]' (mediapipe 0.10.14-0.10.21)"
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


@dataclass
class ExtractReport:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already extracted
    no_person: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # "path: problem"
    frames: int = 0
    hand_frames: int = 0

    def summary(self) -> str:
        text = (
            f"extracted {len(self.done)} clip(s), {len(self.skipped)} already done; hands detected in "
            f"{self.hand_frames}/{self.frames} frames ({self.hand_frames / max(self.frames, 1):.1%})"
        )
        if self.no_person:
            text += f"; no person detected in {len(self.no_person)}: {', '.join(self.no_person[:5])}" + (
                " ..." if len(self.no_person) > 5 else ""
            )
        if self.failed:
            text += f"; {len(self.failed)} failed"
        return text


def _mediapipe():
    try:
        import cv2  # noqa: F401 - MediaPipe brings OpenCV; videos are read with it
        import mediapipe as mp
    except ImportError:
        raise ConfigError(MEDIAPIPE_HINT) from None
    if not hasattr(mp, "solutions"):
        raise ConfigError(
            f"mediapipe {getattr(mp, '__version__', '?')} has no Holistic solution (0.10.30 and later "
            f"dropped it and its models); {MEDIAPIPE_HINT}"
        )
    return mp


def _frames(path: Path):
    """(RGB frames iterator, width, height, fps) of a video file or a folder of images."""
    import cv2

    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DatasetError(f"{path}: no frame images ({', '.join(IMAGE_SUFFIXES)})")
        first = cv2.imread(str(images[0]))
        if first is None:
            raise DatasetError(f"{images[0]}: not a readable image")
        height, width = first.shape[:2]

        def read_images():
            for p in images:
                image = cv2.imread(str(p))
                if image is None:
                    raise DatasetError(f"{p}: not a readable image")
                if image.shape[:2] != (height, width):
                    raise DatasetError(
                        f"{p}: {image.shape[1]}x{image.shape[0]}, but the folder's first frame is {width}x{height}"
                    )
                yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

        return read_images(), width, height, 0.0
    if not logger.isEnabledFor(logging.DEBUG):
        # FFmpeg reports a damaged file on stderr itself, beside the one error line that says
        # what matters; --verbose keeps its messages. Read when OpenCV first opens a video.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise DatasetError(f"{path}: not a readable video")
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width <= 0 or height <= 0:  # what FFmpeg reports for a size it refuses to decode
        capture.release()
        raise DatasetError(f"{path}: not a readable video (no valid frame size in its header)")
    if width * height > MAX_PIXELS:
        capture.release()
        raise DatasetError(f"{path}: {width}x{height} frames, larger than 8K (7680x4320); scale the video down first")
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    listed = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)  # 0 or less: the container does not say

    def read_video():
        read = 0
        try:
            while True:
                ok, image = capture.read()
                if not ok:
                    break
                read += 1
                yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        finally:
            capture.release()
        # Decoding stops without an error at a damaged or missing part; some containers give
        # only an estimate of the count (duration x fps), hence the margin.
        if 0 < read < listed - max(1, listed // 50):
            raise DatasetError(
                f"{path}: truncated or damaged: {read} of the {listed} frames its header lists could be decoded"
            )

    return read_video(), width, height, fps


def _points(landmarks, count: int, visibility: bool) -> np.ndarray:
    out = np.zeros((count, NUM_CHANNELS), dtype=np.float32)
    if landmarks is None:
        return out
    for i, lm in enumerate(landmarks.landmark[:count]):
        out[i] = (lm.x, lm.y, lm.z, lm.visibility if visibility else 1.0)
    return out


POSE_MODELS = {0: "pose_landmark_lite.tflite", 1: "pose_landmark_full.tflite", 2: "pose_landmark_heavy.tflite"}


@dataclass
class TrackedFrame:
    """One frame's keypoints in a layout, and what MediaPipe found in it."""

    keypoints: np.ndarray  # (points, 4) float32; undetected points are 0
    person: bool  # a pose was detected
    hands: bool  # at least one hand was detected


class Tracker:
    """MediaPipe Holistic in video mode over one stream of frames (a video, or one live
    connection): tracking carries over from frame to frame, so every stream needs its own."""

    def __init__(self, layout: KeypointLayout, model_complexity: int = 1):
        mp = _checked_mediapipe(layout, model_complexity)
        self.layout = layout
        self._holistic = mp.solutions.holistic.Holistic(
            static_image_mode=False,
            model_complexity=model_complexity,
            refine_face_landmarks=True,
            min_detection_confidence=0.5,
            min_tracking_confidence=0.5,
        )

    def __call__(self, image: np.ndarray) -> TrackedFrame:
        """image: (H, W, 3) uint8 RGB, the next frame of the stream."""
        image.flags.writeable = False
        r = self._holistic.process(image)
        sources = {
            "pose": _points(r.pose_landmarks, 33, visibility=True),
            "face": _points(r.face_landmarks, 478, visibility=False),
            "left_hand": _points(r.left_hand_landmarks, 21, visibility=False),
            "right_hand": _points(r.right_hand_landmarks, 21, visibility=False),
        }
        frame = self.layout.assemble({k: v[None] for k, v in sources.items()})[0]  # (1, P, 4) -> (P, 4)
        hands = r.left_hand_landmarks is not None or r.right_hand_landmarks is not None
        return TrackedFrame(frame, r.pose_landmarks is not None, hands)

    def close(self) -> None:
        if self._holistic is not None:
            self._holistic.close()
            self._holistic = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _checked_mediapipe(layout: KeypointLayout, model_complexity: int):
    """MediaPipe, once the layout and the pose model are known to work. Its wheels ship only the
    complexity-1 pose model and download the others on first use; nothing may download at run
    time here, so a missing model is an error."""
    if any(s is None for s in layout.sources):
        raise ConfigError(
            f"layout {layout.name} does not name each point's MediaPipe source; extract needs one "
            "that does (karsl184, holistic543, pose33-hands42, pose33)"
        )
    mp = _mediapipe()
    if model_complexity not in POSE_MODELS:
        raise ConfigError(f"--model-complexity must be 0, 1 or 2, got {model_complexity}")
    model = Path(mp.__file__).parent / "modules" / "pose_landmark" / POSE_MODELS[model_complexity]
    if not model.exists():
        raise ConfigError(
            f"--model-complexity {model_complexity} needs MediaPipe's {model.name}, which its wheel does not "
            "ship (MediaPipe would download it); use --model-complexity 1, or put the file at " + str(model)
        )
    return mp


class Extractor:
    """MediaPipe Holistic, set up once, for clips in one layout."""

    def __init__(self, layout: KeypointLayout, model_complexity: int = 1):
        _checked_mediapipe(layout, model_complexity)  # fail now, not on the first clip
        self.layout, self.model_complexity = layout, model_complexity

    def __call__(self, path: Path) -> ExtractResult:
        frames, width, height, fps = _frames(path)
        # A new tracker per clip: its tracking state must not carry over from the previous video.
        with Tracker(self.layout, self.model_complexity) as track:
            tracked = [track(image) for image in frames]
        if not tracked:
            raise DatasetError(f"{path}: holds no frames")
        return ExtractResult(
            np.stack([t.keypoints for t in tracked]),  # (T, P, 4)
            width,
            height,
            fps,
            sum(t.person for t in tracked),
            sum(t.hands for t in tracked),
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


def _init_worker(layout: KeypointLayout, model_complexity: int) -> None:
    global _WORKER
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging: warnings and worse only
    _WORKER = Extractor(layout, model_complexity)


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
    )
    os.replace(tmp, target)
    return _stats(target), None


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
    model_complexity: int = 1,
) -> tuple[ExtractReport, Path]:
    """Extract every input into out/<name>.npz (keypoints, frame_size, fps, detection counts)
    and write out/manifest.csv, which `prepare --from clips` reads. Inputs whose npz exists are
    skipped (resumable); a failing input is recorded in the report (not logged: the caller
    says it) and the others go on. When none is extracted or skipped, nothing is written."""
    lay = load_layout(layout)
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    found = find_inputs(inputs)
    labels = labels_for(found, manifest, pattern)
    Extractor(lay, model_complexity)  # fail now, in this process, if MediaPipe is missing or the layout can't be made
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} is a file; the output is a folder")
    report = ExtractReport()
    todo, rows = [], {}
    for path, name in found:
        target = out / f"{name}.npz"
        if target.exists():
            report.skipped.append(name)
            rows[name] = (path, _stats(target))
        else:
            todo.append((path, name, target))
    for path, name, (stats, error) in _run_all(todo, lay, model_complexity, workers):
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
    todo: list[tuple[Path, str, Path]], layout: KeypointLayout, model_complexity: int, workers: int
) -> Iterator[tuple[Path, str, tuple[dict[str, Any] | None, str | None]]]:
    """(path, name, (stats, error)) of each input as it is done, in `workers` processes."""
    with progress_bar("extract: videos", len(todo)) as advance:
        if workers == 1:
            _init_worker(layout, model_complexity)
            for path, name, target in todo:
                yield path, name, _run_one(path, target)
                advance(1)
            return
        # Spawned, not forked: MediaPipe's graph threads in this process do not survive a fork.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(layout, model_complexity)
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
