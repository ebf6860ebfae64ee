"""The model families: a family is one module (its nn.Module class) plus one entry here. Training
builds its model through `build_model` (ModelConfig.family picks the family) and a checkpoint
records the family's name (config.json's `model.class`), which `family` turns back into the class
that rebuilds it.

A family's class provides `from_config(model_cfg, num_classes, layout, seq_len)` and a
`forward(x, aspect, augment=None, mix=None)` on raw keypoints (B, T, points x channels); see
docs/model.md#model-families for the rest of what the loop, inference and export use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from accel_signs.config import ModelConfig
from accel_signs.core.errors import ConfigError
from accel_signs.data.layout import KeypointLayout
from accel_signs.model.transformer import STTransformer


class ModelClass(Protocol):
    """What a family's class provides to build a model (the class itself is an nn.Module)."""

    @classmethod
    def from_config(cls, cfg: ModelConfig, num_classes: int, layout: KeypointLayout, seq_len: int) -> nn.Module: ...


@dataclass(frozen=True)
class ModelFamily:
    """One model family: its name (what checkpoints record as `model.class`), its class, and how
    its checkpoints map onto ModelConfig."""

    name: str
    cls: type
    # The hyperparameters an older checkpoint does not record, with the values its model was
    # built with: a new ModelConfig field that changes the model goes here with its "off" value,
    # so checkpoints written before it still rebuild exactly.
    absent: Mapping[str, Any] = field(default_factory=dict)
    # ModelConfig fields the training loop applies and the built model does not depend on (late
    # dropout's rate is set per epoch): a checkpoint does not record them as hyperparameters.
    training_only: frozenset[str] = frozenset()

    def hyperparameters(self, cfg: ModelConfig) -> dict[str, Any]:
        """What a checkpoint records to rebuild this family's model from `cfg` (JSON-ready)."""
        return {k: v for k, v in dataclasses.asdict(cfg).items() if k != "family" and k not in self.training_only}


FAMILIES: dict[str, ModelFamily] = {
    "STTransformer": ModelFamily(
        "STTransformer",
        STTransformer,
        # Before drop-path and the input features: no stochastic depth, raw image coordinates.
        absent={"drop_path": 0.0, "input": {"kind": "raw", "handedness": False}},
        training_only=frozenset({"late_dropout", "late_dropout_epoch"}),
    ),
}


def register(family: ModelFamily) -> None:
    """Add a family (a plug-in's, or a test's); its name must be new."""
    if family.name in FAMILIES:
        raise ConfigError(f"model family {family.name!r} is already registered")
    FAMILIES[family.name] = family


def unregister(name: str) -> None:
    """Remove a family that `register` added."""
    FAMILIES.pop(name, None)


def known_families() -> list[str]:
    return sorted(FAMILIES)


def get_family(name: str) -> ModelFamily:
    """The family called `name`; a ConfigError naming the known ones if there is none."""
    try:
        return FAMILIES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown model family {name!r} (known: {', '.join(known_families())})") from None


def build_model(cfg: ModelConfig, num_classes: int, layout: KeypointLayout, seq_len: int) -> nn.Module:
    """A new model of the family `cfg.family`, with fresh weights."""
    return get_family(cfg.family).cls.from_config(cfg, num_classes, layout, seq_len)
