"""Adversarial weight perturbation (AWP; OptimConfig.awp_lambda, awp_epoch), as the Kaggle GISLR
winner trained with it (lambda 0.2 from epoch 15; hoyso48's tf-utils AWP): each step, after the
clean backward pass, every trained parameter moves along its own gradient by a step of norm
lambda (lambda x g / |g|), the same batch goes through again, and the step is taken with the
gradient of that adversarial loss at the weights as they were. It costs one more forward and
backward pass per step while it is on.

The step is absolute, as the winner's: a first version scaled it by each weight matrix's norm
(lambda x |w| g / |g|, lambda 0.2 moving every matrix by a fifth of itself), and training
collapsed to chance within a few epochs of AWP starting (docs/results.md).

Tensor ops on the model's device, one fused op per kind over all the parameters: no host sync and
no Python per sample."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

# Added to |g| so a zero gradient gives a zero step, not 0/0.
EPS = 1e-12


class AdversarialWeights:
    """Perturbs a model's trained parameters (every one, as the winner's: weights, biases and norm
    gains) along their gradients, and puts every parameter and buffer back bit for bit afterwards."""

    def __init__(self, model: torch.nn.Module, lam: float):
        self.lam = lam
        self.params = [p for p in model.parameters() if p.requires_grad]
        # BatchNorm's running statistics: the adversarial pass must not move them a second time.
        self.buffers = list(model.buffers())

    @contextmanager
    @torch.no_grad()
    def perturbed(self, optimizer: torch.optim.Optimizer) -> Iterator[None]:
        """Inside the block the weights are perturbed along the gradients the clean pass left
        (those without one, e.g. frozen by --freeze-epochs, stay) and every gradient is cleared,
        so what the block's backward pass leaves is the adversarial gradient alone; after it the
        weights and buffers are what they were before the block, exactly (copied back, not
        subtracted)."""
        params = [p for p in self.params if p.grad is not None]
        own = [p.detach().clone() for p in params]
        stats = [b.detach().clone() for b in self.buffers]
        if params:
            grads = [p.grad.detach().float() for p in params]
            grad_norms = torch.stack(torch._foreach_norm(grads))
            scales = self.lam / (grad_norms + EPS)  # (params,), on the device: no sync
            steps = torch._foreach_mul(grads, list(scales.unbind()))
            torch._foreach_add_([p.detach() for p in params], [s.to(p.dtype) for s, p in zip(steps, params)])
        optimizer.zero_grad(set_to_none=True)
        try:
            yield
        finally:
            if params:
                torch._foreach_copy_([p.detach() for p in params], own)
            for buffer, saved in zip(self.buffers, stats):
                buffer.copy_(saved)


def awp_active(lam: float, first_epoch: int, epoch: int) -> bool:
    """Whether AWP acts in `epoch`."""
    return lam > 0 and epoch >= first_epoch


def rng_snapshot(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The global RNG states the augmentation and dropout draw from (the CPU's, and the device's
    on a GPU), so the adversarial pass sees the same augmented batch and dropout masks."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def rng_restore(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)
