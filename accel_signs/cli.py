"""The `accel-signs` command line. Commands are thin: they build a config, call the library,
and turn the library's errors into one-line messages and exit codes."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from accel_signs.config.schema import TTA_FLIP_HELP
from accel_signs.core.errors import AccelSignsError, ConfigError, Stopped
from accel_signs.extractors import HELP as EXTRACTOR_HELP
from accel_signs.extractors import LANDMARKERS_HELP

app = typer.Typer(
    name="accel-signs",
    help="Train sign-language recognition models on MediaPipe keypoint sequences with Hugging Face Accelerate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)
logger = logging.getLogger("accel_signs")
CHECKPOINT_HELP = "Checkpoint folder, e.g. runs/<run>/best, or a Hub model hf://USER/NAME[@REVISION]."


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
    # One line, whatever the message quotes: a parser's error (YAML, pyarrow) can span several.
    message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


def _reported(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The library's errors become one line on stderr and exit code 1: the one place they do."""

    @functools.wraps(fn)  # Typer reads the signature and type hints through __wrapped__
    def reporting(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Stopped as e:  # not a failure: the run saved its state and asks to be resumed
            typer.echo(f"stopped: {e}", err=True)
            raise typer.Exit(code=Stopped.exit_code) from None
        except AccelSignsError as e:
            raise _fail(e) from None

    return reporting


def command(name: str | None = None, cls: type[TyperCommand] | None = None) -> Callable[[Callable], Callable]:
    """`app.command` for every command: the library's errors are reported by _reported."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        app.command(name=name, cls=cls)(_reported(fn))
        return fn

    return register


def _resume_value(args: list[str]) -> list[str]:
    """`--resume` alone, or followed by another option, means "the latest run"."""
    out = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--resume" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append("latest")
    return out


class _TrainCommand(TyperCommand):
    """`train`, whose --resume takes an optional value. The click that Typer bundles has no
    options with optional values (click's `flag_value` is gone from it, and typer.Option's is
    deprecated and ignored), so the command supplies the value before parsing its arguments."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _resume_value(args))


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)  # typer bundles its own click: compare by name
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def _command(
    name: str, doc: str, options: list, body: Callable, extra: dict[str, Any] | None = None, cls: Any = None
) -> None:
    """A Typer command whose options are generated from config fields (config.option): each
    option's flag, default and help text are those of its field, defined once in config/schema.py.
    `extra`: the command's own options, {name: Annotated[type, typer.Option(...)]}, default None."""
    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    for o in options:
        default = "" if o.default == () else o.default  # a tuple option is typed as text: "" is empty
        if o.argument:  # required unless its field has a default (dashboard's RUNS_DIR) or its variable is set
            info = typer.Argument(
                help=o.help, show_default=o.default is not ..., envvar=o.envvar, show_envvar=bool(o.envvar)
            )
            default = inspect.Parameter.empty if o.default is ... else o.default
        else:
            info = typer.Option(*o.flag.split(" "), help=o.help, envvar=o.envvar, show_envvar=bool(o.envvar))
        params.append(_keyword(o.name, Annotated[o.type, info], default))
    params += [_keyword(key, annotation, None) for key, annotation in (extra or {}).items()]

    def run(ctx: typer.Context, **values: Any) -> None:
        body(ctx, values)

    run.__signature__ = inspect.Signature(params)
    run.__annotations__ = {p.name: p.annotation for p in params}
    run.__doc__ = doc
    command(name, cls)(run)


