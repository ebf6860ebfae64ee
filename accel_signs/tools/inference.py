"""Using a trained checkpoint outside the trainer: classify clips, export to ONNX."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from accel_signs.core.errors import ConfigError, DatasetError, ExportError
from accel_signs.data.extractor import ExtractorRecord, record_from_npz
from accel_signs.data.prepare import check_clip
from accel_signs.data.sampling import gather_frames, tsn_positions
from accel_signs.data.store import NUMPY_LOAD_ERRORS
from accel_signs.extractors.choose import ExtractorChoice, warn_if_other
from accel_signs.model.checkpoint import Checkpoint, load_checkpoint
from accel_signs.model.tta import flip_averaged, flip_index

logger = logging.getLogger(__name__)
ONNX_HINT = "ONNX export needs the onnx extra: pip install 'accel-signs[onnx]' (onnx, onnxruntime, onnxscript)"


def load_clips(
    path: str | os.PathLike[str], num_points: int = 184
) -> list[tuple[str, np.ndarray, tuple[float, float] | None]]:
    """(name, frames, frame size) for an .npy clip (frames, points, 4), each array of an .npz, or
    the clip `extract` wrote (an .npz with `keypoints` and `frame_size`); no pickles."""
    path = Path(path)
    archive = False
    try:
        loaded = np.load(path, allow_pickle=False)  # an .npy array or an .npz archive, whatever the name says
        if isinstance(loaded, np.lib.npyio.NpzFile):
            archive = True
            with loaded as npz:
                if "keypoints" in npz.files:  # written by `accel-signs extract`: one clip and its video's size
                    size = _recorded_size(npz["frame_size"], path) if "frame_size" in npz.files else None
                    clips = [(path.stem, npz["keypoints"], size)]
                else:
                    clips = [(key, npz[key], None) for key in npz.files]
        else:
            clips = [(path.stem, loaded, None)]
    except FileNotFoundError:
        raise DatasetError(f"clip file {path} does not exist") from None
    except NUMPY_LOAD_ERRORS as e:
        raise DatasetError(f"{path}: not a readable numeric .npy/.npz file ({e})") from None
    if not clips:
        raise DatasetError(f"{path}: holds no arrays")
    return [
        (
            name,
            check_clip(clip, f"{path} [{name}]" if archive else str(path), num_points),
            size if size and size[0] > 0 and size[1] > 0 else None,
        )
        for name, clip, size in clips
    ]


def _recorded_size(value: Any, path: Path) -> tuple[float, float]:
    """An extracted clip's `frame_size`: (width, height) in pixels."""
    if not (isinstance(value, np.ndarray) and value.shape == (2,) and value.dtype.kind in "fiu"):
        what = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
        raise DatasetError(f"{path}: frame_size must be 2 numbers (width, height), got {what}")
    if not np.isfinite(value).all():
        raise DatasetError(f"{path}: frame_size {value.tolist()} is not finite")
    return float(value[0]), float(value[1])


def is_video(path: Path) -> bool:
    """A video file or a folder of frame images (what `extract` reads)."""
    from accel_signs.extractors.base import IMAGE_SUFFIXES, VIDEO_SUFFIXES

    return (path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES) or (
        path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())
    )


def read_inputs(
    path: Path,
    layout,
    extractor: ExtractorChoice | None = None,
    trained_on: ExtractorRecord | None = None,
) -> list[tuple[str, np.ndarray, tuple[float, float] | None]]:
    """Clips to classify or draw: keypoint files as load_clips reads them, or a video / frame
    folder, extracted into `layout` first by `extractor` (auto: `trained_on`'s, the checkpoint's
    extractor, where this MediaPipe runs it). Keypoints from another extractor than `trained_on`
    get one warning naming both."""
    if is_video(path):
        from accel_signs.tools.extract import Extractor

        extract = Extractor(layout, (extractor or ExtractorChoice()).resolved(trained_on))
        warn_if_other(trained_on, extract.record)
        result = extract(path)
        if result.pose_frames == 0:
            logger.warning("%s: no person detected in any of its %d frames", path, len(result.keypoints))
        return [(path.stem, result.keypoints, (float(result.width), float(result.height)))]
    if path.is_dir():
        raise DatasetError(f"{path} is a folder without frame images; give a clip (.npy/.npz) or a video")
    if trained_on is not None and path.suffix == ".npz" and path.is_file():
        _warn_if_extracted_otherwise(path, trained_on)
    return load_clips(path, layout.num_points)


