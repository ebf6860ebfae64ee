"""An exponential moving average (EMA) of the model's weights (OptimConfig.ema_decay), and mixup
and cutmix over sequences (AugmentConfig.mixup_p, cutmix_p): the training candidates that live in
the loop rather than in the model or the augmentation. All are tensor ops on the batch's device,
with no host sync and no Python per sample."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch

from accel_signs.config import AugmentConfig

UPDATES = "_updates"  # the number of updates, beside the tensors in the saved state


class WeightAverage:
    """An EMA of a model's floating-point parameters, updated after every optimizer step.

    The decay ramps up as min(decay, (1 + n) / (10 + n)) over the first n updates, so the average
    follows the fast early training instead of staying near the initial weights. Buffers
    (BatchNorm's statistics) are not averaged: the model's own are used with the average."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay, self.updates = decay, 0
        self.names = [name for name, p in model.named_parameters() if p.dtype.is_floating_point]
        params = dict(model.named_parameters())
        self.params = [params[name] for name in self.names]
        self.average = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current weights (one fused op over all of them)."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))  # a Python number: no sync
        torch._foreach_lerp_(self.average, [p.detach() for p in self.params], 1.0 - decay)

    @contextmanager
    @torch.no_grad()
    def swapped_in(self) -> Iterator[None]:
        """The model holds the average inside the block, its own weights again after it."""
        own = [p.detach().clone() for p in self.params]
        torch._foreach_copy_([p.detach() for p in self.params], self.average)
        try:
            yield
        finally:
            torch._foreach_copy_([p.detach() for p in self.params], own)

    def state(self) -> dict[str, torch.Tensor]:
        """The averaged tensors on the CPU by parameter name, and the number of updates: for state/."""
        tensors = {n: a.detach().to("cpu").contiguous() for n, a in zip(self.names, self.average)}
        return {**tensors, UPDATES: torch.tensor(self.updates, dtype=torch.int64)}

    @torch.no_grad()
    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what state() gave (a KeyError names what is missing)."""
        missing = sorted({*self.names, UPDATES} - set(tensors))
        if missing:
            raise KeyError(f"the saved weight average lacks {', '.join(missing[:3])}")
        for name, average in zip(self.names, self.average):
            average.copy_(tensors[name])
        self.updates = int(tensors[UPDATES])


def mixup(labels: torch.Tensor, cfg: AugmentConfig) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(partner, weight) for STTransformer's `mix`, or None when mixup is off: each clip is mixed,
    with probability mixup_p, with a random other clip of the batch, at a weight drawn from
    Beta(alpha, alpha) and folded to [0.5, 1] (its own label stays the larger part); weight 1
    where it is not mixed. Drawn from the device's global RNG (saved with the training state)."""
    if cfg.mixup_p <= 0:
        return None
    b, dev = labels.shape[0], labels.device
    partner = torch.randperm(b, device=dev)
    alpha = torch.full((b,), cfg.mixup_alpha, device=dev)
    # Unvalidated: checking the parameters would wait for the device (a host sync every step).
    weight = torch.distributions.Beta(alpha, alpha, validate_args=False).sample()
    weight = torch.maximum(weight, 1 - weight)
    weight = torch.where(torch.rand(b, device=dev) < cfg.mixup_p, weight, torch.ones_like(weight))
    return partner, weight


def mix_batch(labels: torch.Tensor, frames: int, cfg: AugmentConfig) -> BatchMix | None:
    """What mixup and cutmix do to a batch of `frames` sampled frames, or None when both are off.

    Each clip has one partner (a random permutation of the batch). Cutmix, with probability
    cutmix_p: a span of up to cutmix_max of the frames, at a random place, takes the partner's
    features, and the clip's own label weighs 1 - the span's share. Otherwise mixup, as `mixup`
    says. Each draws only when it is on, so with cutmix off the random stream is mixup's alone."""
    if cfg.mixup_p <= 0 and cfg.cutmix_p <= 0:
        return None
    mixed = mixup(labels, cfg)
    b, dev = labels.shape[0], labels.device
    partner, weight = mixed if mixed is not None else (torch.randperm(b, device=dev), torch.ones(b, device=dev))
    if cfg.cutmix_p <= 0:
        return BatchMix(partner, weight, weight)
    r = torch.rand(b, 3, device=dev)
    span = (r[:, 1] * cfg.cutmix_max * frames).floor()  # (B,) frames, 0 to max
    start = (r[:, 2] * (frames - span + 1)).floor()
    frame = torch.arange(frames, device=dev)[None, :]
    inside = (frame >= start[:, None]) & (frame < (start + span)[:, None])  # (B, T)
    cut = r[:, 0] < cfg.cutmix_p  # (B,)
    features = torch.where(cut[:, None], (~inside).to(weight.dtype), weight[:, None])  # (B, T)
    return BatchMix(partner, features, torch.where(cut, 1 - span / frames, weight))


class BatchMix(NamedTuple):
    """A mixed batch: each clip's partner (B,) in the batch; the weight of the clip's own input
    features against its partner's, per clip (B,) or per frame (B, T) (the model's `mix` is
    (partner, features)); and the weight of its own label in the loss (B,)."""

    partner: torch.Tensor
    features: torch.Tensor
    label: torch.Tensor


def mixed_losses(losses: torch.Tensor, partner_losses: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-clip loss of a mixed batch: weight x the loss of its own label + (1 - weight) x its partner's."""
    return torch.lerp(partner_losses, losses, weight.to(losses.dtype))
