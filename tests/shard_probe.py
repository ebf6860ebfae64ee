"""Run under `accelerate launch` by test_resident.py: for both data paths (clips resident on
the device, and streamed from the memory-mapped store) record on every rank the clip ids and a
checksum of the frames of every batch of two training epochs, and the validation result."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from accel_signs.config import DataConfig, TrainConfig
from accel_signs.core.collective import exit_rank
from accel_signs.data.layout import keypoint_layout
from accel_signs.data.training import training_data
from accel_signs.model.transformer import STTransformer
from accel_signs.training.loop import make_accelerator, validate


def main() -> None:
    store, out = Path(sys.argv[1]), Path(sys.argv[2])
    result, accelerator = {}, None
    for mode in ("no", "yes"):
        cfg = TrainConfig(data=DataConfig(path=store, data_on_device=mode), batch_size=5)
        accelerator = accelerator or make_accelerator(cfg)
        data = training_data(cfg, accelerator)
        torch.manual_seed(0)
        model = STTransformer(data.classes.num_classes, "t_2_1", layout=keypoint_layout())
        model, train, val = accelerator.prepare(model, data.train_loader, data.val_loader)
        epochs = []
        for epoch in (1, 2):
            train.set_epoch(epoch)
            torch.manual_seed(100 + epoch + accelerator.process_index)  # the same draws for both paths
            epochs.append([(ids.tolist(), y.tolist(), x.double().sum().item()) for x, _, y, ids in train])
        result[mode] = {
            "on_device": data.on_device,
            "epochs": epochs,
            "val": validate(accelerator, model, val),
            "train_ids": data.split.train_ids,
        }
    (out / f"rank{accelerator.process_index}.json").write_text(json.dumps(result))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    exit_rank(0)  # as the CLI leaves a rank: a finalizing interpreter can abort it (core/collective.py)


if __name__ == "__main__":
    main()