def _keyword(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _from_values(cls: type, values: dict[str, Any]) -> Any:
    """The config `cls` from a command's generated options (every one, given or default)."""
    from accel_signs.config import config_options, from_dict, set_path

    raw: dict[str, Any] = {}
    for o in config_options(cls):
        set_path(raw, o.path, values[o.name])
    return from_dict(cls, raw)


def _train_config(ctx: typer.Context, values: dict[str, Any]):
    """The config a `train` command line asks for: defaults < --config file < options given."""
    from accel_signs.config import DEBUG_DEFAULTS, TrainConfig, config_options, load_config_file, set_path

    file = values["config"]
    raw: dict[str, Any] = load_config_file(file) if file else {}
    file_values = dict(raw)
    for o in config_options(TrainConfig):
        if _given(ctx, o.name):
            set_path(raw, o.path, values[o.name])
    if values["debug"]:
        for name, value in DEBUG_DEFAULTS.items():
            if not _given(ctx, name) and file_values.get(name) is None:
                raw[name] = value
    return TrainConfig.from_dict(raw)


def _resume_changes(ctx: typer.Context, values: dict[str, Any]) -> dict[str, Any]:
    """Options given with --resume, by field path: the library decides which may change."""
    from accel_signs.config import TrainConfig, config_options

    return {
        o.dotted: values[o.name] for o in config_options(TrainConfig) if _given(ctx, o.name) and o.name != "output_dir"
    }


def _train(ctx: typer.Context, values: dict[str, Any]) -> None:
    from accel_signs.training.loop import train as run_training
    from accel_signs.training.run import latest_run, plan_resume

    if values["resume"] is None:
        best = run_training(_train_config(ctx, values))
    else:
        if values["config"] is not None:
            raise ConfigError("--resume continues a run with its own config.json; --config cannot be combined with it")
        run_dir = latest_run(values["output_dir"]) if values["resume"] == "latest" else Path(values["resume"])
        # Planned once here; train() takes the plan as it is.
        best = run_training(resume=plan_resume(run_dir, _resume_changes(ctx, values)))
    from accelerate import PartialState

    if PartialState().is_main_process:
        typer.echo(str(best))


def _evaluate(ctx: typer.Context, values: dict[str, Any]) -> None:
    from accel_signs.config import EvalConfig
    from accel_signs.training.evaluate import evaluate_checkpoint, format_summary

    result = evaluate_checkpoint(_from_values(EvalConfig, values))
    from accelerate import PartialState

    if PartialState().is_main_process:
        typer.echo(format_summary(result.summary))
        typer.echo(str(result.output))


def _serve(ctx: typer.Context, values: dict[str, Any]) -> None:
    from accel_signs.serve.config import SERVE_HINT, ServeConfig

    cfg = _from_values(ServeConfig, values)
    try:
        from accel_signs.serve.app import serve
    except ImportError as e:
        raise ConfigError(f"{SERVE_HINT} ({e})") from None
    serve(cfg)


def _dashboard(ctx: typer.Context, values: dict[str, Any]) -> None:
    from accel_signs.dashboard.config import DASHBOARD_HINT, DashboardConfig

    cfg = _from_values(DashboardConfig, values)
    try:
        from accel_signs.dashboard.app import serve as serve_dashboard
    except ImportError as e:
        raise ConfigError(f"{DASHBOARD_HINT} ({e})") from None
    serve_dashboard(cfg)


# train's own options, beside its config fields.
TRAIN_ONLY = {
    "config": Annotated[
        Path | None,
        typer.Option(help="JSON/YAML config (e.g. a run's config.json); options given here override it."),
    ],
    "resume": Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="[RUN_DIR]",
            help="Continue a run from its last completed epoch (no value: the latest run in --output-dir).",
        ),
    ],
}


def _register() -> None:
    from accel_signs.config import EvalConfig, TrainConfig, config_options
    from accel_signs.dashboard.config import DashboardConfig
    from accel_signs.serve.config import ServeConfig

    _command(
        "train",
        """Train a model; the last line printed is the best checkpoint's folder.

    Run it with `accelerate launch -m accel_signs train ...` for any number of processes (the
    same command works as `accel-signs train` for one).""",
        config_options(TrainConfig),
        _train,
        TRAIN_ONLY,
        cls=_TrainCommand,
    )
    _command(
        "evaluate",
        """Evaluate a checkpoint: top-1/top-5 accuracy, macro F1, per-class and per-signer results,
    confusion matrix and plots. Works under `accelerate launch` with any number of processes.""",
        config_options(EvalConfig),
        _evaluate,
    )
    _command(
        "serve",
        """Live recognition in the browser: serve a page and a WebSocket endpoint for a checkpoint.

    Open the printed address, allow the camera (or upload a video), and sign: the page draws the
    detected skeleton, shows the top-5 with every gloss the checkpoint has, and collects the
    accepted signs into a sentence. Needs the `serve` extra (FastAPI, uvicorn, MediaPipe).""",
        config_options(ServeConfig),
        _serve,
    )
    _command(
        "dashboard",
        """A page for runs, evaluations, clips, augmentation and data, on 127.0.0.1:8050.

    Training curves of several runs, config diffs, a checkpoint evaluated on a split (the same
    code as `evaluate`, cached outside the runs), the confusion matrix, a clip's skeleton and
    top-5, the augmentation lab and the store's summary. Needs the `serve` extra's FastAPI and uvicorn.""",
        config_options(DashboardConfig),
        _dashboard,
    )


