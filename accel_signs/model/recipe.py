"""The recipe a checkpoint was trained with: the training settings of its resolved TrainConfig
(epochs, batch, optimizer, schedule, regularisation, averaging, augmentation, ...) and what the
run resolved them to (processes, the global batch, the peak lr, the precision). Derived from the
config's own fields, so an option added to the config is in every recipe written after it;
`info` and the model card show it (`lines`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from accel_signs.config import TrainConfig, config_fields, get_path

# The config's settings that are not how the model was trained: which data (the checkpoint's
# `data` record has it), where the run ran and what it wrote, and the model's shape and input
# (its `model` record).
NOT_RECIPE = frozenset(
    {
        "data.path",
        "data.signs",
        "data.signers",
        "data.val_signers",
        "data.test_signers",
        "data.val_fraction",
        "data.val_split",
        "data.num_workers",
        "data.data_on_device",
        "data.cache_dir",
        "data.seq_len",
        "model.family",
        "model.size",
        "output_dir",
        "run_name",
        "evaluate",
        "log_with",
        "compile",
        "compile_mode",
        "debug",
    }
)
NOT_RECIPE_PREFIXES = ("model.input.",)
AUGMENT = "data.augment."


@dataclass(frozen=True)
class Recipe:
    """What a model was trained with. `settings`: dotted config key -> value; `changed`: the keys
    whose values differed from the defaults of the accel_signs that trained it."""

    settings: Mapping[str, Any]
    changed: tuple[str, ...]
    processes: int
    global_batch_size: int
    peak_lr: float
    precision: str

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": dict(self.settings),
            "changed": list(self.changed),
            "processes": self.processes,
            "global_batch_size": self.global_batch_size,
            "peak_lr": self.peak_lr,
            "precision": self.precision,
        }

    @classmethod
    def from_json(cls, raw: Any) -> Recipe:
        """Parse config.json's `recipe`; a ValueError says what is wrong."""
        if not isinstance(raw, dict):
            raise ValueError(f"must be an object, got {type(raw).__name__}")
        settings, changed = raw.get("settings"), raw.get("changed")
        if not isinstance(settings, dict) or not all(isinstance(k, str) for k in settings):
            raise ValueError("settings must be an object of setting: value")
        if not isinstance(changed, list) or not all(isinstance(k, str) for k in changed):
            raise ValueError("changed must be a list of setting names")
        for key, kinds in (("processes", int), ("global_batch_size", int), ("peak_lr", (int, float))):
            if not isinstance(raw.get(key), kinds) or isinstance(raw.get(key), bool):
                raise ValueError(f"{key} must be a number, got {raw.get(key)!r}")
        if not isinstance(raw.get("precision"), str):
            raise ValueError(f"precision must be text, got {raw.get('precision')!r}")
        return cls(
            settings,
            tuple(changed),
            raw["processes"],
            raw["global_batch_size"],
            float(raw["peak_lr"]),
            raw["precision"],
        )

    def lines(self, ema_weights: bool) -> list[str]:
        """The recipe as a few lines of text; `ema_weights`: the checkpoint holds the weight average."""
        s = self.settings

        def get(key: str) -> Any:
            return s.get(key, "?")

        def rate(key: str, off: str = "off") -> str:
            return off if not s.get(key) else f"{s[key]:g}" if isinstance(s[key], float) else str(s[key])

        warmup = f" after {get('optim.warmup_epochs')} warm-up epochs" if s.get("optim.schedule") != "plateau" else ""
        late = rate("model.late_dropout")
        if s.get("model.late_dropout"):
            late += f" from epoch {get('model.late_dropout_epoch')}"
        mixup = rate(AUGMENT + "mixup_p") + (
            f" (alpha {get(AUGMENT + 'mixup_alpha')})" if s.get(AUGMENT + "mixup_p") else ""
        )
        cutmix = rate(AUGMENT + "cutmix_p") + (
            f" (spans to {get(AUGMENT + 'cutmix_max')})" if s.get(AUGMENT + "cutmix_p") else ""
        )
        awp = rate("optim.awp_lambda")
        if s.get("optim.awp_lambda"):
            awp += f" from epoch {get('optim.awp_epoch')}"
        ema = rate("optim.ema_decay")
        if s.get("optim.ema_decay"):
            ema += "; the checkpoint holds " + (
                "the average" if ema_weights else "the trained weights (the average did not validate better)"
            )
        mixing = tuple(AUGMENT + k for k in ("mixup_p", "mixup_alpha", "cutmix_p", "cutmix_max"))
        augment = [k for k in self.changed if k.startswith(AUGMENT) and k not in mixing]
        shown = {
            "num_epochs", "batch_size", "seed", "mixed_precision", "best_metric", "best_window",
            *(f"optim.{k}" for k in ("optimizer", "lr", "schedule", "warmup_epochs", "weight_decay", "label_smoothing", "max_grad_norm", "ema_decay", "awp_lambda", "awp_epoch")),
            *(f"model.{k}" for k in ("dropout", "drop_path", "late_dropout", "late_dropout_epoch")),
            *mixing,
        }  # fmt: skip
        other = [k for k in self.changed if k not in shown and not k.startswith(AUGMENT)]
        return [
            f"{get('num_epochs')} epochs, batch {get('batch_size')} x {self.processes} process(es) = "
            f"{self.global_batch_size}, seed {get('seed')}, precision {'fp32' if self.precision == 'no' else self.precision}",
            f"{get('optim.optimizer')} lr {get('optim.lr')} (peak {self.peak_lr:.3g}), {get('optim.schedule')} "
            f"schedule{warmup}, weight decay {get('optim.weight_decay')}, label smoothing "
            f"{get('optim.label_smoothing')}, gradient clipping {rate('optim.max_grad_norm')}",
            f"dropout {get('model.dropout')}, drop-path {get('model.drop_path')}, late dropout {late}, mixup {mixup}, "
            f"cutmix {cutmix}, AWP {awp}",
            f"weight average (EMA) {ema}",
            f"best epoch by {get('best_metric')} (ties: the mean over {get('best_window')} epochs)",
            "augmentation: " + (_values(s, augment) + " (the rest as default)" if augment else "the defaults"),
            *([f"also changed from the defaults: {_values(s, other)}"] if other else []),
        ]


def _values(settings: Mapping[str, Any], keys: list[str]) -> str:
    return ", ".join(f"{k.removeprefix(AUGMENT)} {settings.get(k)}" for k in keys)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def in_recipe(key: str) -> bool:
    return key not in NOT_RECIPE and not key.startswith(NOT_RECIPE_PREFIXES)


def recipe_of(cfg: TrainConfig, runtime: Mapping[str, Any]) -> Recipe:
    """The recipe of a run of `cfg`; `runtime`: what it resolved to (training/run.py's Runtime)."""
    settings, changed = {}, []
    for path, f in config_fields(TrainConfig):
        key = ".".join(path)
        if not in_recipe(key):
            continue
        value = _jsonable(get_path(cfg, path))
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        settings[key] = value
        if value != _jsonable(default):
            changed.append(key)
    processes = int(runtime.get("num_processes") or 1)
    return Recipe(
        settings,
        tuple(changed),
        processes,
        int(runtime.get("global_batch_size") or cfg.batch_size * processes),
        float(runtime.get("lr") or cfg.optim.scaled_lr(processes)),
        str(runtime.get("mixed_precision") or cfg.mixed_precision),
    )
