"""Run under `accelerate launch` by test_multiprocess: one epoch of the real train_one_epoch with
a model whose per-sample loss does not depend on the batch (no BatchNorm, no dropout) and a zero
learning rate, so 1 and N processes must report the same mean loss over the same clips."""

import json
import sys
from pathlib import Path

import torch
from torch import nn

from accel_signs.config import AugmentConfig, DataConfig, OptimConfig, TrainConfig
from accel_signs.core.collective import exit_rank
from accel_signs.data.augment import Augmenter
from accel_signs.data.training import training_data
from accel_signs.training.loop import make_accelerator, train_one_epoch
from accel_signs.training.optim import Schedule


class PerSample(nn.Module):
    """Logits from each clip alone."""

    def __init__(self, features: int, classes: int):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(features, classes)

    def forward(self, x, aspect=None, augment=None):  # (B, T, F) -> (B, classes)
        return self.linear(x.mean(dim=1))


def main() -> None:
    store, out = Path(sys.argv[1]), Path(sys.argv[2])
    off = AugmentConfig.off()
    cfg = TrainConfig(
        data=DataConfig(path=store, augment=off),
        batch_size=8,
        num_epochs=1,
        optim=OptimConfig(schedule="constant", warmup_epochs=0.0, label_smoothing=0.0),
    )
    accelerator = make_accelerator(cfg)
    data = training_data(cfg, accelerator)
    # TSN sampling at bin centres (no random draws): the same input for a clip on every process.
    data.train_loader.dataset.random = False
    model = PerSample(data.layout.num_points * 4, data.classes.num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    model, optimizer, loader = accelerator.prepare(model, optimizer, data.train_loader)
    schedule = Schedule(cfg.optim, optimizer, len(loader), 1)
    augment = Augmenter(cfg.data.augment, data.layout, "raw")
    loss, seen = train_one_epoch(accelerator, model, (optimizer, schedule), loader, augment, cfg, 1)
    if accelerator.is_main_process:
        (out / f"n{accelerator.num_processes}.json").write_text(
            json.dumps({"loss": loss, "seen": seen, "clips": len(data.split.train_ids)})
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    exit_rank(0)  # as the CLI leaves a rank: a finalizing interpreter can abort it (core/collective.py)


if __name__ == "__main__":
    main()