_register()


@command()
def plot(run_dir: Annotated[Path, typer.Argument(help="A run folder, or an eval-<split> folder.")]) -> None:
    """Redraw a run's figures from its files: training curves and every evaluation's plots."""
    from accel_signs.core.plots import plot_eval_dir, plot_run

    if not run_dir.is_dir():
        raise AccelSignsError(f"{run_dir} is not a folder")
    if (run_dir / "metrics.json").exists():
        drawn = plot_eval_dir(run_dir)
    else:
        drawn = plot_run(run_dir)
    if not drawn:
        raise AccelSignsError(f"{run_dir} holds neither metrics.jsonl (a run) nor metrics.json (an evaluation)")
    for path in drawn:
        typer.echo(str(path))


# prepare's longer parameters (type, flag and help), named here to keep its signature short.
PREPARE_SRC = Annotated[
    Path,
    typer.Argument(
        help="The keypoints: an npz tree, a memory-map folder of the original project, a manifest CSV (--from clips) or a GISLR folder (--from gislr)."
    ),
]
PREPARE_FROM = Annotated[
    str,
    typer.Option(
        "--from",
        help="npz ({signer}-{split}/{sign:04}.npz), seed-mmap ({split}_X.mmap + index files), clips (a manifest CSV of .npy/.npz arrays) or gislr (Kaggle's train.csv + parquet files).",
    ),
]
PREPARE_LAYOUT = Annotated[
    str | None,
    typer.Option(
        help="Keypoint layout of the clips: karsl184, holistic543, pose33-hands42, pose33 or a layout .json file (--from clips: default karsl184; gislr: holistic543)."
    ),
]
PREPARE_COORDS = Annotated[
    str,
    typer.Option(
        help="--from clips: normalized (x, y in 0..1 of the frame) or pixels (the manifest gives each clip's width and height)."
    ),
]


@command()
def prepare(
    src: PREPARE_SRC,
    out_dir: Annotated[Path, typer.Argument(help="Folder for the new clip store; must not exist.")],
    source: PREPARE_FROM = "npz",
    layout: PREPARE_LAYOUT = None,
    coords: PREPARE_COORDS = "normalized",
    signs: Annotated[
        str | None, typer.Option(help="1-based sign numbers to keep, e.g. 1-100 (default: all found).")
    ] = None,
    signers: Annotated[str | None, typer.Option(help="Signer ids to keep, e.g. 01,02 (default: all found).")] = None,
    splits: Annotated[
        str | None,
        typer.Option(help="Splits to convert (default: train,test for npz and seed-mmap, all found otherwise)."),
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
    frame_size: Annotated[
        str | None,
        typer.Option(
            help="npz and seed-mmap: WIDTHxHEIGHT in pixels of the videos, e.g. 1920x1080, for every clip whose files give no size (default: unknown, taken as square).",
        ),
    ] = None,
    allow_duplicates: Annotated[
        bool,
        typer.Option(
            "--allow-duplicates",
            help="Keep clips of the test split that also appear in another split (same file or identical frames); otherwise an error.",
        ),
    ] = False,
    drop_empty: Annotated[
        bool,
        typer.Option("--drop-empty", help="Leave out clips in which no keypoint is detected in any frame."),
    ] = False,
    extractor: Annotated[
        str | None,
        typer.Option(
            help="Which extractor made the keypoints, recorded in the store: seed, tasks, tasks-image, holistic (default: what the files say; npz and seed-mmap: seed, the original project's recipe)."
        ),
    ] = None,
) -> None:
    """Convert keypoints into a clip store, streaming in bounded memory: the original project's
    formats, a manifest of .npy/.npz clips in any layout, or the Kaggle GISLR parquet files."""
    from accel_signs.config import parse_signers, parse_signs
    from accel_signs.data.prepare import parse_frame_size
    from accel_signs.data.prepare import prepare as run_prepare
    from accel_signs.extractors.choose import named_record

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
        frame_size=parse_frame_size(frame_size),
        allow_duplicates=allow_duplicates,
        drop_empty=drop_empty,
        extractor=None if extractor is None else named_record(extractor),
    )
    typer.echo(report.summary(), err=True)
    typer.echo(str(out_dir))


