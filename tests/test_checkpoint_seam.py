"""The model seam: the checkpoint's typed description (CheckpointMeta), read and written only in
model/checkpoint.py; the model registry; the recipe a checkpoint records, shown by `info` and
the model card; and checkpoints written by the code before all three, which load and predict as
they did."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.config import InputConfig, ModelConfig, TrainConfig
from accel_signs.core.errors import CheckpointError, ConfigError
from accel_signs.data.layout import KeypointLayout, keypoint_layout
from accel_signs.data.store import ClassInfo
from accel_signs.model.card import model_card
from accel_signs.model.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    checkpoint_meta,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from accel_signs.model.features import KeypointFeatures
from accel_signs.model.registry import FAMILIES, ModelFamily, build_model, register, unregister
from accel_signs.model.transformer import STTransformer
from accel_signs.tools.inference import classify_batch
from accel_signs.tools.info import describe_checkpoint

CLASSES = (ClassInfo(3, "eat", "أكل"), ClassInfo(5, "drink", "شرب"), ClassInfo(9, "sleep", "نام"))
DATA = {"store": "/data/store", "split": "train", "signs": [3, 5, 9], "signers": ["01", "02"], "val_signers": []}
DATA |= {"test_signers": ["03"], "seed": 0, "val_fraction": 0.2, "val_split": "sign", "profile": {"train_clips": 12}}
RUNTIME = {"num_processes": 2, "device": "cpu", "mixed_precision": "no", "lr": 0.0014142, "global_batch_size": 16}


def _old_checkpoint_meta(cfg: TrainConfig, classes, epoch, metrics, data, runtime, layout) -> dict[str, Any]:
    """checkpoint_meta as accel_signs wrote it before the typed meta and the recipe (18195fb),
    line for line: a plain dict, the model's class named literally."""
    features = KeypointFeatures(layout, cfg.model.input)
    return {
        "format": "accel_signs.checkpoint",
        "version": 1,
        "accel_signs_version": "0.1.0",
        "model": {
            "class": "STTransformer",
            "size": cfg.model.size,
            "num_classes": len(classes),
            "dropout": cfg.model.dropout,
            "drop_path": cfg.model.drop_path,
            "seq_len": cfg.data.seq_len,
            "input": dataclasses.asdict(cfg.model.input),
            "part_sizes": features.part_sizes(),
        },
        "layout": layout.record(),
        "extractor": None,
        "classes": [{"id": i, "sign": c.sign, "en": c.en, "ar": c.ar} for i, c in enumerate(classes)],
        "epoch": epoch,
        "metrics": metrics,
        "data": data,
        "train_config": cfg.to_dict(),
        "runtime": runtime,
    }


def _old_save_checkpoint(folder: Path, weights: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """save_checkpoint as it was then (without the temporary folder's swap, which is not format)."""
    folder.mkdir(parents=True)
    save_file(weights, folder / MODEL_FILE, metadata={"format": "accel_signs.checkpoint", "config": json.dumps(meta)})
    (folder / CONFIG_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=1), "utf-8")


