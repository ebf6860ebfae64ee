"""The configuration's schema: typed dataclasses, each field defined once with option() (its
default, help text and command-line flag). Built once (by the CLI or the caller), passed
explicitly, and saved with every run as `config.json`. Reading files and dicts: io.py; the
command line's view of the fields: options.py."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from accel_signs.config.io import CONFIG_VERSION, current_version, from_dict
from accel_signs.core.errors import ConfigError

HEAD_SIZES = {"t": 16, "s": 32, "m": 64, "l": 128}
# The choice fields: each is a Literal, checked by check_choices; the tuples are for callers.
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
MixedPrecision = Literal["auto", "no", "bf16", "fp16"]
# evaluate: fp32, or the autocast dtype a mixed-precision run validated in.
EvalPrecision = Literal["no", "bf16", "fp16"]
LrScaling = Literal["sqrt", "linear", "none"]
InputKind = Literal["normalized", "raw"]
FacePoints = Literal["all", "lips_eyes_nose", "none"]
Optimizer = Literal["adamw", "adam"]
Schedule = Literal["cosine", "plateau", "constant"]
BestMetric = Literal["val_acc", "val_loss"]
ValSplit = Literal["sign", "group"]
DataOnDevice = Literal["auto", "yes", "no"]
COMPILE_MODES = typing.get_args(CompileMode)
MIXED_PRECISION = typing.get_args(MixedPrecision)
EVAL_PRECISION = typing.get_args(EvalPrecision)
LR_SCALING = typing.get_args(LrScaling)
INPUT_KINDS = typing.get_args(InputKind)
FACE_POINTS = typing.get_args(FacePoints)
OPTIMIZERS = typing.get_args(Optimizer)
SCHEDULES = typing.get_args(Schedule)
BEST_METRICS = typing.get_args(BestMetric)
VAL_SPLITS = typing.get_args(ValSplit)
# What --debug changes unless the option (or the config file) says otherwise.
DEBUG_DEFAULTS = {"num_epochs": 2, "limit_batches": 5}


@dataclass(frozen=True)
class ModelSize:
    """`{head}_{heads}_{layers}`, e.g. `s_4_2`: head width 32, 4 heads, 2 blocks."""

    head: str
    heads: int
    layers: int

    @classmethod
    def parse(cls, text: str) -> ModelSize:
        m = re.fullmatch(r"([tsml])_(\d+)_(\d+)", text.strip())
        if not m or int(m[2]) < 1 or int(m[3]) < 1:
            raise ConfigError(
                f"unknown model size {text!r}: expected HEAD_HEADS_LAYERS with HEAD one of "
                f"{'/'.join(HEAD_SIZES)} (head width {'/'.join(map(str, HEAD_SIZES.values()))}) "
                "and positive counts, e.g. s_4_2 or m_12_10"
            )
        return cls(m[1], int(m[2]), int(m[3]))

    @property
    def head_dim(self) -> int:
        return HEAD_SIZES[self.head]

    @property
    def embed_dim(self) -> int:
        return self.head_dim * self.heads

    def __str__(self) -> str:
        return f"{self.head}_{self.heads}_{self.layers}"


# One help text for evaluate's, predict's and serve's --tta-flip.
TTA_FLIP_HELP = (
    "Test-time flip averaging: average the class probabilities of each clip and its mirror image (through the "
    "layout's mirror map). A model that canonicalises handedness (the default input) mirrors clips into the "
    "right-handed frame itself, so it runs the mirrored pass only for clips where neither hand is more active "
    "(with --no-handedness: for every clip, twice the cost)."
)


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    flag: str | None = None,
    factory: Any = None,
    resumable: bool = False,
    cli_type: Any = None,
    argument: bool = False,
) -> Any:
    """A config field with everything about it in one place: its default, its help text, and,
    when the command line sets it, its flag (`--lr`, `--eval/--no-eval`). `resumable`: it may
    change when a run is resumed. `cli_type`: what the command line reads when that differs from
    the field's type (a tuple of signers is typed as text: `01,02`). Fields without a flag are
    set in a config file (`--config`)."""
    meta = {"help": help, "flag": flag, "resumable": resumable, "cli_type": cli_type, "argument": argument}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


class Section:
    """Base of the config dataclasses: choice fields are checked generically, and every error
    names its option as the user gives it, by `label`."""

    KEY: ClassVar[str] = ""  # where the section sits in a config file, e.g. "model.input"

    def __post_init__(self) -> None:
        check_choices(self)
        self._validate()

    def _validate(self) -> None:
        """Normalise values and check what the types cannot say (ranges, combinations)."""

    @classmethod
    def label(cls, name: str) -> str:
        """A field as the user names it: its flag (`--drop-path`), else its key in a config
        file (`optim.plateau_factor`)."""
        meta = cls.__dataclass_fields__[name].metadata  # type: ignore[attr-defined]
        if meta.get("flag") and not meta.get("argument"):
            return meta["flag"].split("/")[0]
        return f"{cls.KEY}.{name}" if cls.KEY else name

    def require(self, name: str, ok: bool, rule: str) -> None:
        """Raise `<option> must be <rule>, got <value>` unless `ok`."""
        if not ok:
            raise ConfigError(f"{self.label(name)} must be {rule}, got {getattr(self, name)!r}")


def check_choices(cfg: Any) -> None:
    """Every Literal-typed field of the dataclass `cfg` holds one of its choices (None too
    where the type allows it)."""
    for name, hint in typing.get_type_hints(type(cfg)).items():
        args = typing.get_args(hint)
        choices = [a for a in args if typing.get_origin(a) is Literal]
        if typing.get_origin(hint) is Literal:
            choices = [hint]
        if not choices:
            continue
        allowed = typing.get_args(choices[0])
        value = getattr(cfg, name)
        if value not in allowed and not (value is None and type(None) in args):
            raise ConfigError(f"{cfg.label(name)} must be one of {', '.join(map(str, allowed))}, got {value!r}")


@dataclass(kw_only=True)
class AugmentConfig(Section):
    """Train-time augmentation, applied to whole batches on their device. With the normalized
    input (the default) the spatial ones act on the body frame (units: shoulder widths) after
    handedness is canonicalised; with the raw input, mirror and affine act on image
    coordinates as in the original project and the others are not used."""

    KEY: ClassVar[str] = "data.augment"
    # The probabilities of the augmentations: each in [0, 1], and 0 in off().
    CHANCES: ClassVar[tuple[str, ...]] = (
        "mirror_p",
        "affine_p",
        "hand_p",
        "part_drop_p",
        "frame_drop_p",
        "time_mask_p",
        "point_mask_p",
        "mixup_p",
        "cutmix_p",
    )

    crop_min: float = option(
        0.8, "Temporal crop: each training clip is sampled from a random window of at least this share of it."
    )
    speed_min: float = option(
        0.5, "Slowest playback speed: the speed changes smoothly across the window between speed_min and speed_max."
    )
    speed_max: float = option(1.5, "Fastest playback speed (see speed_min).")
    # The original project used 0.5. Handedness canonicalisation already decides which side
    # signs; mirroring clips at random instead cost 8 points of val accuracy on real data
    # (docs/real_data.md).
    mirror_p: float = option(0.0, "Probability of mirroring a clip left-right (through the layout's mirror map).")
    affine_p: float = option(0.5, "Probability of a random rotation + scale + shift of a clip's x/y.")
    rotate_deg: float = option(15.0, "Largest rotation of the affine augmentation, in degrees.")
    scale_min: float = option(0.85, "Smallest scale of the affine augmentation.")
    scale_max: float = option(1.15, "Largest scale of the affine augmentation.")
    shift: float = option(
        0.1, "Largest shift of the affine augmentation (shoulder widths; image fractions with --input raw)."
    )
    shear: float = option(
        0.0,
        "Largest shear of the affine augmentation (normalized input): x += kx*y and y += ky*x with kx, ky uniform in [-shear, shear] (the GISLR winner used 0.15).",
    )
    hand_p: float = option(0.5, "Probability, per hand, of rotating and stretching its shape about the wrist.")
    hand_rotate_deg: float = option(15.0, "Largest rotation of a hand's shape, in degrees.")
    hand_scale_min: float = option(0.85, "Smallest scale of each axis of a hand's shape (scaled independently).")
    hand_scale_max: float = option(1.15, "Largest scale of each axis of a hand's shape.")
    noise: float = option(0.01, "Standard deviation of Gaussian noise on detected points, in shoulder widths.")
    part_drop_p: float = option(
        0.1,
        "Probability, per clip and part, that a part other than the dominant hand is missing for the whole clip (recording set-ups differ in what the detector finds).",
    )
    frame_drop_p: float = option(0.05, "Probability, per frame and part, that a part is missing in that frame.")
    time_mask_p: float = option(0.5, "Probability of masking one span of frames (every part undetected).")
    time_mask_max: float = option(0.2, "Longest masked span, as a share of the sampled frames.")
    point_mask_p: float = option(
        0.0,
        "Probability of a spatial mask on a clip (normalized input): a random share of its points, up to point_mask_max, is missing for the whole clip.",
    )
    point_mask_max: float = option(0.2, "Largest share of the points a spatial mask hides.")
    # Mixup is the one regulariser of the GISLR winners' that gained on every real set at our
    # 60 epochs (docs/results.md: NSL, Libras and BSL, signer-independent); the others underfit.
    mixup_p: float = option(
        0.5,
        "Probability that a training clip is mixed with another of its batch (mixup over sequences: the model's input features frame by frame, and the loss of both labels, weighted alike).",
    )
    mixup_alpha: float = option(
        0.4, "Mixup's weights: Beta(alpha, alpha), the larger weight on the clip's own features and label."
    )
    cutmix_p: float = option(
        0.0,
        "Probability that a training clip takes a span of frames from another clip of its batch (cutmix over sequences: the model's input features of those frames, and the loss of both labels weighted by the span's share; instead of mixup for that clip).",
    )
    cutmix_max: float = option(0.5, "Longest span cutmix takes from the other clip, as a share of the sampled frames.")

    def _validate(self) -> None:
        for name in (*self.CHANCES, "time_mask_max", "point_mask_max", "cutmix_max"):
            self.require(name, 0.0 <= getattr(self, name) <= 1.0, "in [0, 1]")
        self.require("crop_min", 0 < self.crop_min <= 1, "in (0, 1]")
        for lo, hi in (("scale_min", "scale_max"), ("hand_scale_min", "hand_scale_max"), ("speed_min", "speed_max")):
            if not 0 < getattr(self, lo) <= getattr(self, hi):
                raise ConfigError(
                    f"{self.label(lo)}/{hi} must satisfy 0 < min <= max, got {getattr(self, lo)}..{getattr(self, hi)}"
                )
        for name in ("rotate_deg", "shift", "hand_rotate_deg", "noise"):
            self.require(name, getattr(self, name) >= 0, ">= 0")
        self.require("shear", 0 <= self.shear <= 1, "in [0, 1]")
        self.require("mixup_alpha", self.mixup_alpha > 0, "> 0")

    @classmethod
    def off(cls, **changes: Any) -> AugmentConfig:
        """No augmentation at all: training sees its clips as validation does (with `changes` on top)."""
        none = {"crop_min": 1.0, "speed_min": 1.0, "speed_max": 1.0, "noise": 0.0}
        none |= {name: 0.0 for name in cls.CHANCES}
        return cls(**(none | changes))


@dataclass(kw_only=True)
class DataConfig(Section):
    KEY: ClassVar[str] = "data"

    path: Path | None = option(
        None,
        "Clip store to train on (default: the embedded synthetic set, generated once into the cache).",
        flag="--data",
    )
    signs: tuple[int, ...] | None = option(
        None,
        "1-based sign numbers to train on, e.g. 1-10,15 (default: all); class ids are remapped to 0..K-1.",
        flag="--signs",
        cli_type=str,
    )
    signers: tuple[str, ...] | None = option(
        None, "Signer ids to use, e.g. 01,02 (default: all).", flag="--signers", cli_type=str
    )
    val_signers: tuple[str, ...] | None = option(
        None,
        "Signer-independent validation: validate on these signers, train on the others.",
        flag="--val-signers",
        cli_type=str,
    )
    test_signers: tuple[str, ...] | None = option(
        None,
        "Signer-independent test: hold these signers out of training and validation; test the final model on them.",
        flag="--test-signers",
        cli_type=str,
    )
    val_fraction: float = option(
        0.2,
        "Share of the clips held out for validation (without --val-signers): seeded, stratified by sign, and spread over the signers.",
        flag="--val-fraction",
    )
    # "group" was the only rule before config version 3: each (sign, signer) group gave
    # round(fraction x its size), 0 for groups of 1 or 2 (19 of 747 clips on a real set at 0.2).
    val_split: ValSplit = option(
        "sign",
        "How --val-fraction is allocated: sign (the fraction of all clips, each sign within one clip of its share, spread over signers) or group (round(fraction x size) per (sign, signer); runs before config version 3).",
    )
    num_workers: int | None = option(
        None,
        "DataLoader workers per process (default: 0 on CPU, where the model step needs the cores; on a GPU up to 4, from the cores this process may use).",
        flag="--num-workers",
        resumable=True,
    )
    data_on_device: DataOnDevice = option(
        "auto",
        "auto|yes|no: hold the clips in the device's memory and sample/augment batches there (auto: on a GPU when they take at most half its free memory; never on a CPU).",
        flag="--data-on-device",
        resumable=True,
    )
    cache_dir: Path | None = option(
        None,
        "Cache for the embedded synthetic set (default: $ACCEL_SIGNS_CACHE, $XDG_CACHE_HOME/accel_signs or ~/.cache/accel_signs).",
        flag="--cache-dir",
        resumable=True,
    )
    seq_len: int = option(50, "Frames per sample after TSN sampling.")
    augment: AugmentConfig = option(help="Train-time augmentation.", factory=AugmentConfig)

    def _validate(self) -> None:
        self.path = Path(self.path) if self.path is not None else None
        self.cache_dir = Path(self.cache_dir) if self.cache_dir is not None else None
        if isinstance(self.signs, str):
            self.signs = parse_signs(self.signs)
        elif self.signs is not None:
            self.signs = tuple(int(s) for s in self.signs)
            unique = bool(self.signs) and min(self.signs) >= 1 and len(set(self.signs)) == len(self.signs)
            self.require("signs", unique, "unique 1-based sign numbers")
        for name in ("signers", "val_signers", "test_signers"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, parse_signers(value))
            elif value is not None:
                setattr(self, name, tuple(normalize_signer(str(s)) for s in value))
        self.require("val_fraction", 0.0 < self.val_fraction < 1.0, "between 0 and 1 (exclusive)")
        self.require("num_workers", self.num_workers is None or self.num_workers >= 0, ">= 0")
        self.require("seq_len", self.seq_len >= 1, ">= 1")


@dataclass(kw_only=True)
class InputConfig(Section):
    """What the model sees of the keypoints (computed inside the model; see features.py)."""

    KEY: ClassVar[str] = "model.input"

    kind: InputKind = option(
        "normalized",
        "normalized (body frame, hand shapes, motion, presence) or raw (the original project's image coordinates; needs --no-handedness).",
        flag="--input",
    )
    body_frame: bool = option(
        True,
        "Positions relative to the shoulders' midpoint, in shoulder widths, after undoing the video's aspect stretch; off: relative to the picture's centre, in picture heights.",
    )
    hand_shape: bool = option(
        True, "Each hand's points relative to its wrist, in palm sizes, plus the wrist's position."
    )
    motion: bool = option(True, "First and second differences over the sampled frames.")
    two_frame_motion: bool = option(
        False,
        "Also the 2-frame difference x[t] - x[t-2] over the sampled frames (the GISLR winner's, beside the 1-frame one).",
    )
    face: FacePoints = option(
        "all",
        "The layout's MediaPipe face-mesh points the model sees: all, lips_eyes_nose (the GISLR winner's 40 lip, 2 x 16 eye and 4 nose points, those the layout has), or none (no face token). Not all: an error on a layout without face-mesh points (pose33), where it could change nothing.",
    )
    presence: bool = option(True, "The share of each part's points detected, per frame.")
    handedness: bool = option(
        True,
        "Mirror clips signed with the left hand so the dominant hand is always in the right-hand slot (training, evaluation and predict alike).",
        flag="--handedness/--no-handedness",
    )

    def _validate(self) -> None:
        if self.kind == "raw" and self.handedness:
            raise ConfigError("--input raw feeds the image coordinates as recorded: add --no-handedness")
        if self.kind == "raw":
            for name, off in (("two_frame_motion", False), ("face", "all")):
                self.require(name, getattr(self, name) == off, f"{off!r} with --input raw (the keypoints as recorded)")


@dataclass(kw_only=True)
class ModelConfig(Section):
    KEY: ClassVar[str] = "model"

    # The families are model/registry.py's (a config cannot import the model layer): an unknown
    # name is refused when the model is built.
    family: str = option("STTransformer", "The model family (model/registry.py): STTransformer.")
    size: str = option(
        "s_4_2",
        "STTransformer size {t,s,m,l}_{heads}_{layers} (head width 16/32/64/128), e.g. s_4_2, m_12_10.",
        flag="--model-size",
    )
    # The original project used 0.5; with pre-norm blocks that leaves eval-mode activations far
    # from the training ones and underfits (measured: 0.82 vs 0.97 val accuracy after 10-12 epochs).
    dropout: float = option(0.2, "Dropout rate on the model's residual branches.", flag="--dropout")
    drop_path: float = option(
        0.1, "Stochastic depth: chance of skipping a residual branch, reached in the last block.", flag="--drop-path"
    )
    input: InputConfig = option(help="What the model sees of the keypoints.", factory=InputConfig)
    late_dropout: float = option(
        0.0,
        "Dropout on the pooled clip vector before the classifier, from epoch late_dropout_epoch on (the GISLR winner: 0.8 from epoch 15 of 300); 0: off.",
    )
    late_dropout_epoch: int = option(1, "The first epoch that late_dropout acts in.")
    conv_kernel: int = option(
        0,
        "A temporal depthwise-convolution block before each temporal attention, with this kernel over the frames (odd, 3-49; the GISLR winner: 17): norm, depthwise Conv1D, GELU, pointwise projection, residual. 0: off.",
    )
    conv_blocks: int = option(1, "How many convolution blocks come before each temporal attention (the winner: 3).")
    conv_causal: bool = option(
        False,
        "Causal convolutions (frame t sees frames t-k+1..t, as the winner's) instead of centred ones (t-k/2..t+k/2).",
    )

    def _validate(self) -> None:
        self.size = str(ModelSize.parse(self.size))
        self.require(
            "conv_kernel",
            self.conv_kernel == 0 or (3 <= self.conv_kernel <= 49 and self.conv_kernel % 2 == 1),
            "0 or odd in [3, 49]",
        )
        self.require("conv_blocks", 1 <= self.conv_blocks <= 8, "in [1, 8]")
        self.require("dropout", 0.0 <= self.dropout < 1.0, "in [0, 1)")
        self.require("drop_path", 0.0 <= self.drop_path < 1.0, "in [0, 1)")
        self.require("late_dropout", 0.0 <= self.late_dropout < 1.0, "in [0, 1)")
        self.require("late_dropout_epoch", self.late_dropout_epoch >= 1, ">= 1")


@dataclass(kw_only=True)
class OptimConfig(Section):
    KEY: ClassVar[str] = "optim"

    optimizer: Optimizer = option(
        "adamw",
        "adamw (decoupled weight decay, none on biases and norms) or adam (the original project's: L2 penalty on everything).",
        flag="--optimizer",
    )
    lr: float = option(
        1e-3, "Peak learning rate for one process (scaled by --lr-scaling for N processes).", flag="--lr"
    )
    weight_decay: float = option(
        0.05, "Weight decay (the original project's Adam used 1e-4 as an L2 penalty).", flag="--weight-decay"
    )
    lr_scaling: LrScaling = option(
        "sqrt", "sqrt|linear|none: lr growth with the number of processes.", flag="--lr-scaling"
    )
    max_grad_norm: float | None = option(1.0, "Gradient clipping norm (0 disables).", flag="--max-grad-norm")
    # plateau: with unseen signers in validation the val loss rises early and the lr collapses
    # before the model has learnt (docs/real_data.md).
    schedule: Schedule = option(
        "cosine",
        "cosine (warmup, then cosine decay per step), plateau (the original project's ReduceLROnPlateau on the val loss) or constant (warmup, then flat).",
        flag="--schedule",
    )
    warmup_epochs: float = option(3.0, "Linear lr warmup, in epochs (cosine and constant).", flag="--warmup-epochs")
    label_smoothing: float = option(
        0.1, "Label smoothing of the training loss (validation reports plain cross-entropy).", flag="--label-smoothing"
    )
    ema_decay: float = option(
        0.0,
        "Exponential moving average of the weights, updated every step with this decay (e.g. 0.999; the first steps average faster); validated each epoch beside the weights, and saved as best/ when it validates better. 0: off.",
    )
    awp_lambda: float = option(
        0.0,
        "Adversarial weight perturbation: each step, every trained parameter moves along its gradient by a step of this norm (lambda x g / |g|), and the step is taken with the gradient of the loss there (one more forward and backward pass per step; the GISLR winner: 0.2). 0: off.",
    )
    awp_epoch: int = option(1, "The first epoch that AWP acts in (the GISLR winner: 15).")
    plateau_factor: float = option(0.2, "ReduceLROnPlateau: the factor that cuts the lr.")
    plateau_patience: int = option(3, "ReduceLROnPlateau: epochs without a better val loss before a cut.")
    plateau_threshold: float = option(
        1e-4, "ReduceLROnPlateau: relative improvement of the val loss that resets the patience."
    )

    def _validate(self) -> None:
        self.require("lr", self.lr > 0, "> 0")
        self.require("weight_decay", self.weight_decay >= 0, ">= 0")
        self.require("warmup_epochs", self.warmup_epochs >= 0, ">= 0")
        self.require("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)")
        self.require("max_grad_norm", self.max_grad_norm is None or self.max_grad_norm >= 0, ">= 0")
        if self.max_grad_norm == 0:
            self.max_grad_norm = None
        self.require("plateau_factor", 0 < self.plateau_factor < 1, "in (0, 1)")
        self.require("plateau_threshold", 0 <= self.plateau_threshold < 1, "in [0, 1)")
        self.require("plateau_patience", self.plateau_patience >= 0, ">= 0")
        self.require("ema_decay", 0 <= self.ema_decay < 1, "in [0, 1)")
        self.require("awp_lambda", 0 <= self.awp_lambda <= 1, "in [0, 1]")
        self.require("awp_epoch", self.awp_epoch >= 1, ">= 1")

    def scaled_lr(self, num_processes: int) -> float:
        factor = {"sqrt": num_processes**0.5, "linear": float(num_processes), "none": 1.0}[self.lr_scaling]
        return self.lr * factor


@dataclass(kw_only=True)
class TrainConfig(Section):
    data: DataConfig = option(help="What to train on.", factory=DataConfig)
    model: ModelConfig = option(help="The model.", factory=ModelConfig)
    optim: OptimConfig = option(help="Optimizer and schedule.", factory=OptimConfig)
    num_epochs: int = option(30, "Epochs to train.", flag="--num-epochs", resumable=True)
    batch_size: int = option(
        64, "Batch size per process (the global batch is this x the number of processes).", flag="--batch-size"
    )
    seed: int = option(0, "Seed for the split, initialisation, shuffling, sampling and augmentation.", flag="--seed")
    output_dir: Path = option(Path("runs"), "Folder that holds the run folders.", flag="--output-dir", resumable=True)
    run_name: str | None = option(
        None,
        "Run folder name (default: <timestamp>-signs<K>-<size>); an existing folder is never overwritten.",
        flag="--run-name",
        resumable=True,
    )
    mixed_precision: MixedPrecision = option(
        "auto",
        "auto|no|bf16|fp16; auto takes the accelerate config's, else bf16 on a GPU that has it, fp32 on a CPU.",
        flag="--mixed-precision",
    )
    evaluate: bool = option(
        True,
        "Evaluate the best checkpoint on the test split and draw the plots at the end.",
        flag="--eval/--no-eval",
        resumable=True,
    )
    log_with: tuple[str, ...] = option(
        (),
        "Accelerate trackers for the per-epoch metrics, e.g. tensorboard (comma-separated); metrics.jsonl is always written.",
        flag="--log-with",
        resumable=True,
        cli_type=str,
    )
    compile: bool = option(
        False,
        "torch.compile the model (inductor); the log reports the compile time of the first epoch.",
        flag="--compile",
        resumable=True,
    )
    compile_mode: CompileMode = option(
        "default",
        "torch.compile mode with --compile: default, reduce-overhead (CUDA graphs, pays at small batch on a GPU), max-autotune, max-autotune-no-cudagraphs.",
        flag="--compile-mode",
        resumable=True,
    )
    init_from: str | None = option(
        None,
        "Fine-tune: start from a trained checkpoint (a folder or hf://USER/NAME[@REVISION]); every tensor whose name and shape match is taken over, the classifier head and what does not match are new.",
        flag="--init-from",
    )
    freeze_epochs: int = option(
        0,
        "With --init-from: train only the new parts (head, unmatched tensors) for the first N epochs.",
        flag="--freeze-epochs",
    )
    limit_batches: int | None = option(
        None, "Use only N batches per process of train and val data per epoch (a smoke test).", flag="--limit-batches"
    )
    # Accuracy by default: on signers the model has not seen, the val loss and accuracy
    # disagree about the best epoch (docs/real_data.md); accuracy is what a user wants kept.
    best_metric: BestMetric = option(
        "val_acc",
        "What picks the best checkpoint: val_acc or val_loss; ties go to the better mean of it over best_window epochs, then (val_acc) to the lower val loss.",
        flag="--best-metric",
    )
    # Validation accuracy on a few hundred clips ties often; the mean over the tied epoch and the
    # ones before it measures the weights' neighbourhood on up to best_window times the clips
    # (docs/training.md#choosing-the-best-epoch). 1: the lower val loss breaks ties at once.
    best_window: int = option(
        3,
        "Epochs (the tied one and those before it) whose mean --best-metric breaks a tie in it; 1: no mean (runs before config version 3).",
    )
    debug: bool = option(
        False,
        "One process, fp32, 2 epochs of 5 batches (unless given), num_workers 0, anomaly detection, deterministic algorithms, per-step logs.",
        flag="--debug",
    )

    def _validate(self) -> None:
        self.output_dir = Path(self.output_dir)
        if isinstance(self.log_with, str):
            self.log_with = tuple(t.strip() for t in self.log_with.split(",") if t.strip())
        self.log_with = tuple(self.log_with or ())
        self.require("num_epochs", self.num_epochs >= 1, ">= 1")
        self.require("batch_size", self.batch_size >= 1, ">= 1")
        self.require("freeze_epochs", self.freeze_epochs >= 0, ">= 0")
        if self.freeze_epochs and self.init_from is None:
            raise ConfigError("--freeze-epochs freezes the tensors taken over from --init-from: give --init-from")
        if self.init_from is not None:
            self.init_from = str(self.init_from)
        self.require("limit_batches", self.limit_batches is None or self.limit_batches >= 1, ">= 1")
        self.require("best_window", self.best_window >= 1, ">= 1")
        if self.compile_mode != "default" and not self.compile:
            raise ConfigError(f"--compile-mode {self.compile_mode} needs --compile")
        if self.debug and self.mixed_precision not in ("auto", "no"):
            raise ConfigError(f"--debug runs in full precision; drop --mixed-precision {self.mixed_precision}")
        name = self.run_name
        plain = name is None or (bool(name.strip()) and "/" not in name and name not in (".", ".."))
        self.require("run_name", plain, "a plain folder name")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths as strings, tuples as lists. Leaves out data.cache_dir, a path
        of this machine's that a config reused elsewhere should not carry."""
        out = json.loads(json.dumps(dataclasses.asdict(self), default=str))
        out["data"].pop("cache_dir")
        return {"version": CONFIG_VERSION, **out}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        """Inverse of to_dict (an older version upgraded); unknown keys are errors, not
        silently ignored."""
        return from_dict(cls, current_version(raw))