@command()
def info(
    path: Annotated[
        str, typer.Argument(help="A clip store, a checkpoint folder or a Hub model hf://USER/NAME[@REVISION].")
    ],
) -> None:
    """Summarise a clip store (splits, clips, classes, signers, lengths, detection rates) or a checkpoint."""
    from accel_signs.tools.info import describe

    typer.echo(describe(path))


@command()
def predict(
    checkpoint: Annotated[str, typer.Argument(help=CHECKPOINT_HELP)],
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
    extractor: EXTRACTOR = "auto",
    landmarkers: LANDMARKERS = None,
    tta_flip: Annotated[bool, typer.Option(help=TTA_FLIP_HELP)] = False,
) -> None:
    """Classify keypoint clips with a trained checkpoint: the top-k glosses (English and Arabic) with probabilities."""
    from accel_signs.extractors.choose import ExtractorChoice
    from accel_signs.tools.inference import format_predictions, parse_frame_size
    from accel_signs.tools.inference import predict as run_predict

    choice = ExtractorChoice(extractor, landmarkers)
    results = run_predict(checkpoint, clip, top_k, parse_frame_size(frame_size), choice, tta_flip)
    typer.echo(json.dumps(results, ensure_ascii=False, indent=2) if as_json else format_predictions(results))


@command()
def export(
    checkpoint: Annotated[str, typer.Argument(help=CHECKPOINT_HELP)],
    onnx: Annotated[Path, typer.Option(help="Where to write the ONNX model.")],
) -> None:
    """Export a checkpoint to ONNX, verified against PyTorch with ONNX Runtime.

    Inputs: keypoints (batch, seq_len, points x 4), with the checkpoint's seq_len and layout,
    and for models with the normalized input the video's aspect ratio (batch,). Output: logits
    (batch, classes)."""
    from accel_signs.tools.inference import export_onnx

    report = export_onnx(checkpoint, onnx)
    for name, diff in report["max_abs_logit_diff"].items():
        typer.echo(f"ONNX Runtime vs PyTorch, {name}: max abs logit difference {diff:.2e}", err=True)
    typer.echo(report["onnx"])


