"""The `accel-signs` command line. Commands are thin: they build a config, call the library,
and turn the library's errors into one-line messages and exit codes."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .errors import AccelSignsError, ConfigError

app = typer.Typer(
    name="accel-signs",
    help="Train sign-language recognition models on MediaPipe keypoint sequences with Hugging Face Accelerate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)
logger = logging.getLogger("accel_signs")


@app.callback()
def _setup(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # Accelerate and the ONNX exporter log every step of their work at INFO: keep that for --verbose.
    for noisy in ("accelerate", "onnx_ir", "onnxscript"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("torch.onnx").setLevel(logging.DEBUG if verbose else logging.ERROR)


def _fail(error: Exception) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(code=1)


# CLI option -> place in the nested TrainConfig dict.
_TRAIN_FIELDS = {
    "data": ("data", "path"),
    "signs": ("data", "signs"),
    "signers": ("data", "signers"),
    "val_fraction": ("data", "val_fraction"),
    "num_workers": ("data", "num_workers"),
    "data_on_device": ("data", "data_on_device"),
    "model_size": ("model", "size"),
    "dropout": ("model", "dropout"),
    "drop_path": ("model", "drop_path"),
    "input": ("model", "input", "kind"),
    "handedness": ("model", "input", "handedness"),
    "optimizer": ("optim", "optimizer"),
    "schedule": ("optim", "schedule"),
    "warmup_epochs": ("optim", "warmup_epochs"),
    "label_smoothing": ("optim", "label_smoothing"),
    "best_metric": ("best_metric",),
    "lr": ("optim", "lr"),
    "weight_decay": ("optim", "weight_decay"),
    "lr_scaling": ("optim", "lr_scaling"),
    "max_grad_norm": ("optim", "max_grad_norm"),
    "output_dir": ("output_dir",),
    "run_name": ("run_name",),
    "num_epochs": ("num_epochs",),
    "batch_size": ("batch_size",),
    "seed": ("seed",),
    "mixed_precision": ("mixed_precision",),
    "evaluate": ("evaluate",),
    "log_with": ("log_with",),
    "cache_dir": ("data", "cache_dir"),
    "debug": ("debug",),
    "limit_batches": ("limit_batches",),
    "compile": ("compile",),
    "compile_mode": ("compile_mode",),
    "val_signers": ("data", "val_signers"),
    "test_signers": ("data", "test_signers"),
}
# What --debug changes unless the option is given too.
_DEBUG_DEFAULTS = {"num_epochs": 2, "limit_batches": 5}


def _build_train_config(ctx: typer.Context, values: dict[str, Any], config_file: Path | None):
    """Defaults < --config file < options given on the command line."""
    from .config import TrainConfig, load_config_file

    raw: dict[str, Any] = load_config_file(config_file) if config_file else {}
    for name, where in _TRAIN_FIELDS.items():
        if not config_file or _given(ctx, name):
            node = raw
            for key in where[:-1]:
                node = node.setdefault(key, {})
            value = values[name]
            node[where[-1]] = str(value) if isinstance(value, Path) else value
    if values["debug"]:
        file_values = load_config_file(config_file) if config_file else {}
        for name, value in _DEBUG_DEFAULTS.items():
            if not _given(ctx, name) and file_values.get(name) is None:
                raw[name] = value
    return TrainConfig.from_dict(raw)


# Options that may differ when a run is resumed; anything else would make it another run.
_RESUMABLE = {
    "num_epochs",
    "num_workers",
    "data_on_device",
    "evaluate",
    "log_with",
    "cache_dir",
    "output_dir",
    "compile",
    "compile_mode",
}


def _resume_dir(resume: str, output_dir: Path) -> Path:
    from .errors import CheckpointError

    if resume != "latest":
        return Path(resume)
    runs = (
        [*output_dir.glob("*/state/trainer.json"), *output_dir.glob("*/state.old/trainer.json")]
        if output_dir.is_dir()
        else []
    )
    if not runs:
        raise CheckpointError(f"--resume: nothing to resume in {output_dir} (no run folder with a saved state)")
    return max(runs, key=lambda p: p.stat().st_mtime).parent.parent


def _resume_config(ctx: typer.Context, values: dict[str, Any], run_dir: Path):
    """The run's own config. Options given again must keep their saved values, except those
    that may change on resume (more epochs, other workers, trackers, ...)."""
    from .config import TrainConfig, load_config_file
    from .errors import CheckpointError

    if not (run_dir / "config.json").exists():
        raise CheckpointError(f"nothing to resume in {run_dir}: no config.json (is it a run folder?)")
    from .checkpoint import recover_dir

    if not (recover_dir(run_dir / "state") / "trainer.json").exists():
        raise CheckpointError(
            f"nothing to resume in {run_dir}: it has no complete state/ (the run stopped before its first epoch ended)"
        )
    raw = load_config_file(run_dir / "config.json")
    raw["run_name"], raw["output_dir"] = run_dir.name, str(run_dir.parent)
    used = raw.get("runtime", {}).get("data_on_device")
    if raw.get("data", {}).get("data_on_device", "auto") == "auto" and isinstance(used, bool):
        # The data path decides which generator draws the sampling points: keep the one the
        # run used, which auto might not pick again with other free memory.
        raw["data"]["data_on_device"] = "yes" if used else "no"
    saved = TrainConfig.from_dict(raw)
    for name in _TRAIN_FIELDS:
        if _given(ctx, name) and name != "output_dir":
            node = raw
            for key in _TRAIN_FIELDS[name][:-1]:
                node = node.setdefault(key, {})
            node[_TRAIN_FIELDS[name][-1]] = str(values[name]) if isinstance(values[name], Path) else values[name]
    cfg = TrainConfig.from_dict(raw)
    for name in sorted(set(_TRAIN_FIELDS) - _RESUMABLE):
        where = _TRAIN_FIELDS[name]
        old, new = saved, cfg
        for key in where:
            old, new = getattr(old, key), getattr(new, key)
        if old != new:
            raise ConfigError(
                f"--resume continues {run_dir} with its own config: --{name.replace('_', '-')} was {old!r} "
                f"there, not {new!r} (only {', '.join('--' + n.replace('_', '-') for n in sorted(_RESUMABLE))} "
                "may change)"
            )
    return cfg


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)  # typer bundles its own click: compare by name
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


@app.command()
def train(
    ctx: typer.Context,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Clip store to train on (default: the embedded synthetic set, generated once into the cache)."
        ),
    ] = None,
    output_dir: Annotated[Path, typer.Option(help="Folder that holds the run folders.")] = Path("runs"),
    run_name: Annotated[
        str | None, typer.Option(help="Run folder name (default: <timestamp>-signs<K>-<size>).")
    ] = None,
    num_epochs: Annotated[int, typer.Option(help="Epochs to train.")] = 30,
    batch_size: Annotated[int, typer.Option(help="Batch size per process.")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate for one process (scaled by --lr-scaling).")] = 1e-3,
    weight_decay: Annotated[
        float, typer.Option(help="Weight decay (AdamW: decoupled, not on biases and norms; adam: L2 penalty).")
    ] = 0.05,
    optimizer: Annotated[str, typer.Option(help="adamw, or adam (the seed's).")] = "adamw",
    schedule: Annotated[
        str,
        typer.Option(
            help="cosine (warmup, then cosine decay per step), plateau (the seed's ReduceLROnPlateau on the val loss) or constant (warmup, then flat)."
        ),
    ] = "cosine",
    warmup_epochs: Annotated[float, typer.Option(help="Linear lr warmup, in epochs (cosine and constant).")] = 3.0,
    label_smoothing: Annotated[
        float, typer.Option(help="Label smoothing of the training loss (validation reports plain cross-entropy).")
    ] = 0.1,
    model_size: Annotated[
        str, typer.Option(help="STTransformer size {t,s,m,l}_{heads}_{layers}, e.g. s_4_2, m_12_10.")
    ] = "s_4_2",
    dropout: Annotated[float, typer.Option(help="Dropout rate in the model.")] = 0.2,
    drop_path: Annotated[
        float, typer.Option(help="Stochastic depth: chance of skipping a residual branch, reached in the last block.")
    ] = 0.1,
    input: Annotated[
        str,
        typer.Option(
            "--input",
            help="normalized (body frame, hand shapes, motion, presence) or raw (the seed's image coordinates).",
        ),
    ] = "normalized",
    handedness: Annotated[
        bool,
        typer.Option(
            "--handedness/--no-handedness",
            help="Mirror clips signed with the left hand so the dominant hand is always in the right-hand slot.",
        ),
    ] = True,
    best_metric: Annotated[
        str, typer.Option(help="What picks the best checkpoint: val_acc (ties: lower val loss) or val_loss.")
    ] = "val_acc",
    signs: Annotated[
        str | None, typer.Option(help="1-based sign numbers to train on, e.g. 1-10,15 (default: all).")
    ] = None,
    signers: Annotated[str | None, typer.Option(help="Signer ids to use, e.g. 01,02 (default: all).")] = None,
    val_signers: Annotated[
        str | None, typer.Option(help="Signer-independent validation: validate on these signers, train on the others.")
    ] = None,
    test_signers: Annotated[
        str | None, typer.Option(help="Signer-independent test: hold these signers out of training; test on them.")
    ] = None,
    val_fraction: Annotated[
        float, typer.Option(help="Share of each (sign, signer) group held out for validation.")
    ] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed for the split, initialisation, shuffling and augmentation.")] = 0,
    num_workers: Annotated[
        int | None, typer.Option(help="DataLoader workers per process (default: 0 on CPU, up to 4 per GPU).")
    ] = None,
    data_on_device: Annotated[
        str,
        typer.Option(
            help="auto|yes|no: hold the clips in the device's memory and sample/augment batches there (auto: on a GPU when they fit in half its free memory)."
        ),
    ] = "auto",
    mixed_precision: Annotated[
        str, typer.Option(help="auto|no|bf16|fp16; auto takes the accelerate config's, else bf16 on GPU, fp32 on CPU.")
    ] = "auto",
    max_grad_norm: Annotated[float, typer.Option(help="Gradient clipping norm (0 disables).")] = 1.0,
    lr_scaling: Annotated[str, typer.Option(help="sqrt|linear|none: lr growth with the number of processes.")] = "sqrt",
    evaluate: Annotated[
        bool,
        typer.Option(
            "--eval/--no-eval", help="Evaluate the best checkpoint on the test split and draw the plots at the end."
        ),
    ] = True,
    log_with: Annotated[
        str, typer.Option(help="Accelerate trackers for the per-epoch metrics, e.g. tensorboard (comma-separated).")
    ] = "",
    compile: Annotated[
        bool,
        typer.Option(
            "--compile", help="torch.compile the model (inductor); the log reports the compile time of the first epoch."
        ),
    ] = False,
    compile_mode: Annotated[
        str,
        typer.Option(
            help="torch.compile mode with --compile: default, reduce-overhead (CUDA graphs, pays at small batch on a GPU), max-autotune, max-autotune-no-cudagraphs."
        ),
    ] = "default",
    limit_batches: Annotated[
        int | None, typer.Option(help="Use only N batches per process of train and val data per epoch (a smoke test).")
    ] = None,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="One process, fp32, 2 epochs of 5 batches (unless given), num_workers 0, anomaly detection, deterministic algorithms, per-step logs.",
        ),
    ] = False,
    config: Annotated[
        Path | None, typer.Option(help="JSON/YAML config (e.g. a run's config.json); options given here override it.")
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="[RUN_DIR]",
            help="Continue a run from its last completed epoch (no value: the latest run in --output-dir).",
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Cache for the embedded synthetic set (default: $ACCEL_SIGNS_CACHE, $XDG_CACHE_HOME/accel_signs or ~/.cache/accel_signs)."
        ),
    ] = None,
) -> None:
    """Train a model; the last line printed is the best checkpoint's folder.

    Run it with `accelerate launch -m accel_signs train ...` for any number of processes
    (the same command works as `accel-signs train` for one)."""
    values = {k: v for k, v in locals().items() if k in _TRAIN_FIELDS}
    try:
        if resume is not None:
            if config is not None:
                raise ConfigError(
                    "--resume continues a run with its own config.json; --config cannot be combined with it"
                )
            run_dir = _resume_dir(resume, output_dir)
            cfg = _resume_config(ctx, values, run_dir)
        else:
            run_dir, cfg = None, _build_train_config(ctx, values, config)
        from .trainer import train as run_training

        best = run_training(cfg, resume=run_dir)
    except AccelSignsError as e:
        raise _fail(e) from None
    from accelerate import PartialState

    if PartialState().is_main_process:
        typer.echo(str(best))


@app.command()
def evaluate(
    checkpoint: Annotated[
        Path, typer.Argument(help="Checkpoint folder (model.safetensors + config.json), e.g. runs/<run>/best.")
    ],
    data: Annotated[
        Path | None, typer.Option(help="Clip store (default: the one the checkpoint was trained on).")
    ] = None,
    split: Annotated[str, typer.Option(help="Split of the store to evaluate.")] = "test",
    signers: Annotated[
        str | None, typer.Option(help="Signer ids, e.g. 03 (default: those the checkpoint was trained on).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="Output folder (default: <run>/eval-<split>, or <checkpoint>/eval-<split>).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Batch size per process.")] = 256,
    num_workers: Annotated[
        int | None, typer.Option(help="DataLoader workers per process (default: 0 on CPU, 4 per GPU).")
    ] = None,
    plots: Annotated[
        bool,
        typer.Option("--plots/--no-plots", help="Draw the confusion matrix, per-class F1 and top-confusion plots."),
    ] = True,
) -> None:
    """Evaluate a checkpoint: top-1/top-5 accuracy, macro F1, per-class and per-signer results,
    confusion matrix and plots. Works under `accelerate launch` with any number of processes."""
    try:
        from .config import EvalConfig
        from .evaluate import evaluate_checkpoint, format_summary

        cfg = EvalConfig(
            checkpoint=checkpoint,
            data=data,
            split=split,
            signers=signers,
            output=output,
            batch_size=batch_size,
            num_workers=num_workers,
            plots=plots,
        )
        result = evaluate_checkpoint(cfg)
    except AccelSignsError as e:
        raise _fail(e) from None
    from accelerate import PartialState

    if PartialState().is_main_process:
        typer.echo(format_summary(result.summary))
        typer.echo(str(result.output))


@app.command()
def plot(run_dir: Annotated[Path, typer.Argument(help="A run folder, or an eval-<split> folder.")]) -> None:
    """Redraw a run's figures from its files: training curves and every evaluation's plots."""
    from .plots import plot_eval_dir, plot_run

    if not run_dir.is_dir():
        raise _fail(AccelSignsError(f"{run_dir} is not a folder"))
    if (run_dir / "metrics.json").exists():
        drawn = plot_eval_dir(run_dir)
    else:
        drawn = plot_run(run_dir)
    if not drawn:
        raise _fail(AccelSignsError(f"{run_dir} holds neither metrics.jsonl (a run) nor metrics.json (an evaluation)"))
    for path in drawn:
        typer.echo(str(path))


@app.command()
def prepare(
    src: Annotated[
        Path,
        typer.Argument(
            help="The keypoints: an npz tree, a seed memory-map folder, a manifest CSV (--from clips) or a GISLR folder (--from gislr)."
        ),
    ],
    out_dir: Annotated[Path, typer.Argument(help="Folder for the new clip store; must not exist.")],
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="npz ({signer}-{split}/{sign:04}.npz), seed-mmap ({split}_X.mmap + index files), clips (a manifest CSV of .npy/.npz arrays) or gislr (Kaggle's train.csv + parquet files).",
        ),
    ] = "npz",
    layout: Annotated[
        str | None,
        typer.Option(
            help="Keypoint layout of the clips: karsl184, holistic543, pose33-hands42, pose33 or a layout .json file (--from clips: default karsl184; gislr: holistic543)."
        ),
    ] = None,
    coords: Annotated[
        str,
        typer.Option(
            help="--from clips: normalized (x, y in 0..1 of the frame) or pixels (the manifest gives each clip's width and height)."
        ),
    ] = "normalized",
    signs: Annotated[
        str | None, typer.Option(help="1-based sign numbers to keep, e.g. 1-100 (default: all found).")
    ] = None,
    signers: Annotated[str | None, typer.Option(help="Signer ids to keep, e.g. 01,02 (default: all found).")] = None,
    splits: Annotated[
        str | None,
        typer.Option(help="Splits to convert (default: train,test for the seed formats, all found otherwise)."),
    ] = None,
    dtype: Annotated[
        str, typer.Option(help="float32, or float16 to halve the store (KArSL coordinates keep ~4 significant digits).")
    ] = "float32",
    allow_pickle: Annotated[
        bool,
        typer.Option(
            "--allow-pickle",
            help="Needed for seed-mmap: its clip-length index is a pickle, and unpickling can run code. Only for files you trust.",
        ),
    ] = False,
    allow_missing: Annotated[
        bool,
        typer.Option(
            "--allow-missing",
            help="Prepare what is there when some sign/signer files are missing (they are still listed).",
        ),
    ] = False,
) -> None:
    """Convert keypoints into a clip store, streaming in bounded memory: the seed project's
    formats, a manifest of .npy/.npz clips in any layout, or the Kaggle GISLR parquet files."""
    try:
        from .config import parse_signers, parse_signs
        from .data.prepare import prepare as run_prepare

        report = run_prepare(
            src,
            out_dir,
            source,
            signs=parse_signs(signs) if signs else None,
            signers=parse_signers(signers) if signers else None,
            splits=tuple(s.strip() for s in splits.split(",") if s.strip()) if splits else None,
            dtype=dtype,
            allow_pickle=allow_pickle,
            allow_missing=allow_missing,
            layout=layout,
            coords=coords,
        )
    except AccelSignsError as e:
        raise _fail(e) from None
    typer.echo(report.summary(), err=True)
    typer.echo(str(out_dir))


@app.command()
def info(path: Annotated[Path, typer.Argument(help="A clip store or a checkpoint folder.")]) -> None:
    """Summarise a clip store (splits, clips, classes, signers, lengths, detection rates) or a checkpoint."""
    try:
        from .info import describe

        typer.echo(describe(path))
    except AccelSignsError as e:
        raise _fail(e) from None


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder, e.g. runs/<run>/best.")],
    clip: Annotated[
        Path,
        typer.Argument(
            help="A clip: .npy (frames, points, 4), an .npz of such arrays or from `extract`, or a video / folder of frames (extracted with MediaPipe first)."
        ),
    ],
    top_k: Annotated[int, typer.Option(help="How many classes to list per clip.")] = 5,
    frame_size: Annotated[
        str | None,
        typer.Option(
            help="WIDTHxHEIGHT of the video the keypoints come from, e.g. 1920x1080 (default: what a video or an extracted clip records, else square, as KArSL's)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Classify keypoint clips with a trained checkpoint: the top-k glosses (English and Arabic) with probabilities."""
    try:
        from .inference import format_predictions, parse_frame_size
        from .inference import predict as run_predict

        results = run_predict(checkpoint, clip, top_k, parse_frame_size(frame_size))
    except AccelSignsError as e:
        raise _fail(e) from None
    typer.echo(json.dumps(results, ensure_ascii=False, indent=2) if as_json else format_predictions(results))


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder, e.g. runs/<run>/best.")],
    onnx: Annotated[Path, typer.Option(help="Where to write the ONNX model.")],
) -> None:
    """Export a checkpoint to ONNX (input keypoints (batch, 50, 736), output logits), verified with ONNX Runtime."""
    try:
        from .inference import export_onnx

        report = export_onnx(checkpoint, onnx)
    except AccelSignsError as e:
        raise _fail(e) from None
    for name, diff in report["max_abs_logit_diff"].items():
        typer.echo(f"ONNX Runtime vs PyTorch, {name}: max abs logit difference {diff:.2e}", err=True)
    typer.echo(report["onnx"])


