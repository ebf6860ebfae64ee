"""Optimizer and learning-rate schedule, built from OptimConfig."""

from __future__ import annotations

import math
from typing import Any

import torch

from accel_signs.config import OptimConfig


def make_optimizer(cfg: OptimConfig, model: torch.nn.Module, lr: float, fused: bool) -> torch.optim.Optimizer:
    """AdamW without decay on biases and norm weights (decaying a LayerNorm's gain toward 0
    only fights the normalisation), or the original project's Adam with an L2 penalty on everything."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=cfg.weight_decay, fused=fused)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, fused=fused)


class Schedule:
    """The learning rate over a run: warmup then cosine decay or flat, set every optimizer step;
    or the original project's ReduceLROnPlateau, stepped once per epoch on the global val loss.

    Not passed to `accelerator.prepare`: a prepared scheduler steps once per process, which
    would run the warmup N times too fast and divide the plateau patience by N.
    """

    def __init__(self, cfg: OptimConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int, num_epochs: int):
        self.cfg, self.optimizer = cfg, optimizer
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.total = max(1, steps_per_epoch * num_epochs)
        self.warmup = cfg.warmup_epochs * steps_per_epoch
        self.step_count = 0
        self.plateau = None
        if cfg.schedule == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="min",
                factor=cfg.plateau_factor,
                patience=cfg.plateau_patience,
                threshold=cfg.plateau_threshold,
            )
        else:
            self._apply()

    def factor(self, step: int) -> float:
        """The lr of optimizer step `step` (0-based) as a share of the peak."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1.0, self.total - self.warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def _apply(self) -> None:
        f = self.factor(self.step_count)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * f

    def step_batch(self) -> None:
        """After each optimizer step."""
        if self.plateau is None:
            self.step_count += 1
            self._apply()

    def step_epoch(self, val_loss: float) -> None:
        """After each epoch's validation (the same value on every process)."""
        if self.plateau is not None:
            self.plateau.step(val_loss)

    def state_dict(self) -> dict[str, Any]:
        if self.plateau is not None:
            return self.plateau.state_dict()
        return {"schedule": self.cfg.schedule, "step_count": self.step_count, "base_lrs": self.base_lrs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.plateau is not None:
            self.plateau.load_state_dict(state)
        else:
            self.step_count, self.base_lrs = int(state["step_count"]), list(state["base_lrs"])
            self._apply()