def _warn_if_extracted_otherwise(path: Path, trained_on: ExtractorRecord) -> None:
    """An npz from `extract` records its extractor: warn when it is not the checkpoint's."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            record = record_from_npz(npz, str(path))
    except NUMPY_LOAD_ERRORS:
        return  # load_clips says what is wrong with the file
    if record is not None:
        warn_if_other(trained_on, record)


def model_input(clip: np.ndarray, seq_len: int) -> torch.Tensor:
    """One clip (frames, points, 4) -> the model's input (1, seq_len, points x 4), sampled at the bin
    centres exactly as evaluation samples (any length, shorter than seq_len included)."""
    frames = torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32))
    lengths, offsets = torch.tensor([len(clip)]), torch.tensor([0])
    x = gather_frames(frames, offsets, lengths, tsn_positions(lengths, seq_len, random=False))
    return x.flatten(2)  # (1, T, P, C) -> (1, T, P*C)


def parse_frame_size(text: str | None) -> tuple[float, float] | None:
    """`1920x1080` -> (1920.0, 1080.0); None stays None (square: KArSL's videos)."""
    if text is None:
        return None
    try:
        width, height = (float(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--frame-size: expected WIDTHxHEIGHT in pixels, e.g. 1920x1080, got {text!r}") from None
    if not (width > 0 and height > 0):
        raise ConfigError(f"--frame-size: width and height must be > 0, got {text!r}")
    return width, height


def predict(
    checkpoint: str | os.PathLike[str],
    clip_path: str | os.PathLike[str],
    top_k: int = 5,
    frame_size: tuple[float, float] | None = None,
    extractor: ExtractorChoice | None = None,
    tta_flip: bool = False,
) -> list[dict[str, Any]]:
    """Top-k classes of every clip in `clip_path` (keypoints, or a video to extract first), best
    first. `frame_size` is the (width, height) of the video the keypoints come from: MediaPipe
    divides x by the width and y by the height, and the model undoes that stretch (None: what a
    video or an extracted clip records, else square). A video is extracted by `extractor`, by
    default the checkpoint's. `tta_flip`: average each clip's probabilities with its mirror image's."""
    if top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {top_k}")
    ckpt = load_checkpoint(checkpoint)
    flip = flip_index(ckpt, tta_flip)
    results = []
    # For a video: the extractor that made its keypoints (--extractor, by default the checkpoint's).
    made_by = (extractor or ExtractorChoice()).resolved(ckpt.extractor).name if is_video(Path(clip_path)) else None
    for name, clip, size in read_inputs(Path(clip_path), ckpt.layout, extractor, ckpt.extractor):
        size = frame_size or size  # --frame-size wins over what a video or an extracted clip says
        results.append(
            {"clip": name, "frames": len(clip), "frame_size": list(size) if size else None}
            | ({"extractor": made_by} if made_by else {})
            | {"top": classify(ckpt, clip, size, top_k, flip)}
        )
    return results


def classify(
    ckpt: Checkpoint,
    clip: np.ndarray,
    size: tuple[float, float] | None,
    top_k: int = 5,
    flip: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """Top-k of one clip (frames, points, 4) from a video of `size` (width, height; None:
    square), best first, with every gloss the checkpoint has. `predict` and the live server
    both classify through here, so they give the same answer for the same keypoints."""
    return classify_batch(ckpt, [clip], [size], top_k, flip)[0]


def classify_batch(
    ckpt: Checkpoint,
    clips: list[np.ndarray],
    sizes: list[tuple[float, float] | None],
    top_k: int = 5,
    flip: torch.Tensor | None = None,
) -> list[list[dict[str, Any]]]:
    """`classify` of several clips in one forward pass (the live server batches all its
    connections' windows): each clip is sampled to the model's length on its own, so the answer
    of each is the one it gets alone. `flip`: the layout's mirror map for test-time flip
    averaging (flip_index), None for none."""
    aspect = torch.tensor([size[0] / size[1] if size else 1.0 for size in sizes])
    seq_len = ckpt.seq_len
    x = torch.cat([model_input(c, seq_len) for c in clips])
    with torch.no_grad():
        probs = ckpt.model(x, aspect).softmax(-1) if flip is None else flip_averaged(ckpt.model, x, aspect, flip)[0]
    p, idx = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    return [
        [
            {
                "rank": r + 1,
                "class_id": int(i),
                "sign": ckpt.classes[i].sign,
                "en": ckpt.classes[i].en,
                "ar": ckpt.classes[i].ar,
                "probability": round(float(q), 6),
            }
            for r, (q, i) in enumerate(zip(row_p, row_i))
        ]
        for row_p, row_i in zip(p, idx)
    ]


def format_predictions(results: list[dict[str, Any]]) -> str:
    lines = []
    for res in results:
        made_by = f", keypoints by the {res['extractor']} extractor" if res.get("extractor") else ""
        lines.append(f"{res['clip']} ({res['frames']} frames{made_by}):")
        lines += [
            f"  {t['rank']}. {t['probability']:.4f}  {t['en']}  {t['ar']}  (sign {t['sign']})" for t in res["top"]
        ]
    return "\n".join(lines)


def _real_shaped_inputs(seq_len: int, layout) -> tuple[torch.Tensor, torch.Tensor]:
    """A few clips shaped like real ones (with undetected parts, left-handed signing and a short
    one) sampled as predict does, and video aspect ratios for them; random points with gaps
    for a layout the synthetic generator cannot draw."""
    from accel_signs.data.layout import BUILTIN, builtin_layout
    from accel_signs.data.synth import SynthSpec, _Generator

    rng = np.random.default_rng(11)
    if layout.name in BUILTIN and layout.same_as(builtin_layout(layout.name)):
        gen = _Generator(SynthSpec(classes=3, signers=3, reps=1, seed=11, layout=layout.name))
        clips = [gen.clip(c % 3, c % 3, rng, left_handed=c == 4) for c in range(5)] + [gen.clip(0, 0, rng)[:7]]
    else:
        clips = [
            np.where(rng.random((n, layout.num_points, 1)) < 0.2, 0, rng.random((n, layout.num_points, 4))).astype(
                np.float32
            )
            for n in (40, 60, 80, 100, 120, 7)
        ]
    aspect = torch.tensor([1.0, 16 / 9, 9 / 16, 1.0, 4 / 3, 1.0])
    return torch.cat([model_input(c, seq_len) for c in clips]), aspect  # (6, T, P*C), (6,)


def _torch_export(ckpt: Checkpoint, names: list[str], seq_len: int, features: int) -> Any:
    """torch.onnx.export with a dynamic batch axis, its chatter kept for --verbose."""
    with_aspect = len(names) == 2
    # It warns about torchvision ops it cannot register when torchvision is absent: irrelevant here.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    chatter = io.StringIO()  # the exporter prints its progress to stdout; keep it for --verbose
    with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecations inside torch.export, not ours to fix
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        example = (
            (torch.rand(2, seq_len, features), torch.ones(2)) if with_aspect else (torch.zeros(2, seq_len, features),)
        )
        program = torch.onnx.export(
            ckpt.model,
            example,
            input_names=names,
            output_names=["logits"],
            dynamic_shapes=({0: batch}, {0: batch}) if with_aspect else ({0: batch},),
            dynamo=True,
            verbose=False,
        )
    logger.debug("torch.onnx.export: %s", chatter.getvalue())
    return program


def _onnx_metadata(ckpt: Checkpoint, seq_len: int, features: int, with_aspect: bool) -> dict[str, str]:
    """What the .onnx file records about its model: layout, classes, input, metrics."""
    aspect = "; aspect (batch,): width / height of each clip's video (1 if square or unknown)" if with_aspect else ""
    return {
        "accel_signs.layout": ckpt.layout.id,
        "accel_signs.layout_definition": json.dumps(ckpt.layout.definition),
        "accel_signs.classes": json.dumps(ckpt.meta.classes_json(), ensure_ascii=False),
        "accel_signs.model": json.dumps(ckpt.meta.model.to_json()),
        "accel_signs.input": f"keypoints (batch, {seq_len}, {features}): {seq_len} frames sampled at bin centres, "
        f"each {ckpt.layout.num_points} points of layout {ckpt.layout.name} x (x, y, z, "
        "visibility) flattened; undetected points are 0" + aspect,
        "accel_signs.metrics": json.dumps(dict(ckpt.meta.metrics)),
    }


def _onnx_diffs(ckpt: Checkpoint, path: Path, names: list[str], seq_len: int, features: int) -> dict[str, float]:
    """Largest |logit| difference between ONNX Runtime and PyTorch, per batch of test inputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)  # not the caller's global RNG
    checks = {
        "random batch 1": (torch.randn(1, seq_len, features, generator=g), torch.ones(1)),
        "random batch 7": (torch.randn(7, seq_len, features, generator=g), 0.5 + torch.rand(7, generator=g)),
        "real-shaped batch 6": _real_shaped_inputs(seq_len, ckpt.layout),
    }
    diffs = {}
    for name, (x, aspect) in checks.items():
        inputs = (x, aspect) if len(names) == 2 else (x,)
        with torch.no_grad():
            expected = ckpt.model(*inputs).numpy()
        got = session.run(["logits"], {n: v.numpy() for n, v in zip(names, inputs)})[0]
        diffs[name] = float(np.abs(got - expected).max())
    return diffs


def export_onnx(
    checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], tolerance: float = 1e-4
) -> dict[str, Any]:
    """Export to ONNX: input `keypoints` (batch, seq_len, points x 4) with a dynamic batch axis, output
    `logits` (batch, classes); classes, glosses and layout in the metadata. Verified with ONNX
    Runtime against PyTorch before it is moved into place (ExportError if they differ)."""
    try:
        import onnx
        import onnxruntime  # noqa: F401 - the check needs it
        import onnxscript  # noqa: F401 - torch's exporter needs it
    except ImportError:
        raise ConfigError(ONNX_HINT) from None
    ckpt: Checkpoint = load_checkpoint(checkpoint)
    out = Path(out)
    seq_len, features = ckpt.seq_len, ckpt.model.points * ckpt.model.channels
    # Models with the normalized input take each clip's video aspect ratio as a second input.
    names = ["keypoints", "aspect"] if ckpt.model.uses_aspect else ["keypoints"]
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _torch_export(ckpt, names, seq_len, features).save(str(tmp))
        proto = onnx.load(str(tmp))
        for key, value in _onnx_metadata(ckpt, seq_len, features, len(names) == 2).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
        diffs = _onnx_diffs(ckpt, tmp, names, seq_len, features)
        worst = max(diffs.values())
        if not worst <= tolerance:
            raise ExportError(
                f"the ONNX export of {ckpt.path} differs from PyTorch by {worst:.2e} (> {tolerance:g}); not written"
            )
        os.replace(tmp, out)
    except OSError as e:
        raise ConfigError(f"cannot write {out}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "onnx": str(out),
        "max_abs_logit_diff": diffs,
        "classes": len(ckpt.classes),
        "opset": proto.opset_import[0].version,
    }
