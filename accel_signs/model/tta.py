"""Test-time flip averaging (`evaluate`, `predict` and `serve` with --tta-flip): the class
probabilities of a clip and of its mirror image (through the layout's mirror map), averaged.

With handedness canonicalisation (the default input) the model mirrors every clip whose left-hand
slot is the more active one into the right-handed frame itself, so a clip and its mirror image give
the same input and the same output (to float rounding): averaging them changes nothing, and the
second pass is skipped for those clips. It runs only for the clips the canonicalisation leaves as
recorded because neither hand is more active (a tie: no hand seen, or both hanging low), and for
every clip of a model without it (--no-handedness, the raw input, a layout without hands)."""

from __future__ import annotations

import logging

import torch

from accel_signs.data.sampling import mirror
from accel_signs.model.checkpoint import Checkpoint

logger = logging.getLogger(__name__)


def mirrors_back(model: torch.nn.Module) -> bool:
    """Whether the model's input canonicalises handedness (so it undoes a mirror itself)."""
    features = model.features
    return features.cfg.kind != "raw" and features.cfg.handedness and bool(features.hands)


def needs_flip(model: torch.nn.Module, x: torch.Tensor, aspect: torch.Tensor | None) -> torch.Tensor:
    """(B,) bool: the clips of x (B, T, P*C) whose mirror image the model does not map back onto
    them, i.e. those a flip pass can change."""
    if not mirrors_back(model):
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    b, t, _ = x.shape
    score = model.features.dominance(*model.features.canonical(x.view(b, t, model.points, model.channels), aspect))
    return score[:, 0] == score[:, 1]  # a tie keeps the clip as recorded: its mirror stays mirrored


@torch.no_grad()
def flip_averaged(
    model: torch.nn.Module, x: torch.Tensor, aspect: torch.Tensor | None, mirror_index: torch.Tensor
) -> tuple[torch.Tensor, int]:
    """(class probabilities (B, classes) averaged over each clip of x (B, T, P*C) and its mirror
    image, the number of clips that needed the second pass). The others' probabilities are their
    own: their mirror gives the same ones."""
    probs = model(x, aspect).float().softmax(-1)
    picked = needs_flip(model, x, aspect).nonzero().squeeze(1)  # a host sync: inference only
    if picked.numel() == 0:
        return probs, 0
    b, t, _ = x.shape
    flipped = mirror(x[picked].view(-1, t, model.points, model.channels), mirror_index.to(x.device)).flatten(2)
    other = model(flipped, aspect[picked] if aspect is not None else None).float().softmax(-1)
    probs[picked] = (probs[picked] + other) / 2
    return probs, int(picked.numel())


def flip_index(ckpt: Checkpoint, tta_flip: bool) -> torch.Tensor | None:
    """The layout's mirror map that flip_averaged takes for --tta-flip (None without it); logs
    what the option will cost with this checkpoint."""
    if not tta_flip:
        return None
    if mirrors_back(ckpt.model):
        logger.info(
            "--tta-flip: %s canonicalises handedness, so a clip and its mirror image give the same output; "
            "only clips where neither hand is more active get the mirrored pass",
            ckpt.path,
        )
    else:
        logger.info("--tta-flip: every clip gets a second, mirrored pass")
    return torch.tensor(ckpt.layout.mirror, dtype=torch.long)