@app.command()
def extract(
    videos: Annotated[
        list[Path],
        typer.Argument(
            help="Video files (mp4, mov, avi, mkv, webm), folders of frame images, or folders searched for both.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Argument(help="Output folder: one <name>.npz per clip and manifest.csv (for `prepare --from clips`)."),
    ],
    layout: Annotated[
        str,
        typer.Option(
            help="karsl184 (the KArSL points), holistic543 (all of MediaPipe Holistic), pose33-hands42, pose33."
        ),
    ] = "karsl184",
    workers: Annotated[int, typer.Option(help="Videos extracted in parallel (processes).")] = 1,
    manifest: Annotated[
        Path | None, typer.Option(help="CSV with columns video, sign, signer (and split) naming each video's labels.")
    ] = None,
    pattern: Annotated[
        str | None,
        typer.Option(
            help="Regex with named groups sign and signer (and split), searched in each video's path, e.g. '(?P<signer>\\d+)/(?P<sign>\\d+)_'."
        ),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option(help="Also write a clip store from the extracted clips (needs sign and signer for each)."),
    ] = None,
    model_complexity: Annotated[
        int, typer.Option(help="MediaPipe Holistic's pose model: 0 (fast), 1 (the KArSL pipeline's), 2 (accurate).")
    ] = 1,
) -> None:
    """Extract MediaPipe Holistic keypoints from videos: one clip per video, resumable (clips
    already written are skipped), parallel over videos. Needs the `extract` extra."""
    try:
        from .extract import extract as run_extract

        report, written = run_extract(
            list(videos),
            out,
            layout=layout,
            workers=workers,
            manifest=manifest,
            pattern=pattern,
            model_complexity=model_complexity,
        )
        typer.echo(report.summary(), err=True)
        for name in report.no_person:
            typer.echo(f"warning: no person detected in {name} (its keypoints are all zeros)", err=True)
        for error in report.failed:
            typer.echo(f"error: {error}", err=True)
        if store is not None and not report.failed:
            from .data.prepare import prepare as run_prepare

            run_prepare(written, store, "clips", layout=layout)
            typer.echo(str(store))
    except AccelSignsError as e:
        raise _fail(e) from None
    typer.echo(str(written))
    if report.failed:
        raise typer.Exit(code=1)


@app.command()
def show(
    clip: Annotated[
        Path, typer.Argument(help="A clip store (with --clip), an .npy/.npz clip, or a video (extracted first).")
    ],
    out: Annotated[Path, typer.Option(help="Where to write the animation: .gif or .mp4.")] = Path("clip.gif"),
    clip_id: Annotated[int, typer.Option("--clip", help="With a store: the clip's id in the split.")] = 0,
    split: Annotated[str, typer.Option(help="With a store: the split.")] = "train",
    layout: Annotated[
        str | None, typer.Option(help="Layout of an .npy/.npz clip (default: the checkpoint's, else karsl184).")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="A checkpoint: its top-3 for the clip goes in the title.")
    ] = None,
    frame_size: Annotated[
        str | None, typer.Option(help="WIDTHxHEIGHT of the clip's video (default: recorded, else square).")
    ] = None,
    fps: Annotated[float, typer.Option(help="Frames per second of the animation.")] = 15.0,
) -> None:
    """Draw a clip as an animated skeleton (bones, hands enlarged, undetected points hidden): to
    check that keypoints are right before training on them."""
    try:
        from .inference import parse_frame_size, read_inputs
        from .inference import predict as run_predict
        from .layout import keypoint_layout, load_layout
        from .show import render, store_clip

        ckpt_layout = None
        if checkpoint is not None:
            from .checkpoint import load_checkpoint

            ckpt_layout = load_checkpoint(checkpoint).layout
        if (clip / "meta.json").exists():
            frames, lay, size, title = store_clip(clip, clip_id, split)
        else:
            lay = load_layout(layout) if layout else ckpt_layout or keypoint_layout()
            name, frames, size = read_inputs(clip, lay)[0]
            title = f"{name} ({len(frames)} frames, layout {lay.name})"
        size = parse_frame_size(frame_size) or size
        if checkpoint is not None:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                np_path = Path(tmp) / "clip.npy"
                import numpy as np

                np.save(np_path, frames)
                top = run_predict(checkpoint, np_path, top_k=3, frame_size=size)[0]["top"]
            title += "\n" + ", ".join(f"{t['en']} {t['probability']:.2f}" for t in top)
        written = render(frames, lay, out, size, title, fps)
    except AccelSignsError as e:
        raise _fail(e) from None
    typer.echo(str(written))


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to create; must not exist.")],
    classes: Annotated[int, typer.Option(help="Number of signs (classes), at most 502; glosses are KArSL's.")] = 20,
    signers: Annotated[int, typer.Option(help="Number of signers.")] = 3,
    reps: Annotated[
        int, typer.Option(help="Train clips per sign and signer; the test split gets a quarter (at least 1).")
    ] = 12,
    seed: Annotated[int, typer.Option(help="Seed; the same seed writes the same data.")] = 0,
    layout: Annotated[
        str, typer.Option(help="Built-in keypoint layout to write: karsl184, holistic543, pose33-hands42 or pose33.")
    ] = "karsl184",
) -> None:
    """Write a KArSL-shaped, learnable synthetic data set (train and test splits) as a clip store."""
    try:
        from .data.synth import SynthSpec, write_synthetic

        path = write_synthetic(
            out_dir, SynthSpec(classes=classes, signers=signers, reps=reps, seed=seed, layout=layout)
        )
    except AccelSignsError as e:
        raise _fail(e) from None
    typer.echo(str(path))


def main() -> None:
    """Console-script entry point."""
    app(args=_resume_value(sys.argv[1:]))


def _resume_value(args: list[str]) -> list[str]:
    """`--resume` followed by another option means "the latest run"; the bundled click would
    take that option as its value."""
    out = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--resume" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append("latest")
    return out