@dataclass(kw_only=True)
class EvalConfig(Section):
    checkpoint: Path | str = option(
        help="Checkpoint folder (model.safetensors + config.json), e.g. runs/<run>/best, or a Hub model hf://USER/NAME[@REVISION].",
        flag="checkpoint",
        argument=True,
        cli_type=str,
    )
    data: Path | None = option(None, "Clip store (default: the one the checkpoint was trained on).", flag="--data")
    split: str = option("test", "Split of the store to evaluate.", flag="--split")
    signers: tuple[str, ...] | None = option(
        None,
        "Signer ids, e.g. 03 (default: the checkpoint's test signers if it was trained signer-independently, else those it was trained on).",
        flag="--signers",
        cli_type=str,
    )
    output: Path | None = option(
        None, "Output folder (default: <run>/eval-<split>, or <checkpoint>/eval-<split>).", flag="--output"
    )
    batch_size: int = option(256, "Batch size per process.", flag="--batch-size")
    num_workers: int | None = option(
        None,
        "DataLoader workers per process (default: 0 on CPU; on a GPU up to 4, from the cores this process may use).",
        flag="--num-workers",
    )
    plots: bool = option(
        True, "Draw the confusion matrix, per-class F1 and top-confusion plots.", flag="--plots/--no-plots"
    )
    mixed_precision: EvalPrecision = option(
        "no",
        "no|bf16|fp16: the forward pass's precision. no (fp32) gives the same numbers on any device; bf16 or fp16 "
        "repeats how a mixed-precision run validated, to reproduce its logged val loss.",
        flag="--mixed-precision",
    )
    tta_flip: bool = option(False, TTA_FLIP_HELP, flag="--tta-flip/--no-tta-flip")

    def _validate(self) -> None:
        if not str(self.checkpoint).startswith("hf:/"):  # a Hub id stays text (a Path would fold its //)
            self.checkpoint = Path(self.checkpoint)
        self.data = Path(self.data) if self.data is not None else None
        self.output = Path(self.output) if self.output is not None else None
        if isinstance(self.signers, str):
            self.signers = parse_signers(self.signers)
        self.require("batch_size", self.batch_size >= 1, ">= 1")
        self.require("num_workers", self.num_workers is None or self.num_workers >= 0, ">= 0")

    def output_dir(self) -> Path:
        if self.output is not None:
            return self.output
        if not isinstance(self.checkpoint, Path):  # a Hub model: beside the caller, not in the cache
            return Path(
                f"eval-{self.split}-{str(self.checkpoint).split('/', 2)[-1].replace('/', '--').replace('@', '-')}"
            )
        run = self.checkpoint.parent
        return (
            run / f"eval-{self.split}" if (run / "metrics.jsonl").exists() else self.checkpoint / f"eval-{self.split}"
        )


# Values of fields as the command line and config files write them.


def parse_signs(text: str) -> tuple[int, ...]:
    """`1-10,15` -> (1, ..., 10, 15): 1-based sign numbers, sorted and unique."""
    signs: set[int] = set()
    for token in text.split(","):
        token = token.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", token)
        if not m:
            raise ConfigError(f"--signs: cannot read {token!r} in {text!r}: use numbers and ranges like 1-10,15")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if lo < 1 or hi < lo:
            raise ConfigError(f"--signs: {token!r} is not a range of 1-based sign numbers (lo <= hi, lo >= 1)")
        signs.update(range(lo, hi + 1))
    return tuple(sorted(signs))


def normalize_signer(token: str) -> str:
    """Signer ids are strings like `01`; a bare number is zero-padded to two digits."""
    token = token.strip()
    return f"{int(token):02d}" if token.isdigit() else token


def parse_signers(text: str) -> tuple[str, ...]:
    """`01,02` (or `1,2`) -> ("01", "02")."""
    signers = tuple(dict.fromkeys(normalize_signer(t) for t in text.split(",") if t.strip()))
    if not signers:
        raise ConfigError(f"--signers: no signer in {text!r}: use ids like 01,02")
    return signers
