"""Fine-tuning: start a model from a trained checkpoint's weights (`train --init-from`).

The classifier head is always new. Every other tensor (parameters and buffers) whose name and
shape match the source's is taken over; the rest (another layout's part projections, say) keep
their fresh initialisation and are reported. `--freeze-epochs N` trains only the new tensors for
the first N epochs: the taken-over ones get no gradient (so no optimizer step, no weight decay)
and norm layers made only of them keep their running statistics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from accel_signs.core.errors import CheckpointError
from accel_signs.model.checkpoint import MODEL_FILE, checkpoint_folder, read_checkpoint_meta, weights_id

logger = logging.getLogger(__name__)

HEAD = "head."  # the classifier: always new


def init_from_checkpoint(model: torch.nn.Module, spec: str) -> dict[str, Any]:
    """Copy the matching tensors of checkpoint `spec` (a folder or hf://user/name[@rev]) into
    `model`; returns the record of what was done (the run keeps it in config.json)."""
    source = checkpoint_folder(spec)
    meta = read_checkpoint_meta(source.path)
    try:
        theirs = load_file(source.path / MODEL_FILE)
    except (FileNotFoundError, SafetensorError, OSError) as e:
        raise CheckpointError(f"--init-from {spec}: cannot read {MODEL_FILE} ({e})") from None
    copied, new = match_tensors(model.state_dict(), theirs)
    mismatches = [f"{name}: {why}" for name, why in new.items() if not name.startswith(HEAD)]
    if not any(name.startswith("blocks.") for name in copied):
        raise CheckpointError(
            f"--init-from {spec}: nothing to transfer: none of the transformer blocks' tensors match (the source is "
            f"model size {meta.model.size} on layout {meta.layout.name}; give the same --model-size). "
            f"First mismatches: {'; '.join(mismatches[:3]) or 'none'}"
        )
    model.load_state_dict({name: theirs[name] for name in copied}, strict=False)
    for name, why in new.items():
        logger.info("--init-from: %s is new (%s)", name, why)
    logger.info(
        "--init-from %s: took over %d tensors, %d are new (the head and %d that do not match)",
        spec,
        len(copied),
        len(new),
        len(new) - sum(n.startswith(HEAD) for n in new),
    )
    return {
        "spec": str(spec),
        **source.record(),
        "checkpoint_id": f"sha256:{weights_id(source.path)}",
        "source_classes": meta.model.num_classes,
        "source_layout": meta.layout.name,
        "source_size": meta.model.size,
        "source_store": meta.data.store,
        "transferred": len(copied),
        "new": list(new),
    }


def match_tensors(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> tuple[list[str], dict[str, str]]:
    """(names to copy, {name: why it is new}) in the order of `ours`."""
    copied: list[str] = []
    new: dict[str, str] = {}
    for name, tensor in ours.items():
        other = theirs.get(name)
        if name.startswith(HEAD):
            new[name] = "the classifier head"
        elif other is None:
            new[name] = "not in the source"
        elif other.shape != tensor.shape:
            new[name] = f"shape {tuple(other.shape)} in the source, {tuple(tensor.shape)} here"
        else:
            copied.append(name)
    return copied, new


@dataclass
class Freeze:
    """The taken-over parameters, held still while the new parts train."""

    params: list[torch.nn.Parameter]
    norms: list[torch.nn.Module]  # norm layers whose every parameter is frozen: kept in eval mode

    @classmethod
    def of(cls, model: torch.nn.Module, record: dict[str, Any]) -> Freeze:
        """From the record init_from_checkpoint returned (`model` unwrapped: plain names)."""
        new = set(record["new"])
        frozen = {name for name, _ in model.named_parameters() if name not in new}
        norms = [
            m
            for prefix, m in model.named_modules()
            if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm))
            and all(f"{prefix}.{n}" in frozen for n, _ in m.named_parameters())
        ]
        return cls([p for name, p in model.named_parameters() if name in frozen], norms)

    def hold(self) -> None:
        """After model.train(): frozen norm layers keep their running statistics."""
        for m in self.norms:
            m.eval()

    def drop_grads(self) -> None:
        """After backward, before clipping and the optimizer step: no gradient, so no update (Adam
        and AdamW skip a parameter whose grad is None, weight decay included)."""
        for p in self.params:
            p.grad = None
