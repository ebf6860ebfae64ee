"""Using a trained checkpoint outside the trainer: classify clips, export to ONNX."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import Checkpoint, load_checkpoint
from .data.prepare import check_clip
from .data.sampling import gather_frames, tsn_positions
from .errors import ConfigError, DatasetError
from .layout import LAYOUT_ID

logger = logging.getLogger(__name__)
ONNX_HINT = "ONNX export needs the onnx extra: pip install 'accel-signs[onnx]' (onnx, onnxruntime, onnxscript)"


def load_clips(path: str | os.PathLike[str]) -> list[tuple[str, np.ndarray]]:
    """(name, frames) for an .npy clip (frames, 184, 4) or each array of an .npz; no pickles."""
    path = Path(path)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                clips = [(key, npz[key]) for key in npz.files]
        else:
            clips = [(path.stem, np.load(path, allow_pickle=False))]
    except FileNotFoundError:
        raise DatasetError(f"clip file {path} does not exist") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise DatasetError(f"{path}: not a readable numeric .npy/.npz file ({e})") from None
    if not clips:
        raise DatasetError(f"{path}: holds no arrays")
    return [(name, check_clip(np.asarray(clip), f"{path} [{name}]" if path.suffix == ".npz" else str(path)))
            for name, clip in clips]


def model_input(clip: np.ndarray, seq_len: int) -> torch.Tensor:
    """One clip (frames, 184, 4) -> the model's input (1, seq_len, 736), sampled at the bin
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


def predict(checkpoint: str | os.PathLike[str], clip_path: str | os.PathLike[str], top_k: int = 5,
            frame_size: tuple[float, float] | None = None) -> list[dict[str, Any]]:
    """Top-k classes of every clip in `clip_path`, best first. `frame_size` is the (width,
    height) of the video the keypoints come from: MediaPipe divides x by the width and y by the
    height, and the model undoes that stretch (None: square)."""
    if top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {top_k}")
    ckpt = load_checkpoint(checkpoint)
    aspect = torch.tensor([frame_size[0] / frame_size[1] if frame_size else 1.0])
    results = []
    for name, clip in load_clips(clip_path):
        with torch.no_grad():
            probs = ckpt.model(model_input(clip, ckpt.meta["model"]["seq_len"]), aspect).softmax(-1)[0]  # (classes,)
        p, idx = probs.topk(min(top_k, len(probs)))
        results.append({"clip": name, "frames": len(clip), "top": [
            {"rank": r + 1, "class_id": int(i), "sign": ckpt.classes[i]["sign"], "en": ckpt.classes[i]["en"],
             "ar": ckpt.classes[i]["ar"], "probability": round(float(q), 6)} for r, (q, i) in enumerate(zip(p, idx))]})
    return results


def format_predictions(results: list[dict[str, Any]]) -> str:
    lines = []
    for res in results:
        lines.append(f"{res['clip']} ({res['frames']} frames):")
        lines += [f"  {t['rank']}. {t['probability']:.4f}  {t['en']}  {t['ar']}  (sign {t['sign']})" for t in res["top"]]
    return "\n".join(lines)


def _real_shaped_inputs(seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A few KArSL-shaped clips (with undetected parts, left-handed signing and a short one)
    sampled as predict does, and video aspect ratios for them."""
    from .data.synth import SynthSpec, _Generator

    gen, rng = _Generator(SynthSpec(classes=3, signers=3, reps=1, seed=11)), np.random.default_rng(11)
    clips = [gen.clip(c % 3, c % 3, rng, left_handed=c == 4) for c in range(5)] + [gen.clip(0, 0, rng)[:7]]
    aspect = torch.tensor([1.0, 16 / 9, 9 / 16, 1.0, 4 / 3, 1.0])
    return torch.cat([model_input(c, seq_len) for c in clips]), aspect  # (6, T, P*C), (6,)


def export_onnx(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], tolerance: float = 1e-4) -> dict[str, Any]:
    """Export to ONNX: input `keypoints` (batch, seq_len, 736) with a dynamic batch axis, output
    `logits` (batch, classes); classes, glosses and layout in the metadata. Verified with ONNX
    Runtime against PyTorch before it is moved into place."""
    try:
        import onnx
        import onnxruntime as ort
        import onnxscript  # noqa: F401 - torch's exporter needs it
    except ImportError:
        raise ConfigError(ONNX_HINT) from None
    ckpt: Checkpoint = load_checkpoint(checkpoint)
    out = Path(out)
    seq_len, features = ckpt.meta["model"]["seq_len"], ckpt.model.points * ckpt.model.channels
    # Models with the normalized input take each clip's video aspect ratio as a second input.
    with_aspect = ckpt.model.uses_aspect
    names = ["keypoints", "aspect"] if with_aspect else ["keypoints"]
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        # It warns about torchvision ops it cannot register when torchvision is absent: irrelevant here.
        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
        chatter = io.StringIO()  # the exporter prints its progress to stdout; keep it for --verbose
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecations inside torch.export, not ours to fix
            batch = torch.export.Dim("batch", min=1, max=1 << 16)
            example = (torch.rand(2, seq_len, features), torch.ones(2)) if with_aspect else (torch.zeros(2, seq_len, features),)
            program = torch.onnx.export(
                ckpt.model, example, input_names=names, output_names=["logits"],
                dynamic_shapes=({0: batch}, {0: batch}) if with_aspect else ({0: batch},), dynamo=True, verbose=False)
        logger.debug("torch.onnx.export: %s", chatter.getvalue())
        program.save(str(tmp))
        proto = onnx.load(str(tmp))
        meta = {
            "accel_signs.layout": LAYOUT_ID,
            "accel_signs.classes": json.dumps(ckpt.classes, ensure_ascii=False),
            "accel_signs.model": json.dumps(ckpt.meta["model"]),
            "accel_signs.input": f"keypoints (batch, {seq_len}, {features}): {seq_len} frames sampled at bin centres, "
                                 "each 184 points x (x, y, z, visibility) flattened; undetected points are 0"
                                 + ("; aspect (batch,): width / height of each clip's video (1 if square or unknown)"
                                    if with_aspect else ""),
            "accel_signs.metrics": json.dumps(ckpt.meta.get("metrics", {})),
        }
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        g = torch.Generator().manual_seed(0)  # not the caller's global RNG
        checks = {"random batch 1": (torch.randn(1, seq_len, features, generator=g), torch.ones(1)),
                  "random batch 7": (torch.randn(7, seq_len, features, generator=g), 0.5 + torch.rand(7, generator=g)),
                  "real-shaped batch 6": _real_shaped_inputs(seq_len)}
        diffs = {}
        for name, (x, aspect) in checks.items():
            inputs = (x, aspect) if with_aspect else (x,)
            with torch.no_grad():
                expected = ckpt.model(*inputs).numpy()
            got = session.run(["logits"], {n: v.numpy() for n, v in zip(names, inputs)})[0]
            diffs[name] = float(np.abs(got - expected).max())
        worst = max(diffs.values())
        if not worst <= tolerance:
            raise ConfigError(f"the ONNX export of {ckpt.path} differs from PyTorch by {worst:.2e} (> {tolerance:g}); "
                              "not written")
        os.replace(tmp, out)
    except OSError as e:
        raise ConfigError(f"cannot write {out}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return {"onnx": str(out), "max_abs_logit_diff": diffs, "classes": len(ckpt.classes), "opset": proto.opset_import[0].version}
