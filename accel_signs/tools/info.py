"""Human-readable summaries of a clip store or a checkpoint (`accel-signs info`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from accel_signs.config import InputConfig
from accel_signs.core.errors import CheckpointError
from accel_signs.data.layout import KeypointLayout
from accel_signs.data.pipeline import format_ranges
from accel_signs.data.store import ClipStore, StoreSplit, open_store
from accel_signs.model.checkpoint import CheckpointMeta, checkpoint_folder, init_source, read_checkpoint_meta

# Detection rates are estimated from at most this many frames per split (evenly spaced), so
# `info` on a 20 GB store takes seconds, not minutes.
_SAMPLE_FRAMES = 100_000


def describe(path: Path) -> str:
    """A store (has meta.json) or a checkpoint (has config.json + model.safetensors; or hf://USER/NAME)."""
    if str(path).startswith("hf:/"):
        return describe_checkpoint(path)
    path = Path(path)
    if (path / "model.safetensors").exists() or ((path / "config.json").exists() and not (path / "meta.json").exists()):
        return describe_checkpoint(path)
    return describe_store(open_store(path))


def _detection_rates(split: StoreSplit, layout: KeypointLayout) -> tuple[dict[str, float], int]:
    step = max(1, split.num_frames // _SAMPLE_FRAMES)
    present = {p: 0 for p in layout.parts}
    seen = 0
    for start in range(0, split.num_frames, 8192 * step):
        chunk = split.read_frames(start, 8192 * step)[::step]
        for part, points in layout.parts.items():
            present[part] += int((chunk[:, list(points)] != 0).any(axis=(1, 2)).sum())
        seen += len(chunk)
    return {p: present[p] / max(seen, 1) for p in layout.parts}, seen


def describe_store(store: ClipStore) -> str:
    lines = [
        f"clip store {store.path}",
        f"  classes: {len(store.classes)} (signs {format_ranges([c.sign for c in store.classes])}), "
        f"signers: {', '.join(store.signers)}, dtype {store.dtype}",
        f"  keypoint layout: {store.layout.name} ({store.layout.id}, {store.layout.num_points} points; parts "
        f"{', '.join(store.layout.part_names)})",
    ]
    if store.meta.get("source"):
        lines.append(f"  source: {store.meta['source']}")
    lines.append(f"  extractor: {_extractor_text(store)}")
    source = store.meta.get("source")
    visibility = source.get("visibility") if isinstance(source, dict) else None
    derived = visibility.get("derived_from_detection") if isinstance(visibility, dict) else None
    if derived:
        lines.append(f"  visibility: derived from detection (3-channel x, y, z source files) for {derived} clips")
    checks = _clip_checks(store.meta.get("clip_checks")) or _scan_clip_checks(store)
    for name, split in store.splits.items():
        lengths = split.lengths
        per_class = np.bincount(split.labels, minlength=len(store.classes))
        per_signer = np.bincount(split.signers, minlength=len(store.signers))
        rates, sampled = _detection_rates(split, store.layout)
        q = np.percentile(lengths, [0, 5, 50, 95, 100])
        lines += [
            f"  split {name}: {len(split)} clips, {split.num_frames} frames",
            f"    clips per class: min {per_class.min()}, median {int(np.median(per_class))}, max {per_class.max()}"
            + (
                f"; classes without clips: {format_ranges([store.classes[i].sign for i in np.flatnonzero(per_class == 0)])}"
                if (per_class == 0).any()
                else ""
            ),
            "    clips per signer: " + ", ".join(f"{s} {n}" for s, n in zip(store.signers, per_signer)),
            f"    clip length (frames): min {q[0]:.0f}, 5% {q[1]:.0f}, median {q[2]:.0f}, 95% {q[3]:.0f}, max {q[4]:.0f}"
            f"; {int((lengths < 50).sum())} clips shorter than 50 frames",
            "    detected in frames: "
            + ", ".join(f"{p} {r:.1%}" for p, r in rates.items())
            + (f" (from {sampled} sampled frames)" if sampled < split.num_frames else ""),
            f"    video frame sizes: {_frame_sizes(split)}",
            f"    clips with no detection in any frame: {_empty_clips(checks, name)}",
        ]
    lines.append(f"  duplicate clips (identical frames): {_duplicates(checks)}")
    return "\n".join(lines)


# What a clip of unknown frame size means, and how to give the size.
_UNKNOWN_SIZE = (
    "taken as square: the x/y of a 16:9 video come out stretched; give the size with `prepare --frame-size WxH`"
)


def _extractor_text(store: ClipStore) -> str:
    if store.extractor is None:
        return "unknown (the store does not record which extractor made its keypoints)"
    return store.extractor.describe()


def _frame_sizes(split) -> str:
    """'1280x720 (40 clips), 720x1280 (20 clips)'; clips of unknown size are taken as square."""
    if split.frame_sizes is None:
        return f"unknown for all {len(split)} clips ({_UNKNOWN_SIZE})"
    sizes, counts = np.unique(split.frame_sizes, axis=0, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    parts = [
        f"{int(w)}x{int(h)} ({n} clips)" if w > 0 and h > 0 else f"unknown ({n} clips, {_UNKNOWN_SIZE})"
        for (w, h), n in zip(sizes[order], counts[order])
    ]
    return ", ".join(parts[:6]) + (f", and {len(parts) - 6} more" if len(parts) > 6 else "")


def _clip_checks(record: object) -> dict | None:
    """meta.json's clip_checks when well-formed (open_store does not need it), else None."""
    try:
        empty = {str(k): [int(i) for i in v] for k, v in record["empty"].items()}  # type: ignore[index]
        duplicates = [[(str(s), int(i)) for s, i in g] for g in record["duplicates"]]  # type: ignore[index]
    except (TypeError, KeyError, ValueError, AttributeError):
        return None
    return {"empty": empty, "duplicates": duplicates}


def _scan_clip_checks(store: ClipStore) -> dict | None:
    """For a store written without clip_checks: the same, computed, when the store is small
    enough to read whole as quickly as the detection rates read their sample."""
    if sum(split.num_frames for split in store.splits.values()) > _SAMPLE_FRAMES:
        return None
    empty: dict[str, list[int]] = {}
    digests: dict[bytes, list[tuple[str, int]]] = {}
    for name, split in store.splits.items():
        for i in range(len(split)):
            clip = np.ascontiguousarray(split.clip(i))
            if not clip.any():
                empty.setdefault(name, []).append(i)
            digests.setdefault(hashlib.sha256(clip.tobytes()).digest()[:16], []).append((name, i))
    return {"empty": empty, "duplicates": [g for g in digests.values() if len(g) > 1]}


def _empty_clips(checks: dict | None, split: str) -> str:
    """From the store's clip_checks (written with the store): '2 (clips 4, 17)'."""
    if checks is None:
        return "not recorded (a large store written before accel_signs checked it)"
    ids = checks.get("empty", {}).get(split, [])
    if not ids:
        return "none"
    shown = ", ".join(map(str, ids[:10])) + (f", and {len(ids) - 10} more" if len(ids) > 10 else "")
    return f"{len(ids)} (clips {shown})"


def _duplicates(checks: dict | None) -> str:
    """From the store's clip_checks: 'none', or the groups, those across splits first."""
    if checks is None:
        return "not recorded (a large store written before accel_signs checked it)"
    groups = checks.get("duplicates", [])
    if not groups:
        return "none"
    across = [g for g in groups if len({s for s, _ in g}) > 1]
    listed = sorted(groups, key=lambda g: g not in across)[:5]
    text = "; ".join(" = ".join(f"{s} clip {i}" for s, i in g) for g in listed)
    more = f"; and {len(groups) - 5} more" if len(groups) > 5 else ""
    return f"{len(groups)} group(s), {len(across)} across splits: {text}{more}"


def _describe_input(cfg: InputConfig) -> str:
    if cfg.kind == "raw":
        return "raw image coordinates"
    names = ("body_frame", "hand_shape", "motion", "presence", "handedness")
    on = [name.replace("_", " ") for name in names if getattr(cfg, name)]
    off = [name.replace("_", " ") for name in names if not getattr(cfg, name)]
    return "normalized: " + ", ".join(on) + (f" (off: {', '.join(off)})" if off else "")


def describe_checkpoint(spec: Path | str) -> str:
    path = checkpoint_folder(spec).path
    meta = read_checkpoint_meta(path)
    try:
        return _checkpoint_lines(spec, path, meta)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        # read_checkpoint_meta checks what loading the model needs; the rest is only shown here.
        raise CheckpointError(f"{path / 'config.json'}: a malformed record ({type(e).__name__}: {e})") from None


def _checkpoint_lines(spec: Path | str, path: Path, meta: CheckpointMeta) -> str:
    model, data, metrics = meta.model, meta.data, meta.metrics
    signs = [c.sign for c in meta.classes]
    size = (Path(path) / "model.safetensors").stat().st_size if (Path(path) / "model.safetensors").exists() else 0
    lines = [
        f"checkpoint {spec}" + (f" ({path})" if str(spec) != str(path) else ""),
        f"  model: {model.family} {model.size}, {model.num_classes} classes (signs {format_ranges(signs)}), "
        f"seq_len {model.seq_len}, dropout {model.config.dropout}, {size / 2**20:.1f} MiB",
        f"  input: {_describe_input(model.input)}",
        f"  keypoint layout: {meta.layout.name} ({meta.layout.id})",
        f"  epoch {meta.epoch}: "
        + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items() if k != "epoch"),
        f"  data: {data.store} (split {data.split}, signers {', '.join(data.signers)}"
        + (f", val signers {', '.join(data.val_signers)}" if data.val_signers else "")
        + (f", test signers {', '.join(data.test_signers)}" if data.test_signers else "")
        + ")",
    ]
    runtime = meta.runtime
    if runtime:
        lines.append("  trained with: " + ", ".join(f"{k} {v}" for k, v in runtime.items() if k != "init_from"))
    if meta.init_from:
        lines.append(f"  fine-tuned from: {init_source(meta.init_from)}")
    if meta.recipe is not None:
        lines += ["  recipe:", *(f"    {line}" for line in meta.recipe.lines(meta.ema_weights))]
        return "\n".join(lines)
    lines.append("  recipe: not recorded (a checkpoint from before accel_signs recorded the recipe)")
    cfg = meta.train_config
    if cfg:  # what the old record has to say, as it wrote it
        optim = cfg["optim"]
        lines.append(
            f"  config: {optim.get('optimizer', 'adam')} lr {optim['lr']}, {optim.get('schedule', 'plateau')} "
            f"schedule, batch {cfg['batch_size']}, epochs {cfg['num_epochs']}, seed {cfg['seed']}, "
            f"mixed precision {cfg['mixed_precision']}, best by {cfg.get('best_metric', 'val_loss')}"
        )
    return "\n".join(lines)


def store_summary(store: ClipStore) -> dict:
    """What describe_store prints, as data (the dashboard's Data page), with the detection
    rates per signer besides per part."""
    splits = {}
    for name, split in store.splits.items():
        rates, sampled = _detection_rates(split, store.layout)
        q = np.percentile(split.lengths, [0, 5, 50, 95, 100]) if len(split) else np.zeros(5)
        splits[name] = {
            "clips": len(split),
            "frames": split.num_frames,
            "clips_per_class": np.bincount(split.labels, minlength=len(store.classes)).tolist(),
            "clips_per_signer": dict(
                zip(store.signers, np.bincount(split.signer_index, minlength=len(store.signers)).tolist())
            ),
            "length_percentiles": dict(zip(("min", "5%", "median", "95%", "max"), q.tolist())),
            "detected": rates,
            "detected_by_signer": _detection_by_signer(split, store),
            "sampled_frames": sampled,
            "frame_sizes": _frame_sizes(split),
        }
    checks = _clip_checks(store.meta.get("clip_checks")) or _scan_clip_checks(store)
    return {
        "path": str(store.path),
        "classes": [{"sign": c.sign, "en": c.en, "ar": c.ar} for c in store.classes],
        "signers": list(store.signers),
        "dtype": store.dtype,
        "layout": {"name": store.layout.name, "id": store.layout.id, "points": store.layout.num_points},
        "parts": list(store.layout.part_names),
        "source": store.meta.get("source"),
        "splits": splits,
        "empty_clips": {name: _empty_clips(checks, name) for name in store.splits},
        "duplicates": _duplicates(checks),
    }


def _detection_by_signer(split: StoreSplit, store: ClipStore) -> dict[str, dict[str, float]]:
    """Per signer and part, the share of frames where the part was detected (at most
    _SAMPLE_FRAMES frames read per split, evenly spaced clips)."""
    layout, out = store.layout, {}
    for s, signer in enumerate(store.signers):
        ids = np.flatnonzero(split.signer_index == s)
        if not len(ids):
            continue
        budget = max(1, _SAMPLE_FRAMES // max(len(store.signers), 1))
        step = max(1, int(split.lengths[ids].sum()) // budget)
        present = {p: 0 for p in layout.parts}
        seen = 0
        for i in ids[:: max(1, step)]:
            clip = split.clip(int(i))
            for part, points in layout.parts.items():
                present[part] += int((clip[:, list(points)] != 0).any(axis=(1, 2)).sum())
            seen += len(clip)
        out[signer] = {p: present[p] / max(seen, 1) for p in layout.parts}
    return out