@command()
def push(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint folder, e.g. runs/<run>/best.")],
    repo_id: Annotated[str, typer.Argument(help="Hub model repo, USER/NAME (created if it does not exist).")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo as private.")] = False,
    revision: Annotated[
        str | None, typer.Option(help="Branch to push to (created if needed; default: the main branch).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be uploaded; upload nothing.")] = False,
) -> None:
    """Publish a checkpoint on the Hugging Face Hub: weights, config.json, model card, test metrics
    and plots (nothing else). The token comes from HF_TOKEN or `hf auth login`. Needs the hub extra."""
    from accel_signs.model.hub import push_checkpoint

    files = push_checkpoint(checkpoint, repo_id, private=private, revision=revision, dry_run=dry_run)
    for f in files:
        typer.echo(f"{f.size:>12,d}  {f.path_in_repo}")
    where = f"hf://{repo_id}" + (f"@{revision}" if revision else "")
    typer.echo(
        f"dry run: {len(files)} files would go to {where}" if dry_run else f"pushed {len(files)} files to {where}"
    )


# extract's longer parameters, named here to keep its signature short.
EXTRACT_VIDEOS = Annotated[
    list[Path],
    typer.Argument(
        help="Video files (mp4, mov, avi, mkv, webm), folders of frame images, or folders searched for both.",
        show_default=False,
    ),
]
EXTRACT_PATTERN = Annotated[
    str | None,
    typer.Option(
        help="Regex with named groups sign and signer (and split), searched in each video's path, e.g. '(?P<signer>\\d+)/(?P<sign>\\d+)_'."
    ),
]
EXTRACT_COMPLEXITY = Annotated[
    int,
    typer.Option(
        help="The holistic extractor's pose model: 1 (in MediaPipe 0.10.21's wheel); 0 (fast) and 2 (accurate) need model files the wheel does not ship."
    ),
]
# --extractor and --landmarkers, for extract, predict and show (serve's are in serve/config.py).
EXTRACTOR = Annotated[str, typer.Option(help=EXTRACTOR_HELP)]
LANDMARKERS = Annotated[Path | None, typer.Option(help=LANDMARKERS_HELP)]


@command()
def extract(
    videos: EXTRACT_VIDEOS,
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
    pattern: EXTRACT_PATTERN = None,
    store: Annotated[
        Path | None,
        typer.Option(help="Also write a clip store from the extracted clips (needs sign and signer for each)."),
    ] = None,
    model_complexity: EXTRACT_COMPLEXITY = 1,
    extractor: EXTRACTOR = "auto",
    landmarkers: LANDMARKERS = None,
) -> None:
    """Extract MediaPipe keypoints from videos: one clip per video, resumable (clips already
    written are skipped), parallel over videos; each clip records its extractor. Needs the
    `extract` extra (or `holistic`)."""
    from accel_signs.extractors.choose import ExtractorChoice
    from accel_signs.tools.extract import extract as run_extract

    report, written = run_extract(
        list(videos),
        out,
        layout=layout,
        workers=workers,
        manifest=manifest,
        pattern=pattern,
        extractor=ExtractorChoice(extractor, landmarkers, model_complexity),
    )
    extracted = bool(report.done or report.skipped)
    if extracted:  # else the error lines below say all there is
        typer.echo(report.summary(), err=True)
    for name in report.no_person:
        typer.echo(f"warning: no person detected in {name} (its keypoints are all zeros)", err=True)
    for error in report.failed:
        typer.echo(f"error: {error}", err=True)
    if store is not None and not report.failed:
        from accel_signs.data.prepare import prepare as run_prepare

        run_prepare(written, store, "clips", layout=layout)
        typer.echo(str(store))
    if extracted:
        typer.echo(str(written))
    if report.failed:
        raise typer.Exit(code=1)


@command()
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
        str | None,
        typer.Option(
            help="A checkpoint (folder or hf://USER/NAME[@REVISION]): its top-3 for the clip goes in the title."
        ),
    ] = None,
    frame_size: Annotated[
        str | None, typer.Option(help="WIDTHxHEIGHT of the clip's video (default: recorded, else square).")
    ] = None,
    fps: Annotated[float, typer.Option(help="Frames per second of the animation.")] = 15.0,
    extractor: EXTRACTOR = "auto",
    landmarkers: LANDMARKERS = None,
) -> None:
    """Draw a clip as an animated skeleton (bones, hands enlarged, undetected points hidden; a video:
    over its own frames): to check that keypoints are right before training on them."""
    from accel_signs.data.layout import keypoint_layout, load_layout
    from accel_signs.extractors.choose import ExtractorChoice
    from accel_signs.tools.inference import is_video, parse_frame_size, read_inputs
    from accel_signs.tools.inference import predict as run_predict
    from accel_signs.tools.show import render, store_clip, video_frames

    ckpt_layout, trained_on, choice = None, None, ExtractorChoice(extractor, landmarkers)
    if checkpoint is not None:
        from accel_signs.model.checkpoint import load_checkpoint

        ckpt = load_checkpoint(checkpoint)
        ckpt_layout, trained_on = ckpt.layout, ckpt.extractor
    if (clip / "meta.json").exists():
        frames, lay, size, title = store_clip(clip, clip_id, split)
    else:
        lay = load_layout(layout) if layout else ckpt_layout or keypoint_layout()
        name, frames, size = read_inputs(clip, lay, choice, trained_on)[0]
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
    background = video_frames(clip) if is_video(clip) else None  # a video: the skeleton over its frames
    written = render(frames, lay, out, size, title, fps, background)
    typer.echo(str(written))


@command()
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
    first_sign: Annotated[
        int, typer.Option(help="KArSL sign number of the first class, whose glosses name it (160: eat, drink, ...).")
    ] = 1,
) -> None:
    """Write a KArSL-shaped, learnable synthetic data set (train and test splits) as a clip store."""
    from accel_signs.data.synth import SynthSpec, write_synthetic

    path = write_synthetic(
        out_dir,
        SynthSpec(classes=classes, signers=signers, reps=reps, seed=seed, layout=layout, first_sign=first_sign),
    )
    typer.echo(str(path))


def main() -> None:
    """Console-script entry point."""
    try:
        ranks = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        ranks = 1  # the launch check (training/loop.make_accelerator) reports it where it matters
    if ranks <= 1:
        app()
        return
    # One rank of several (`accelerate launch` and torchrun set WORLD_SIZE): leave without
    # finalizing the interpreter, which can abort a rank whose files are all written
    # (core/collective.exit_rank).
    from accel_signs.core.collective import exit_rank

    try:
        app()
        code = 0
    except SystemExit as done:
        if isinstance(done.code, str):  # sys.exit("message"): Python prints it and exits 1
            typer.echo(done.code, err=True)
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    exit_rank(code)