def _clips(layout: KeypointLayout, n: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    clips = [
        rng.uniform(0.2, 0.8, (int(rng.integers(20, 70)), layout.num_points, 4)).astype(np.float32) for _ in range(n)
    ]
    for c in clips:
        c[..., 3] = 1.0
    return clips


def _trained_like(model: nn.Module) -> nn.Module:
    """Fresh weights moved off their initial values (BatchNorm statistics too), so that a
    checkpoint that loaded nothing could not predict the same."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.uniform_(0.5, 2.0)
            elif name.endswith("running_mean"):
                b.normal_(0, 0.3)
    return model.eval()


def _cfg(**model: Any) -> TrainConfig:
    cfg = TrainConfig(model=ModelConfig(size="t_2_1", **model), num_epochs=40, batch_size=8)
    cfg.optim.ema_decay = 0.99
    cfg.data.augment.shear = 0.15
    cfg.data.augment.mixup_p = 0.0
    cfg.data.augment.cutmix_p = 0.5
    return cfg


def test_an_old_checkpoint_loads_and_predicts_as_before(tmp_path):
    """A checkpoint folder written literally as the writer before the typed meta did (no recipe):
    it loads, predicts exactly what its model predicts, and info and the card say that the
    recipe was not recorded."""
    cfg, layout = _cfg(), keypoint_layout()
    model = _trained_like(STTransformer.from_config(cfg.model, len(CLASSES), layout, cfg.data.seq_len))
    old = _old_checkpoint_meta(cfg, CLASSES, 7, {"val_acc": 0.5, "val_loss": 1.1}, DATA, RUNTIME, layout)
    _old_save_checkpoint(tmp_path / "old", {k: v.contiguous() for k, v in model.state_dict().items()}, old)

    ckpt = load_checkpoint(tmp_path / "old")
    assert type(ckpt.model) is STTransformer and ckpt.meta.recipe is None
    clips = _clips(layout)
    sizes = [(640.0, 480.0), None, (480.0, 640.0), None]
    got = classify_batch(ckpt, clips, sizes, top_k=3)
    ckpt.model = model  # the model itself, through the same code
    expected = classify_batch(ckpt, clips, sizes, top_k=3)
    assert got == expected
    assert [c.sign for c in ckpt.classes] == [3, 5, 9] and got[0][0]["en"] in {"eat", "drink", "sleep"}
    assert (ckpt.meta.model.family, ckpt.meta.model.size, ckpt.meta.epoch) == ("STTransformer", "t_2_1", 7)
    assert ckpt.meta.data.test_signers == ("03",) and ckpt.meta.data.raw == DATA

    info = describe_checkpoint(tmp_path / "old")
    assert "recipe: not recorded" in info and "config: adamw lr 0.001, cosine schedule, batch 8, epochs 40" in info
    card = model_card(tmp_path / "old")
    assert "Recipe: not recorded" in card and "Fine-tuning" not in card


def test_a_checkpoint_from_before_the_input_features_rebuilds_as_it_was(tmp_path):
    """No drop_path and no input in model: the family's values for what older checkpoints lack
    (raw coordinates, no stochastic depth) rebuild it."""
    cfg, layout = _cfg(drop_path=0.0, input=InputConfig(kind="raw", handedness=False)), keypoint_layout()
    model = _trained_like(STTransformer.from_config(cfg.model, len(CLASSES), layout, cfg.data.seq_len))
    old = _old_checkpoint_meta(cfg, CLASSES, 2, {}, DATA, RUNTIME, layout)
    del old["model"]["drop_path"], old["model"]["input"]
    _old_save_checkpoint(tmp_path / "older", model.state_dict(), old)
    ckpt = load_checkpoint(tmp_path / "older")
    assert ckpt.meta.model.input.kind == "raw" and ckpt.meta.model.config.drop_path == 0.0
    x = torch.tensor(np.stack([c[:50] for c in _clips(layout)]).reshape(4, 50, -1))
    with torch.no_grad():
        assert torch.equal(ckpt.model(x), model(x))
    assert "input: raw image coordinates" in describe_checkpoint(tmp_path / "older")


def test_a_new_checkpoint_records_its_recipe(tmp_path):
    """config.json keeps every key of the old format, adds the recipe, and reads back as the
    description that wrote it; info and the card show the recipe."""
    cfg, layout = _cfg(), keypoint_layout()
    model = STTransformer.from_config(cfg.model, len(CLASSES), layout, cfg.data.seq_len)
    metrics = {"val_acc": 0.75, "val_loss": 0.9, "weights": "ema"}
    meta = checkpoint_meta(cfg, CLASSES, 3, metrics, DATA, RUNTIME, layout)
    save_checkpoint(tmp_path / "best", model.state_dict(), meta)
    raw = json.loads((tmp_path / "best" / CONFIG_FILE).read_text())
    old = _old_checkpoint_meta(cfg, CLASSES, 3, metrics, DATA, RUNTIME, layout)
    # The model record is the old writer's, plus the hyperparameters added since (the temporal
    # convolution, here off), which older readers ignore.
    conv = {"conv_kernel": 0, "conv_blocks": 1, "conv_causal": False}
    assert set(raw) == set(old) | {"recipe"} and raw["model"] == old["model"] | conv
    assert all(raw[k] == old[k] for k in old if k not in ("accel_signs_version", "model"))

    back = read_checkpoint_meta(tmp_path / "best")
    assert back == meta and back.to_json() == raw
    recipe = back.recipe
    assert recipe is not None and (recipe.processes, recipe.global_batch_size) == (2, 16)
    changed = {"optim.ema_decay", "data.augment.shear", "data.augment.mixup_p", "data.augment.cutmix_p", "num_epochs"}
    assert changed <= set(recipe.changed)
    assert "optim.lr" not in recipe.changed and recipe.settings["optim.lr"] == 0.001
    assert not any(k.startswith(("data.path", "model.input", "output_dir")) for k in recipe.settings)

    info = describe_checkpoint(tmp_path / "best")
    for line in (
        "    40 epochs, batch 8 x 2 process(es) = 16, seed 0, precision fp32",
        "    adamw lr 0.001 (peak 0.00141), cosine schedule after 3.0 warm-up epochs, weight decay 0.05, label "
        "smoothing 0.1, gradient clipping 1",
        "    dropout 0.2, drop-path 0.1, late dropout off, mixup off, cutmix 0.5 (spans to 0.5), AWP off",
        "    weight average (EMA) 0.99; the checkpoint holds the average",
        "    augmentation: shear 0.15 (the rest as default)",
    ):
        assert line in info.splitlines(), info
    card = model_card(tmp_path / "best")
    assert "- Recipe:\n  - 40 epochs, batch 8 x 2 process(es) = 16" in card
    assert "  - weight average (EMA) 0.99; the checkpoint holds the average" in card


def test_train_writes_the_recipe_and_info_shows_it(tiny_store, tmp_path):
    """Through the command line: a run's best checkpoint records the recipe it ran."""
    from helpers import train_tiny_run

    run = train_tiny_run(
        tiny_store, tmp_path, "--num-epochs", "1", "--limit-batches", "2", "--no-eval", "--label-smoothing", "0.2"
    )
    result = CliRunner().invoke(app, ["info", str(run / "best")])
    assert result.exit_code == 0, result.stderr
    assert "label smoothing 0.2" in result.stdout and "also changed from the defaults: limit_batches 2" in result.stdout
    assert "1 epochs, batch 8 x 1 process(es) = 8" in result.stdout


class TinyPool(nn.Module):
    """A second family for the registry's test: the input features averaged over time, then a
    linear classifier."""

    def __init__(self, num_classes: int, layout: KeypointLayout, input: InputConfig, seq_len: int, width: int):
        super().__init__()
        self.features = KeypointFeatures(layout, input)
        self.points, self.channels = len(layout.names), len(layout.channels)
        self.part_sizes = self.features.part_sizes()
        self.head = nn.Linear(sum(self.part_sizes), num_classes)
        self.width = width

    @classmethod
    def from_config(cls, cfg: ModelConfig, num_classes: int, layout: KeypointLayout, seq_len: int) -> TinyPool:
        return cls(num_classes, layout, cfg.input, seq_len, width=int(cfg.dropout * 100))

    def forward(self, x: torch.Tensor, aspect: torch.Tensor | None = None, augment=None, mix=None) -> torch.Tensor:
        b, t, _ = x.shape
        return self.head(self.features(x.view(b, t, self.points, self.channels), aspect, augment).mean(1))


@pytest.fixture
def tiny_family():
    register(ModelFamily("TinyPool", TinyPool, absent={"drop_path": 0.05}, training_only=frozenset({"late_dropout"})))
    yield FAMILIES["TinyPool"]
    unregister("TinyPool")


def test_a_second_family_round_trips_through_the_registry(tiny_family, tmp_path):
    cfg, layout = _cfg(family="TinyPool"), keypoint_layout()
    model = _trained_like(build_model(cfg.model, len(CLASSES), layout, cfg.data.seq_len))
    assert type(model) is TinyPool
    save_checkpoint(tmp_path / "tiny", model.state_dict(), checkpoint_meta(cfg, CLASSES, 1, {}, DATA, RUNTIME, layout))
    raw = json.loads((tmp_path / "tiny" / CONFIG_FILE).read_text())
    assert raw["model"]["class"] == "TinyPool" and "late_dropout" not in raw["model"]

    ckpt = load_checkpoint(tmp_path / "tiny")
    assert type(ckpt.model) is TinyPool and ckpt.meta.model.family == "TinyPool"
    clips = _clips(layout)
    got = classify_batch(ckpt, clips, [None] * 4, top_k=2)
    ckpt.model = model
    assert got == classify_batch(ckpt, clips, [None] * 4, top_k=2)
    assert "model: TinyPool t_2_1, 3 classes" in describe_checkpoint(tmp_path / "tiny")

    # What an older TinyPool checkpoint does not record comes from the family's `absent`.
    del raw["model"]["drop_path"]
    shutil.copytree(tmp_path / "tiny", tmp_path / "tiny2")
    (tmp_path / "tiny2" / CONFIG_FILE).write_text(json.dumps(raw))
    assert read_checkpoint_meta(tmp_path / "tiny2").model.config.drop_path == 0.05

    # Unregistered, the family is unknown: the error names the file and the families there are.
    unregister("TinyPool")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "tiny2")
    message = str(e.value)
    assert str(tmp_path / "tiny2" / CONFIG_FILE) in message and "'TinyPool'" in message and "STTransformer" in message
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "tiny2"), str(tmp_path / "none.npy")])
    assert result.exit_code == 1 and "unknown model class 'TinyPool'" in result.stderr


def test_an_unknown_family_in_the_config_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown model family 'Nope' \(known: STTransformer\)"):
        build_model(ModelConfig(family="Nope"), 3, keypoint_layout(), 50)
