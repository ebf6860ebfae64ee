"""Tasks against Holistic on the same frames of real signer videos, and what the difference costs
a trained model. Writes the tables of docs/extractors.md.

The videos come from public repositories fetched at run time (never committed):

- `tests/data/signer_video.mp4` (github:sign-language-processing/pose@7a36fcf, MIT);
- github:sign-language-processing/pose@0283b15 `videos/FOOTBALL.mp4`, `videos/SOUP.mp4`, and
  @22a7f2e `sample-data/video/video.mp4`;
- github:sign-language-processing/datasets@d71f97f, AUTSL's sample
  `sign_language_datasets/datasets/autsl/dummy_data/videos/signer0_sample1000_color.mp4`.

Each video is decoded once into PNG frames (lossless), so both extractors see the same pixels
(OpenCV also refuses FOOTBALL.mp4 as a video: 62 of the 64 frames its header lists decode). Then
`accel-signs extract` runs on the frame folders once per extractor, each from the Python that has
its MediaPipe (`--holistic-python`: a venv with mediapipe 0.10.21; this one: >= 0.10.30).

Per body part (karsl184: pose = shoulders, elbows, wrists; face; each hand slot):
- detection rate: frames in which the part is found, for each extractor;
- median distance: over the points both found, in shoulder widths (Holistic's shoulders in
  that frame, in the video's own proportions);
- hand slots: in frames where both found a hand, the share in which every hand Tasks found sits in
  the slot (right/left) of the Holistic hand nearest to it.

What the difference costs (`--checkpoint`): the model classifies each video and its windows
(`--window` frames, every `--stride`) from each extractor's keypoints; top-1 agreement and the mean
absolute change in the probability of the class it picks on Holistic's keypoints.

    python benchmarks/extractors.py --pose-git DIR --datasets-git DIR --work /tmp/ex \\
        --holistic-python /path/venv-legacy/bin/python --landmarkers BUNDLES [--checkpoint runs/x/best]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# name -> (repository key, commit, path)
VIDEOS = {
    "football": ("pose", "0283b15", "videos/FOOTBALL.mp4"),
    "soup": ("pose", "0283b15", "videos/SOUP.mp4"),
    "pose_sample": ("pose", "22a7f2e", "sample-data/video/video.mp4"),
    "autsl_sample": (
        "datasets",
        "d71f97f",
        "sign_language_datasets/datasets/autsl/dummy_data/videos/signer0_sample1000_color.mp4",
    ),
}
EXTRACTORS = ("holistic", "tasks", "seed")


def fetch_videos(gits: dict[str, Path], out: Path) -> dict[str, Path]:
    """The videos out of the fetched git directories (`git show COMMIT:PATH`), plus the test video."""
    out.mkdir(parents=True, exist_ok=True)
    videos = {"signer_video": ROOT / "tests" / "data" / "signer_video.mp4"}
    for name, (repo, commit, path) in VIDEOS.items():
        target = out / f"{name}.mp4"
        if not target.exists():
            blob = subprocess.run(
                ["git", f"--git-dir={gits[repo]}", "show", f"{commit}:{path}"], check=True, capture_output=True
            ).stdout
            target.write_bytes(blob)
        videos[name] = target
    return videos


def to_frames(video: Path, folder: Path) -> int:
    """Every frame OpenCV decodes, as lossless PNGs; returns the count."""
    import cv2

    if folder.exists():
        return len(list(folder.glob("*.png")))
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    capture = cv2.VideoCapture(str(video))
    n = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        cv2.imwrite(str(tmp / f"{n:05d}.png"), image)
        n += 1
    capture.release()
    tmp.rename(folder)
    return n


def run_extract(python: str, extractor: str, frames: Path, out: Path, landmarkers: Path | None) -> None:
    cmd = [python, "-m", "accel_signs", "-q", "extract", str(frames), str(out), "--extractor", extractor]
    cmd += ["--layout", "karsl184", "--workers", "1"]
    if landmarkers is not None and extractor != "holistic":
        cmd += ["--landmarkers", str(landmarkers)]
    subprocess.run(cmd, check=True)


def load(folder: Path, name: str) -> tuple[np.ndarray, float]:
    """(keypoints (T, 184, 4), width / height) of one extracted clip."""
    with np.load(folder / f"{name}.npz") as d:
        width, height = (float(v) for v in d["frame_size"])
        return d["keypoints"], width / height


def compare(ref: np.ndarray, other: np.ndarray, aspect: float, layout) -> dict[str, dict[str, float]]:
    """Per part: detection rates, distances (in shoulder widths) over points both found, and sums
    to pool them across videos."""
    scale = np.array([aspect, 1.0])
    left, right = layout.shoulders
    out = {}
    width = np.linalg.norm((ref[:, left, :2] - ref[:, right, :2]) * scale, axis=-1)  # (T,)
    ok_width = (ref[:, left] != 0).any(-1) & (ref[:, right] != 0).any(-1) & (width > 0)
    for part, points in layout.parts.items():
        pts = list(points)
        found_ref = (ref[:, pts] != 0).any(-1)  # (T, P)
        found_other = (other[:, pts] != 0).any(-1)
        both = found_ref & found_other & ok_width[:, None]
        d = np.linalg.norm((ref[:, pts, :2] - other[:, pts, :2]) * scale, axis=-1) / np.maximum(width[:, None], 1e-6)
        out[part] = {
            "frames": len(ref),
            "found_ref": int(found_ref.any(1).sum()),
            "found_other": int(found_other.any(1).sum()),
            "distances": d[both].tolist(),
        }
    out["hand_slots"] = hand_slots(ref, other, layout, scale)
    return out


def hand_slots(ref: np.ndarray, other: np.ndarray, layout, scale: np.ndarray) -> dict[str, int]:
    """Frames where both found a hand, and those in which each of `other`'s hands sits in the slot of
    the nearest hand of `ref` (by wrist)."""
    wrists = {h.part: h.wrist for h in layout.hands}
    both = same = 0
    for t in range(len(ref)):
        mine = {p: ref[t, w, :2] * scale for p, w in wrists.items() if (ref[t, list(layout.parts[p])] != 0).any()}
        theirs = {p: other[t, w, :2] * scale for p, w in wrists.items() if (other[t, list(layout.parts[p])] != 0).any()}
        if not mine or not theirs:
            continue
        both += 1
        same += all(min(mine, key=lambda q: np.linalg.norm(mine[q] - xy)) == p for p, xy in theirs.items())
    return {"both": both, "same": same}


def pooled(results: list[dict]) -> dict[str, dict[str, float]]:
    """The per-video comparisons pooled over all frames."""
    out = {}
    for part in results[0]:
        if part == "hand_slots":
            both = sum(r[part]["both"] for r in results)
            same = sum(r[part]["same"] for r in results)
            out[part] = {"frames": both, "same": same / both if both else float("nan")}
            continue
        frames = sum(r[part]["frames"] for r in results)
        d = np.concatenate([r[part]["distances"] for r in results]) if frames else np.zeros(0)
        out[part] = {
            "frames": frames,
            "rate_ref": sum(r[part]["found_ref"] for r in results) / frames,
            "rate_other": sum(r[part]["found_other"] for r in results) / frames,
            "median": float(np.median(d)) if len(d) else float("nan"),
            "p90": float(np.percentile(d, 90)) if len(d) else float("nan"),
            "points": len(d),
        }
    return out


def windows(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """The whole clip, and every `window` frames each `stride` frames where the clip is longer."""
    spans = [(0, n)]
    if n > window:
        spans += [(s, s + window) for s in range(0, n - window + 1, stride)]
    return spans


def cost(checkpoint: str, clips: dict[str, dict[str, tuple[np.ndarray, float]]], ref: str, other: str, args) -> dict:
    """Top-1 agreement and mean |change| in the probability of the class picked on `ref`'s keypoints,
    through `classify` (what predict and serve use). The face is left out (zeros) on both sides: the
    checkpoint was trained without one."""
    from accel_signs.data.layout import builtin_layout
    from accel_signs.model.checkpoint import load_checkpoint
    from accel_signs.tools.inference import classify

    ckpt = load_checkpoint(checkpoint)
    face = list(builtin_layout("karsl184").parts["face"])
    classes = len(ckpt.classes)
    agree, changes, tops = 0, [], []
    for by in clips.values():
        (a, aspect), (b, _) = by[ref], by[other]
        for start, end in windows(len(a), args.window, args.stride):
            probs = []
            for clip in (a[start:end].copy(), b[start:end].copy()):
                clip[:, face] = 0
                top = classify(ckpt, clip, (aspect, 1.0), top_k=classes)
                probs.append(np.array([t["probability"] for t in sorted(top, key=lambda t: t["class_id"])]))
            pick = int(probs[0].argmax())
            tops.append(float(probs[0][pick]))
            agree += int(probs[1].argmax() == pick)
            changes.append(abs(float(probs[1][pick] - probs[0][pick])))
    return {
        "clips": len(changes),
        "videos": len(clips),
        "top1_agreement": agree / len(changes),
        "mean_abs_change": float(np.mean(changes)),
        "mean_top_probability": float(np.mean(tops)),
    }


def table(by_pair: dict[str, dict]) -> str:
    parts = [p for p in next(iter(by_pair.values())) if p != "hand_slots"]
    lines = [
        "| part | extractor | frames | detected: holistic | detected: this | median distance (shoulder widths) | 90th pct |",
        "|---|---|---|---|---|---|---|",
    ]
    for pair, res in by_pair.items():
        for part in parts:
            r = res[part]
            lines.append(
                f"| {part} | {pair} | {r['frames']} | {r['rate_ref']:.1%} | {r['rate_other']:.1%} | "
                f"{r['median']:.3f} | {r['p90']:.3f} |"
            )
        h = res["hand_slots"]
        lines.append(f"| hands in the same slots | {pair} | {h['frames']} | | | {h['same']:.1%} | |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pose-git", type=Path, required=True, help="fetched github:sign-language-processing/pose")
    p.add_argument("--datasets-git", type=Path, required=True, help="fetched github:sign-language-processing/datasets")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--holistic-python", required=True, help="a Python with mediapipe <= 0.10.21 and accel_signs")
    p.add_argument("--landmarkers", type=Path, default=None, help="folder of .task bundles for tasks and seed")
    p.add_argument("--extractors", default="tasks,seed", help="compared with holistic")
    p.add_argument("--checkpoint", default=None, help="a checkpoint for what the difference costs")
    p.add_argument("--window", type=int, default=24)
    p.add_argument("--stride", type=int, default=8)
    args = p.parse_args()

    from accel_signs.data.layout import builtin_layout

    layout = builtin_layout("karsl184")
    videos = fetch_videos({"pose": args.pose_git, "datasets": args.datasets_git}, args.work / "videos")
    frames = args.work / "frames"
    for name, video in videos.items():
        print(f"{name}: {to_frames(video, frames / name)} frames", file=sys.stderr)
    others = args.extractors.split(",")
    for extractor in ("holistic", *others):
        python = args.holistic_python if extractor == "holistic" else sys.executable
        run_extract(python, extractor, frames, args.work / "keypoints" / extractor, args.landmarkers)
    clips = {name: {e: load(args.work / "keypoints" / e, name) for e in ("holistic", *others)} for name in videos}
    by_pair = {}
    for other in others:
        per_video = [compare(c["holistic"][0], c[other][0], c["holistic"][1], layout) for c in clips.values()]
        by_pair[other] = pooled(per_video)
    report = {"videos": {n: len(c["holistic"][0]) for n, c in clips.items()}, "comparison": by_pair}
    if args.checkpoint:
        report["cost"] = {o: cost(args.checkpoint, clips, "holistic", o, args) for o in others}
    (args.work / "extractors.json").write_text(json.dumps(report, indent=1))
    print(table(by_pair))
    for other, c in report.get("cost", {}).items():
        print(
            f"holistic -> {other}: {c['clips']} clips of {c['videos']} videos, top-1 agreement "
            f"{c['top1_agreement']:.3f}, mean |change| in the top class's probability {c['mean_abs_change']:.3f} "
            f"(its mean on holistic: {c['mean_top_probability']:.3f})"
        )


if __name__ == "__main__":
    main()
