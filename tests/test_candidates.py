"""The training candidates of issue 30, each off by default: shear and point masks in the
augmentation, mixup over sequences, late dropout, an EMA of the weights, and the long recipe
that turns them all on. Each one runs and does what its help says; a run with all of them on
resumes bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.config import AugmentConfig, ModelConfig, OptimConfig, TrainConfig, load_config_file
from accel_signs.data.augment import Augmenter
from accel_signs.data.layout import keypoint_layout
from accel_signs.model.transformer import STTransformer
from accel_signs.training.average import WeightAverage, mixup
from tests.helpers import FAST, read_metrics, recompute_val

ROOT = Path(__file__).resolve().parents[1]
LONG = ROOT / "examples" / "long_recipe.yaml"


def test_they_are_off_by_default_but_mixup():
    """Mixup won the ablation (docs/results.md) and is on since config version 4; the others are off."""
    cfg = TrainConfig()
    aug = cfg.data.augment
    assert aug.shear == 0 and aug.point_mask_p == 0 and aug.cutmix_p == 0 and aug.mixup_p == 0.5
    assert cfg.model.late_dropout == 0 and cfg.optim.ema_decay == 0 and cfg.optim.awp_lambda == 0
    assert mixup(torch.zeros(4, dtype=torch.long), AugmentConfig(mixup_p=0.0)) is None
    assert mixup(torch.zeros(4, dtype=torch.long), aug) is not None


def _coords(b=64, t=10, seed=0):
    layout = keypoint_layout()
    g = torch.Generator().manual_seed(seed)
    coords = torch.randn(b, t, layout.num_points, 3, generator=g)
    return layout, coords, torch.ones(b, t, layout.num_points, dtype=torch.bool)


def test_shear_is_a_shear_within_its_range():
    off = AugmentConfig.off(affine_p=1.0, rotate_deg=0.0, scale_min=1.0, scale_max=1.0, shift=0.0, shear=0.15)
    layout, coords, present = _coords()
    out, _ = Augmenter(off, layout)(coords, present)
    # Fit each clip's linear map of x/y: [[1, kx], [ky, 1]] with |k| <= 0.15, z untouched.
    xy, moved = coords[..., :2].reshape(64, -1, 2), out[..., :2].reshape(64, -1, 2)
    maps = torch.linalg.lstsq(xy, moved).solution.transpose(1, 2)  # (B, 2, 2): moved = maps @ xy
    assert torch.allclose(maps.diagonal(dim1=1, dim2=2), torch.ones(64, 2), atol=1e-4)
    shear = torch.stack([maps[:, 0, 1], maps[:, 1, 0]], -1)
    assert shear.abs().max() <= 0.15 + 1e-5 and shear.abs().max() > 0.1 and shear.abs().min() < 0.03
    assert torch.equal(out[..., 2], coords[..., 2])


def test_point_masks_hide_a_share_of_the_points_for_the_whole_clip():
    # Seeded: the masks come from the global RNG, and the bounds below are statistical (the share
    # is drawn per point, so a clip's can pass 0.4 by chance); unseeded, the draws depended on the
    # tests run before it in the same process.
    torch.manual_seed(0)
    cfg = AugmentConfig.off(point_mask_p=0.5, point_mask_max=0.4)
    layout, coords, present = _coords(b=200)
    out, kept = Augmenter(cfg, layout)(coords, present)
    assert torch.equal(kept, kept[:, :1].expand_as(kept))  # the same points in every frame
    hidden = 1 - kept[:, 0].float().mean(dim=1)  # (B,) share of the points hidden
    assert hidden.max() <= 0.5 and hidden.max() > 0.3  # up to 0.4, drawn per point
    assert 0.35 < (hidden == 0).float().mean() < 0.65 or (hidden < 0.01).float().mean() > 0.35  # p = 0.5
    assert torch.equal(out[~kept], torch.zeros_like(out[~kept]))  # hidden points read as undetected


def test_mixup_mixes_the_features_and_weights_the_loss():
    cfg = AugmentConfig(mixup_p=1.0, mixup_alpha=0.4)
    labels = torch.arange(256)
    partner, weight = mixup(labels, cfg)
    assert sorted(partner.tolist()) == list(range(256))
    assert weight.min() >= 0.5 and weight.max() <= 1 and weight.std() > 0.05
    assert (mixup(labels, AugmentConfig(mixup_p=0.3))[1] == 1).float().mean() > 0.5  # most left unmixed
    layout = keypoint_layout()
    model = STTransformer(5, "t_2_1", layout=layout).eval()
    x = torch.randn(2, 50, layout.num_points * 4)
    plain = model(x)
    assert torch.allclose(model(x, mix=(torch.tensor([1, 0]), torch.ones(2))), plain)
    halves = model(x, mix=(torch.tensor([1, 0]), torch.full((2,), 0.5)))  # both clips become the same mean
    assert torch.allclose(halves[0], halves[1], atol=1e-5) and not torch.allclose(halves, plain)


def test_late_dropout_acts_in_training_only_and_keeps_the_checkpoint_format():
    layout = keypoint_layout()
    model = STTransformer(5, "t_2_1", layout=layout, dropout=0.0)
    names = set(model.state_dict())
    x = torch.randn(3, 50, layout.num_points * 4)
    model.head_dropout.p = 0.8
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.allclose(model(x), model(x))
    assert set(model.state_dict()) == names


def test_the_weight_average():
    layer = torch.nn.Linear(3, 2)
    average = WeightAverage(layer, decay=0.9)
    start = layer.weight.detach().clone()
    with torch.no_grad():
        layer.weight.add_(1.0)
    average.update()  # the first update averages fast: decay min(0.9, 2/11)
    expect = start + (1 - 2 / 11)
    assert torch.allclose(average.average[0], expect)
    with average.swapped_in():
        assert torch.allclose(layer.weight, expect)
    assert torch.allclose(layer.weight, start + 1)
    saved = average.state()
    other = WeightAverage(torch.nn.Linear(3, 2), decay=0.9)
    other.load(saved)
    assert other.updates == 1 and torch.allclose(other.average[0], expect)
    with pytest.raises(KeyError, match="lacks"):
        other.load({})


def test_the_long_recipe_loads_and_turns_everything_on():
    cfg = TrainConfig.from_dict(load_config_file(LONG))
    assert cfg.num_epochs == 300 and cfg.optim.ema_decay == 0.999 and cfg.model.late_dropout == 0.8
    aug = cfg.data.augment
    assert aug.shear == 0.15 and aug.mixup_p > 0 and aug.point_mask_p > 0 and aug.time_mask_max == 0.4
    with pytest.raises(Exception, match="optim.ema_decay must be in"):
        OptimConfig(ema_decay=1.0)
    with pytest.raises(Exception, match="model.late_dropout must be in"):
        ModelConfig(late_dropout=1.0)


def _everything(tmp_path: Path) -> Path:
    """The long recipe, with late dropout and AWP from epoch 2 and a fast-moving average, for 2 short epochs."""
    raw = load_config_file(LONG)
    raw["model"]["late_dropout_epoch"] = 2
    raw["optim"]["ema_decay"] = 0.9
    raw["optim"]["awp_epoch"] = 2  # AWP too comes on in the resumed epoch
    path = tmp_path / "everything.json"
    path.write_text(json.dumps(raw))
    return path


def _train(*args: str):
    return CliRunner().invoke(app, ["train", *FAST, "--no-eval", "--limit-batches", "2", *args])


def test_everything_on_runs_saves_the_better_average_and_resumes_bit_identical(tiny_store, tmp_path):
    config = _everything(tmp_path)
    common = ("--data", str(tiny_store), "--config", str(config), "--run-name", "r")
    full = _train(*common, "--output-dir", str(tmp_path / "full"), "--num-epochs", "2")
    assert full.exit_code == 0, full.stderr
    part = _train(*common, "--output-dir", str(tmp_path / "part"), "--num-epochs", "1")
    assert part.exit_code == 0, part.stderr
    run, ref = tmp_path / "part" / "r", tmp_path / "full" / "r"
    resumed = _train("--resume", str(run), "--num-epochs", "2")  # late dropout comes on in the resumed epoch
    assert resumed.exit_code == 0, resumed.stderr
    timing = ("seconds", "samples_per_s")
    rows = [{k: v for k, v in m.items() if k not in timing} for m in read_metrics(ref)]
    assert rows == [{k: v for k, v in m.items() if k not in timing} for m in read_metrics(run)]
    assert all("ema_val_acc" in m and math.isfinite(m["ema_val_loss"]) for m in rows)
    for name in (
        "state/model.safetensors",
        "state/optimizer.safetensors",
        "state/average.safetensors",
        "best/model.safetensors",
    ):
        a, b = load_file(ref / name), load_file(run / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # best/ holds the weights its metrics were measured on: the average's where it won.
    meta = json.loads((ref / "best" / "config.json").read_text())
    loss, acc = recompute_val(ref)
    assert acc == pytest.approx(meta["metrics"]["val_acc"]) and loss == pytest.approx(
        meta["metrics"]["val_loss"], rel=1e-4
    )
    row = rows[meta["metrics"]["epoch"] - 1]
    prefix = "ema_" if meta["metrics"].get("weights") == "ema" else ""
    card = (ref / "best" / "README.md").read_text()
    assert ("moving average (EMA)" in card) == (prefix == "ema_")
    assert (meta["metrics"]["val_loss"], meta["metrics"]["val_acc"]) == (
        row[prefix + "val_loss"],
        row[prefix + "val_acc"],
    )


def test_a_mirrored_clip_gives_the_same_logits(tiny_store):
    """Why test-time flip averaging is not a candidate (docs/training.md): handedness
    canonicalisation mirrors a mirrored clip back, so the model's output does not change."""
    import numpy as np

    from accel_signs.data.sampling import mirror
    from accel_signs.data.store import open_store

    store = open_store(tiny_store)
    split = store.split("train")
    torch.manual_seed(0)
    model = STTransformer(6, "t_2_1", layout=store.layout).eval()
    clips = [torch.tensor(np.asarray(split.clip(i), dtype=np.float32)) for i in range(0, len(split), 6)]
    x = torch.stack([c[torch.linspace(0, len(c) - 1, 50).long()] for c in clips])  # (B, 50, P, C)
    with torch.no_grad():
        torch.testing.assert_close(model(mirror(x, torch.tensor(store.layout.mirror)).flatten(2)), model(x.flatten(2)))
