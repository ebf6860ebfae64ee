"""Issue 30's second set of candidates, each off by default: adversarial weight perturbation
(AWP), cutmix over sequences, and test-time flip averaging in evaluate, predict and serve. Each
runs and does what its help says."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.config import AugmentConfig, EvalConfig, OptimConfig, TrainConfig
from accel_signs.core.errors import ConfigError
from accel_signs.data.layout import keypoint_layout
from accel_signs.data.sampling import mirror
from accel_signs.model.transformer import STTransformer
from accel_signs.training.average import mix_batch
from accel_signs.training.awp import AdversarialWeights
from tests.helpers import FAST, accelerate_launch, read_metrics, recompute_val, train_tiny_run

runner = CliRunner()


def test_they_are_off_by_default_and_checked():
    cfg = TrainConfig()
    assert cfg.optim.awp_lambda == 0 and cfg.data.augment.cutmix_p == 0
    assert EvalConfig(checkpoint="x").tta_flip is False
    assert mix_batch(torch.zeros(4, dtype=torch.long), 50, AugmentConfig(mixup_p=0.0)) is None
    with pytest.raises(ConfigError, match="optim.awp_lambda must be in"):
        OptimConfig(awp_lambda=1.5)
    with pytest.raises(ConfigError, match="optim.awp_epoch must be"):
        OptimConfig(awp_epoch=0)
    with pytest.raises(ConfigError, match="data.augment.cutmix_max must be in"):
        AugmentConfig(cutmix_max=2.0)


# AWP


def test_awp_moves_each_parameter_by_a_step_of_norm_lambda_and_puts_everything_back():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3)).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    F.cross_entropy(model(x), y).backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    clean = {n: p.grad.clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    with AdversarialWeights(model, 0.2).perturbed(optimizer):
        for name, p in model.named_parameters():
            assert p.grad is None  # what the block's backward leaves is the adversarial gradient alone
            step = p.detach() - before[name]
            # Absolute, as the GISLR winner's: a step of norm 0.2 for weights, biases and gains alike.
            assert float(step.norm()) == pytest.approx(0.2, rel=1e-4), name
            assert float(F.cosine_similarity(step.flatten(), clean[name].flatten(), dim=0)) == pytest.approx(
                1, abs=1e-5
            )
        F.cross_entropy(model(x), y).backward()  # training mode: moves BatchNorm's statistics again
        adversarial = {n: p.grad.clone() for n, p in model.named_parameters()}
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name]), name  # bit for bit, not subtracted back
        assert torch.equal(p.grad, adversarial[name])
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    assert any(not torch.allclose(adversarial[n], clean[n]) for n in clean)


def _config(tmp_path: Path, name: str, raw: dict) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(raw))
    return str(path)


def _train(store: Path, out: Path, *args: str) -> Path:
    return train_tiny_run(store, out, "--no-eval", "--limit-batches", "2", *args)


def _rows(run: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in ("seconds", "samples_per_s")} for m in read_metrics(run)]


def test_awp_acts_from_its_epoch_and_resumes_bit_identical(tiny_store, tmp_path):
    awp = _config(tmp_path, "awp", {"optim": {"awp_lambda": 0.2, "awp_epoch": 2}})
    plain = _rows(_train(tiny_store, tmp_path / "plain", "--num-epochs", "2"))
    full = _train(tiny_store, tmp_path / "full", "--num-epochs", "2", "--config", awp)
    rows = _rows(full)
    # Epoch 1 is before awp_epoch: the same run (the adversarial pass replays the RNG, so the
    # random stream is the same with it too); epoch 2 steps from the adversarial gradient.
    assert rows[0] == plain[0]
    assert rows[1]["val_loss"] != plain[1]["val_loss"] and rows[1]["train_loss"] != plain[1]["train_loss"]
    part = _train(tiny_store, tmp_path / "part", "--num-epochs", "1", "--config", awp)
    resumed = runner.invoke(
        app, ["train", *FAST, "--no-eval", "--limit-batches", "2", "--resume", str(part), "--num-epochs", "2"]
    )
    assert resumed.exit_code == 0, resumed.stderr
    assert _rows(part) == rows
    from safetensors.torch import load_file

    a, b = load_file(full / "state" / "model.safetensors"), load_file(part / "state" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.multiprocess
def test_awp_with_two_ranks_keeps_them_in_step(tiny_store, tmp_path):
    """Each rank perturbs along its own gradient (no all-reduce for it), then the adversarial
    gradients are all-reduced: the ranks must hold the same weights after every step, or the
    validation (each rank its shard, with its own weights) would not be rank 0's checkpoint's."""
    awp = _config(tmp_path, "awp", {"optim": {"awp_lambda": 0.2}, "data": {"augment": {"cutmix_p": 0.5}}})
    out = tmp_path / "runs"
    args = ["train", "--data", str(tiny_store), "--output-dir", str(out), "--num-epochs", "2", "--config", awp]
    proc = accelerate_launch([*args, "--no-eval", *FAST], tmp_path, timeout=600)  # a shared machine: slow starts
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = out.iterdir()
    best = json.loads((run / "best" / "config.json").read_text())["metrics"]
    loss, acc = recompute_val(run)
    assert loss == pytest.approx(best["val_loss"], rel=1e-4) and acc == pytest.approx(best["val_acc"], abs=1e-9)


# Cutmix


def test_cutmix_takes_one_span_of_the_partners_frames_and_weights_the_labels_by_it():
    cfg = AugmentConfig(cutmix_p=1.0, cutmix_max=0.4)
    partner, frames, label = mix_batch(torch.arange(512), 50, cfg)
    assert sorted(partner.tolist()) == list(range(512)) and frames.shape == (512, 50)
    taken = frames == 0
    assert torch.equal(frames, (~taken).float())  # each frame is the clip's own or the partner's
    share = taken.float().mean(1)
    assert torch.allclose(label, 1 - share) and share.max() <= 0.4 and share.max() > 0.35
    for row in taken[share > 0]:  # one span, contiguous
        where = row.nonzero().squeeze(1)
        assert where[-1] - where[0] + 1 == len(where)
    half = mix_batch(torch.arange(512), 50, AugmentConfig(cutmix_p=0.5, mixup_p=0.0))[2]
    assert 0.35 < (half == 1).float().mean() < 0.65
    # With mixup on too, a clip that is not cut is mixed up: per clip, one or the other.
    both = mix_batch(torch.arange(512), 50, AugmentConfig(cutmix_p=0.5, mixup_p=1.0))
    whole = (both.features == both.features[:, :1]).all(1)
    assert torch.equal(both.label[whole], both.features[whole, 0])
    assert ((both.features[~whole] == 0) | (both.features[~whole] == 1)).all()


def test_cutmix_puts_the_partners_features_into_the_span():
    layout = keypoint_layout()
    model = STTransformer(5, "t_2_1", layout=layout).eval()
    seen = []
    model.input_norm.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    x = torch.rand(2, 50, layout.num_points * 4)
    model(x)
    own = seen.pop().view(2, 50, -1)
    frames = torch.ones(2, 50)
    frames[0, 10:20] = 0  # clip 0 takes frames 10-19 from clip 1
    model(x, mix=(torch.tensor([1, 0]), frames))
    cut = seen.pop().view(2, 50, -1)
    assert torch.equal(cut[0, 10:20], own[1, 10:20])
    assert torch.equal(cut[0, :10], own[0, :10]) and torch.equal(cut[0, 20:], own[0, 20:])
    assert torch.equal(cut[1], own[1])


def test_training_with_cutmix_runs_and_trains_otherwise(tiny_store, tmp_path):
    cutmix = _config(tmp_path, "cutmix", {"data": {"augment": {"cutmix_p": 1.0}}})
    plain = _rows(_train(tiny_store, tmp_path / "plain", "--num-epochs", "1"))
    rows = _rows(_train(tiny_store, tmp_path / "cut", "--num-epochs", "1", "--config", cutmix))
    assert np.isfinite(rows[0]["train_loss"]) and rows[0]["train_loss"] != plain[0]["train_loss"]


# Test-time flip averaging


@pytest.fixture(scope="module")
def checkpoints(tiny_store, tmp_path_factory) -> dict[str, Path]:
    """Two tiny checkpoints: the default input (handedness canonicalised) and --no-handedness."""
    root = tmp_path_factory.mktemp("tta")
    fast = ("--num-epochs", "1", "--limit-batches", "2", "--no-eval")
    return {
        "handedness": train_tiny_run(tiny_store, root, *fast, name="h") / "best",
        "none": train_tiny_run(tiny_store, root, *fast, "--no-handedness", name="n") / "best",
    }


def _clips(store_path: Path, n: int = 6) -> tuple[list[np.ndarray], torch.Tensor]:
    from accel_signs.data.store import open_store
    from accel_signs.tools.inference import model_input

    split = open_store(store_path).split("test")
    clips = [np.array(split.clip(i), dtype=np.float32) for i in range(n)]
    return clips, torch.cat([model_input(c, 50) for c in clips])


def _both_ways(model: torch.nn.Module, layout, x: torch.Tensor) -> torch.Tensor:
    """The mean of the probabilities of x and of its mirror image, both always computed."""
    flipped = mirror(x.view(len(x), 50, layout.num_points, -1), torch.tensor(layout.mirror)).flatten(2)
    with torch.no_grad():
        return (model(x).softmax(-1) + model(flipped).softmax(-1)) / 2


def test_flip_averaging_is_the_mean_over_a_clip_and_its_mirror(checkpoints, tiny_store):
    from accel_signs.model.checkpoint import load_checkpoint
    from accel_signs.model.tta import flip_averaged, needs_flip

    _, x = _clips(tiny_store)
    for kind, path in checkpoints.items():
        ckpt = load_checkpoint(path)
        mirror_map = torch.tensor(ckpt.layout.mirror)
        probs, flipped = flip_averaged(ckpt.model, x, None, mirror_map)
        torch.testing.assert_close(probs, _both_ways(ckpt.model, ckpt.layout, x), atol=1e-6, rtol=0)
        with torch.no_grad():
            own = ckpt.model(x).softmax(-1)
        if kind == "none":  # every clip gets its mirrored pass, and it changes the answer
            assert flipped == len(x) and (probs - own).abs().max() > 1e-3
        else:  # canonicalised: a mirror image is mapped back, so no second pass is run
            assert flipped == 0 and torch.equal(probs, own)
    # With handedness, a clip where neither hand is more active (no hand seen) is left as recorded,
    # so its mirror image differs: that clip, and only that one, gets the second pass.
    ckpt = load_checkpoint(checkpoints["handedness"])
    no_hands = x.view(len(x), 50, ckpt.layout.num_points, -1).clone()
    no_hands[0, :, [w for hand in ckpt.layout.hands for w in ckpt.layout.parts[hand.part]]] = 0
    no_hands = no_hands.flatten(2)
    assert needs_flip(ckpt.model, no_hands, None).tolist() == [True] + [False] * (len(x) - 1)
    probs, flipped = flip_averaged(ckpt.model, no_hands, None, torch.tensor(ckpt.layout.mirror))
    assert flipped == 1
    torch.testing.assert_close(probs, _both_ways(ckpt.model, ckpt.layout, no_hands), atol=1e-6, rtol=0)


def test_evaluate_and_predict_with_tta_flip(checkpoints, tiny_store, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    summaries, logs = {}, ""
    for kind, path in checkpoints.items():
        for flag in ("--no-tta-flip", "--tta-flip"):
            out = tmp_path / f"{kind}{flag}"
            args = ["evaluate", str(path), "--data", str(tiny_store), "--output", str(out), "--no-plots", flag]
            result = runner.invoke(app, args)
            assert result.exit_code == 0, result.stderr
            logs += result.stderr
            summaries[kind, flag] = json.loads((out / "metrics.json").read_text())
    assert summaries["none", "--tta-flip"]["tta_flip"] is True
    assert summaries["none", "--tta-flip"]["mean_loss"] != summaries["none", "--no-tta-flip"]["mean_loss"]
    # The default input: no clip of the set needs the mirrored pass; the same answers.
    h_flip, h_plain = summaries["handedness", "--tta-flip"], summaries["handedness", "--no-tta-flip"]
    assert (h_flip["top1"], h_flip["top5"]) == (h_plain["top1"], h_plain["top5"])
    assert h_flip["mean_loss"] == pytest.approx(h_plain["mean_loss"], rel=1e-5)
    assert "canonicalises handedness" in caplog.text + logs
    # predict: the averaged probabilities, as flip_averaged gives them for the sampled clip.
    from accel_signs.data.store import open_store
    from accel_signs.model.checkpoint import load_checkpoint

    clips, x = _clips(tiny_store, 1)
    np.save(tmp_path / "clip.npy", clips[0])
    got = runner.invoke(app, ["predict", str(checkpoints["none"]), str(tmp_path / "clip.npy"), "--json", "--tta-flip"])
    assert got.exit_code == 0, got.stderr
    top = json.loads(got.stdout)[0]["top"]
    ckpt = load_checkpoint(checkpoints["none"])
    assert open_store(tiny_store).layout.name == ckpt.layout.name
    expected = _both_ways(ckpt.model, ckpt.layout, x)[0]
    assert [t["probability"] for t in top] == pytest.approx(
        expected.sort(descending=True).values[:5].tolist(), abs=1e-5
    )


def test_serve_with_tta_flip_averages_in_its_batched_pass(checkpoints, tiny_store):
    """The server's batcher (serve --tta-flip) gives each window flip_averaged's answer."""
    import asyncio
    import concurrent.futures

    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from accel_signs.model.checkpoint import load_checkpoint
    from accel_signs.serve.batcher import Batcher
    from accel_signs.serve.config import ServeConfig
    from accel_signs.serve.pipeline import Window
    from accel_signs.tools.inference import classify

    assert ServeConfig(checkpoint="x", tta_flip=True).tta_flip
    ckpt = load_checkpoint(checkpoints["none"])
    clips, _ = _clips(tiny_store, 3)

    async def run(tta: bool) -> list:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            batcher = Batcher(ckpt, pool, tta_flip=tta)
            windows = [Window(clip=c, size=None, first_seq=0, last_seq=len(c)) for c in clips]
            try:
                return [r[0] for r in await asyncio.gather(*(batcher.classify(w) for w in windows))]
            finally:
                await batcher.close()

    flipped, plain = asyncio.run(run(True)), asyncio.run(run(False))
    mirror_map = torch.tensor(ckpt.layout.mirror)
    for clip, got, own in zip(clips, flipped, plain):
        alone = classify(ckpt, clip, None, flip=mirror_map)
        assert [t["class_id"] for t in got] == [t["class_id"] for t in alone]
        assert [t["probability"] for t in got] == pytest.approx([t["probability"] for t in alone], abs=1e-5)
        # Batched or alone, the same answer to float rounding (the probabilities are rounded to
        # 6 digits, so 1e-6 apart can round to neighbours).
        alone = classify(ckpt, clip, None)
        assert [t["class_id"] for t in own] == [t["class_id"] for t in alone]
        assert [t["probability"] for t in own] == pytest.approx([t["probability"] for t in alone], abs=2e-6)
        assert [t["probability"] for t in got] != [t["probability"] for t in own]
