"""accel_signs: train sign-language recognition models on MediaPipe keypoint sequences
with Hugging Face Accelerate.

    from accel_signs import TrainConfig, train
    best_checkpoint = train(TrainConfig(num_epochs=20))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from accel_signs.core import __version__

# Imported on first use, so `import accel_signs` (and `accel-signs --help`) stays fast.
_LAZY = {
    "train": ("accel_signs.training.loop", "train"),
    "TrainConfig": ("accel_signs.config", "TrainConfig"),
    "DataConfig": ("accel_signs.config", "DataConfig"),
    "ModelConfig": ("accel_signs.config", "ModelConfig"),
    "OptimConfig": ("accel_signs.config", "OptimConfig"),
    "AugmentConfig": ("accel_signs.config", "AugmentConfig"),
    "load_checkpoint": ("accel_signs.model.checkpoint", "load_checkpoint"),
    "open_store": ("accel_signs.data.store", "open_store"),
}

if TYPE_CHECKING:
    from accel_signs.config import AugmentConfig, DataConfig, ModelConfig, OptimConfig, TrainConfig
    from accel_signs.data.store import open_store
    from accel_signs.model.checkpoint import load_checkpoint
    from accel_signs.training.loop import train

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'accel_signs' has no attribute {name!r}")
