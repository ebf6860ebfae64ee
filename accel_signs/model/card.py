"""The model card: a checkpoint's README.md in the Hugging Face Hub's format (YAML metadata with
`model-index` results, then a Markdown body).

It is generated from the checkpoint's own files only: config.json (as CheckpointMeta), the recipe
included, and eval-test/metrics.json
(the latest test-split evaluation, copied into the checkpoint with its plots), so it never
disagrees with them. `train` writes it at the end, `evaluate` rewrites it when it evaluates a
checkpoint folder on the test split.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from accel_signs.core.files import write_text
from accel_signs.model.checkpoint import CONFIG_FILE, CheckpointMeta, init_source, read_checkpoint_meta

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
EVAL_DIR = "eval-test"  # inside the checkpoint: metrics.json and the plots of its test evaluation
EVAL_PLOTS = ("confusion.png", "per_class_f1.png", "top_confusions.png")
CURVES = "training_curves.png"
TAGS = ["accel-signs", "sign-language-recognition", "sign-language", "keypoints", "mediapipe", "pytorch"]


def model_card(checkpoint: Path, repo_id: str | None = None) -> str:
    """README.md text of the checkpoint folder; `repo_id` names it in the usage examples."""
    checkpoint = Path(checkpoint)
    meta = read_checkpoint_meta(checkpoint)
    metrics_path = checkpoint / EVAL_DIR / "metrics.json"
    test = json.loads(metrics_path.read_text("utf-8")) if metrics_path.exists() else None
    spec = f"hf://{repo_id}" if repo_id else str(checkpoint)
    body = [
        *_intro(meta, test),
        *_results(meta, test, checkpoint),
        *_usage(meta, spec),
        *_training(meta),
        *_inputs(meta),
        *_limitations(meta, test),
        *_classes(meta),
    ]
    front = yaml.safe_dump(card_metadata(meta, test), sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n" + "\n".join(body).rstrip() + "\n"


def protocol(meta: CheckpointMeta, test: dict[str, Any] | None) -> str:
    """signer-independent when no test signer was trained on."""
    trained = set(meta.data.signers)
    tested = set((test or {}).get("signers") or meta.data.test_signers)
    if tested and not tested & trained:
        return "signer-independent"
    return "signers seen in training"


def card_metadata(meta: CheckpointMeta, test: dict[str, Any] | None) -> dict[str, Any]:
    """The YAML front matter: library, tags and, with a test evaluation, model-index results."""
    out: dict[str, Any] = {
        "library_name": "accel-signs",
        "tags": TAGS + [f"layout-{meta.layout.name}"],
        "metrics": ["accuracy", "f1"],
    }
    if test is None:
        return out
    dataset = Path(str(meta.data.store or test.get("store") or "store")).name
    k = test.get("top5_k", 5)
    out["model-index"] = [
        {
            "name": _name(meta),
            "results": [
                {
                    "task": {"type": "sign-language-recognition", "name": "Sign language recognition"},
                    "dataset": {
                        "name": dataset,
                        "type": dataset,
                        "split": test["split"],
                        "config": protocol(meta, test),
                        "args": {"signers": list(test["signers"]), "num_classes": test["num_classes"]},
                    },
                    "metrics": [
                        {"type": "accuracy", "value": test["top1"], "name": "Top-1 accuracy"},
                        {
                            "type": "top_k_accuracy",
                            "value": test["top5"],
                            "name": f"Top-{k} accuracy",
                            "args": {"k": k},
                        },
                        {"type": "f1", "value": test["macro_f1"], "name": "Macro F1", "args": {"average": "macro"}},
                    ],
                }
            ],
        }
    ]
    return out


def _name(meta: CheckpointMeta) -> str:
    m = meta.model
    return f"accel-signs {m.family} {m.size}, {m.num_classes} signs, {meta.layout.name}"


def _intro(meta: CheckpointMeta, test: dict[str, Any] | None) -> list[str]:
    m, data = meta.model, meta.data
    lines = [
        f"# {_name(meta)}",
        "",
        f"A sign-language recognition model trained with accel_signs {meta.accel_signs_version}: "
        f"an {m.family} (size {m.size}) that classifies a clip of MediaPipe keypoints "
        f"({meta.layout.name} layout, {m.seq_len} sampled frames) into one of {m.num_classes} signs.",
        "",
        f"- Trained on: `{Path(str(data.store or '?')).name}`, signers {', '.join(data.signers) or '?'}"
        + (f"; validated on signers {', '.join(data.val_signers)}" if data.val_signers else ""),
        f"- Best epoch: {meta.epoch} ({_fmt_metrics(meta.metrics)})"
        + ("; the weights are the training's moving average (EMA)" if meta.ema_weights else ""),
        f"- Protocol: {protocol(meta, test)}",
    ]
    if meta.init_from:
        lines.append(f"- Fine-tuned from: {init_source(meta.init_from)}")
    return [*lines, ""]


def _fmt_metrics(metrics: Mapping[str, Any]) -> str:
    keys = ("val_acc", "val_loss", "train_loss")
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in keys if isinstance(metrics.get(k), (int, float)))


def _results(meta: CheckpointMeta, test: dict[str, Any] | None, checkpoint: Path) -> list[str]:
    if test is None:
        return ["## Results", "", "Not evaluated on a test split yet (`accel-signs evaluate` fills this in).", ""]
    k = test.get("top5_k", 5)
    lines = [
        "## Results",
        "",
        f"On the `{test['split']}` split ({test['num_samples']} clips, signers {', '.join(test['signers'])}; "
        f"{protocol(meta, test)}):",
        "",
        "| metric | value |",
        "|---|---|",
        f"| top-1 accuracy | {test['top1']:.4f} |",
        f"| top-{k} accuracy | {test['top5']:.4f} |",
        f"| macro F1 | {test['macro_f1']:.4f} |",
        f"| mean loss | {test['mean_loss']:.4f} |",
        "",
        "Per signer:",
        "",
        "| signer | clips | top-1 accuracy |",
        "|---|---|---|",
        *[f"| {s} | {v['num_samples']} | {v['accuracy']:.4f} |" for s, v in test.get("per_signer", {}).items()],
        "",
    ]
    for name, title in (
        (CURVES, "Training curves"),
        *((f"{EVAL_DIR}/{p}", p[:-4].replace("_", " ")) for p in EVAL_PLOTS),
    ):
        if (checkpoint / name).exists():
            lines += [f"![{title}]({name})", ""]
    return lines


def _usage(meta: CheckpointMeta, spec: str) -> list[str]:
    lines = [
        "## How to use",
        "",
        "Install `pip install 'accel-signs[hub]'` (and the `extract` extra to read videos), then:",
        "",
        "```bash",
        f"accel-signs predict {spec} clip.npy            # keypoints (frames, {meta.layout.num_points}, 4), or a video",
        f"accel-signs evaluate {spec} --data STORE       # a clip store with these signs",
        f"accel-signs export {spec} --onnx model.onnx",
        f"accel-signs train --data MY_STORE --init-from {spec} --model-size {meta.model.size}  # fine-tune on your signs",
        f"accel-signs serve {spec}                        # live, in the browser (the serve extra)",
        "```",
        "",
        "```python",
        "from accel_signs import load_checkpoint",
        f'ckpt = load_checkpoint("{spec}")  # ckpt.model (torch, eval mode), ckpt.classes',
        "```",
        "",
    ]
    return lines


def _training(meta: CheckpointMeta) -> list[str]:
    data, cfg = meta.data, meta.train_config
    lines = [
        "## Training",
        "",
        f"- Data: store `{data.store}`, split `{data.split}`, signs {_ranges(list(data.signs))}, "
        f"{data.profile.get('train_clips', '?')} training clips, seed {data.seed}",
    ]
    if meta.recipe is None:
        lines.append(
            "- Recipe: not recorded (a checkpoint from before accel_signs recorded the recipe; "
            f"its training configuration is in [{CONFIG_FILE}]({CONFIG_FILE}))"
        )
    else:
        lines += ["- Recipe:", *(f"  - {line}" for line in meta.recipe.lines(meta.ema_weights))]
    if cfg.get("init_from"):
        lines.append(f"- Fine-tuning: --init-from {cfg['init_from']}, --freeze-epochs {cfg.get('freeze_epochs', 0)}")
    return [*lines, "", f"The full configuration is in [{CONFIG_FILE}]({CONFIG_FILE}).", ""]


def _ranges(signs: list[int]) -> str:
    from accel_signs.data.pipeline import format_ranges

    return format_ranges(signs) if signs else "?"


def _inputs(meta: CheckpointMeta) -> list[str]:
    m, layout = meta.model, meta.layout
    inp = dataclasses.asdict(m.input)
    return [
        "## Input",
        "",
        f"- Keypoint layout `{layout.name}` (id `{layout.id}`): {layout.num_points} points "
        f"per frame, x/y/z/visibility as MediaPipe writes them (x, y in 0..1 of the frame; 0 where undetected); "
        f"parts (one token each): {', '.join(layout.part_names)}",
        f"- Keypoints made by: {_extractor(meta)}",
        f"- {m.seq_len} frames are sampled from each clip (TSN: evenly spread segments)",
        "- Features computed inside the model: " + ", ".join(f"{k} {v}" for k, v in inp.items()),
        f"- Features per part: {list(m.part_sizes)}",
        "",
    ]


def _extractor(meta: CheckpointMeta) -> str:
    """The extractor line: what made the training keypoints, which `predict` and `serve` use by default."""
    record = meta.extractor
    if record is None:
        return "not recorded (a store made before extractors were recorded, or from files that do not say)"
    return (
        f"{record.describe()} (`--extractor {record.recipe}`; `predict` and `serve` use it by default and "
        "warn when keypoints come from another)"
    )


def _limitations(meta: CheckpointMeta, test: dict[str, Any] | None) -> list[str]:
    profile = meta.data.profile
    detection = profile.get("detection") or {}
    sizes = profile.get("frame_sizes") or {}
    lines = [
        "## Limitations",
        "",
        f"- Signers seen in training: {', '.join(meta.data.signers) or '?'}. "
        + (
            "The test figures above are on signers the model never saw."
            if protocol(meta, test) == "signer-independent"
            else "The test figures above include signers seen in training: expect lower accuracy on new signers."
        ),
        f"- It knows only these {meta.model.num_classes} signs: any other sign is classified as one of them.",
    ]
    if detection:
        lines.append(
            f"- Detection rates in the training clips (share of frames with the part found, on "
            f"{profile.get('detection_clips')} clips): "
            + ", ".join(f"{p} {v:.0%}" for p, v in detection.items())
            + ". Clips whose detector misses parts more often than this are out of what it learnt."
        )
    if sizes:
        lines.append(
            "- Video frame sizes in training: "
            + ", ".join(f"{s} ({n} clips)" for s, n in list(sizes.items())[:5])
            + ". Give `--frame-size` to `predict` when your keypoints come from another aspect ratio."
        )
    return [*lines, ""]


def _classes(meta: CheckpointMeta) -> list[str]:
    lines = ["## Classes", "", "| id | sign | gloss | gloss (ar) |", "|---|---|---|---|"]
    lines += [f"| {i} | {c.sign} | {c.en} | {c.ar} |" for i, c in enumerate(meta.classes)]
    return [*lines, ""]


def write_card(checkpoint: Path, eval_dir: Path | None = None) -> Path:
    """Copy a test evaluation (`eval_dir`: its metrics.json and plots) and the run's training
    curves into the checkpoint, then (re)write its README.md; every file is written atomically."""
    checkpoint = Path(checkpoint)
    if eval_dir is not None and Path(eval_dir).resolve() != (checkpoint / EVAL_DIR).resolve():
        _copy(Path(eval_dir), checkpoint / EVAL_DIR, ["metrics.json", *EVAL_PLOTS])
    if (checkpoint.parent / "metrics.jsonl").exists():  # in a run folder: its training curves
        _copy(checkpoint.parent, checkpoint, [CURVES])
    path = checkpoint / CARD_FILE
    write_text(path, model_card(checkpoint))
    logger.info("model card: %s", path)
    return path


def _copy(src: Path, dst: Path, names: list[str]) -> None:
    dst.mkdir(exist_ok=True)
    for name in names:
        if (src / name).exists():
            tmp = dst / f".{name}.tmp"
            shutil.copyfile(src / name, tmp)
            tmp.replace(dst / name)
        else:  # not drawn this time: an older copy would not belong to these metrics
            (dst / name).unlink(missing_ok=True)
