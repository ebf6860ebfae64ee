"""Fine-tuning: train --init-from takes over exactly the tensors whose name and shape match,
the head is new, --freeze-epochs holds the taken-over tensors bit for bit, and a resumed
fine-tune ends where an uninterrupted one ends."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from accel_signs.cli import app
from accel_signs.config import InputConfig, ModelConfig
from accel_signs.core.errors import CheckpointError
from accel_signs.data.layout import builtin_layout
from accel_signs.data.synth import SynthSpec, write_synthetic
from accel_signs.model.transfer import init_from_checkpoint
from accel_signs.model.transformer import STTransformer
from helpers import FAST, assert_one_line_error, read_metrics, train_tiny_run

runner = CliRunner()
TIMING = ("seconds", "samples_per_s")


@pytest.fixture(scope="module")
def source(tiny_store, tmp_path_factory):
    """A trained checkpoint: 6 signs of the tiny store, karsl184."""
    return train_tiny_run(tiny_store, tmp_path_factory.mktemp("src"), "--num-epochs", "1", "--no-eval") / "best"


@pytest.fixture(scope="module")
def other_store(tmp_path_factory):
    """Other signs (4) and other signers: what a user fine-tunes on."""
    return write_synthetic(tmp_path_factory.mktemp("other") / "s", SynthSpec(classes=4, signers=2, reps=4, seed=11))


def _model(layout: str, classes: int = 4, size: str = "t_2_1") -> STTransformer:
    torch.manual_seed(0)
    return STTransformer.from_config(ModelConfig(size=size, input=InputConfig()), classes, builtin_layout(layout), 50)


@pytest.mark.parametrize("layout", ["karsl184", "pose33-hands42"])
def test_exactly_the_shape_matching_tensors_are_taken_over(source, layout):
    src = load_file(source / "model.safetensors")
    model = _model(layout)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    record = init_from_checkpoint(model, str(source))
    after = model.state_dict()
    expected = {k for k, v in fresh.items() if k in src and src[k].shape == v.shape and not k.startswith("head.")}
    for k in after:  # the matching tensors are the source's; everything else keeps its fresh initialisation
        assert torch.equal(after[k], src[k] if k in expected else fresh[k]), k
    assert {"head.weight", "head.bias"} <= set(record["new"]) and set(record["new"]) == set(after) - expected
    assert all(k in expected for k in after if k.startswith("blocks."))
    if layout == "karsl184":
        assert set(record["new"]) == {"head.weight", "head.bias"}
    else:  # another layout: its part projections and input normalisation are new
        assert {"proj.0.weight", "input_norm.weight", "input_norm.running_mean"} <= set(record["new"])
    assert record["transferred"] == len(expected)
    assert record["path"] == str(source.resolve()) and record["checkpoint_id"].startswith("sha256:")


def test_nothing_to_transfer_is_an_error(source):
    with pytest.raises(CheckpointError, match="nothing to transfer.*model size t_2_1"):
        init_from_checkpoint(_model("karsl184", size="s_2_1"), str(source))


def test_cli_refuses_a_source_with_nothing_to_transfer(source, other_store, tmp_path):
    result = runner.invoke(
        app,
        ["train", "--data", str(other_store), "--output-dir", str(tmp_path), *FAST, "--model-size", "s_2_1"]
        + ["--init-from", str(source), "--no-eval", "--num-epochs", "1"],
    )
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "nothing to transfer")
    assert not any(tmp_path.iterdir())  # no run folder left behind


def test_freeze_epochs_hold_the_taken_over_tensors_bit_identical(source, other_store, tmp_path):
    run = train_tiny_run(
        other_store, tmp_path, "--init-from", str(source), "--freeze-epochs", "1", "--num-epochs", "1", "--no-eval"
    )
    src, ours = load_file(source / "model.safetensors"), load_file(run / "best" / "model.safetensors")
    record = json.loads((run / "config.json").read_text())["runtime"]["init_from"]
    assert set(record["new"]) == {"head.weight", "head.bias"}
    for k in ours:
        if k.startswith("head."):
            assert ours[k].shape[0] == 4
        else:  # every parameter and buffer taken over, BatchNorm statistics included
            assert torch.equal(ours[k], src[k]), k
    meta = json.loads((run / "best" / "config.json").read_text())
    assert meta["runtime"]["init_from"]["checkpoint_id"] == record["checkpoint_id"]
    assert meta["train_config"]["init_from"] == str(source)


def test_without_freeze_everything_trains(source, other_store, tmp_path):
    run = train_tiny_run(other_store, tmp_path, "--init-from", str(source), "--num-epochs", "1", "--no-eval")
    src, ours = load_file(source / "model.safetensors"), load_file(run / "best" / "model.safetensors")
    assert not torch.equal(ours["blocks.0.mlp.0.weight"], src["blocks.0.mlp.0.weight"])


def _finetune(store, source, out, *args):
    return runner.invoke(
        app,
        ["train", "--data", str(store), "--output-dir", str(out), "--run-name", "r", *FAST, "--no-eval", "--seed", "2"]
        + ["--init-from", str(source), "--freeze-epochs", "2", *args],
    )


def test_resumed_finetune_equals_an_uninterrupted_one(source, other_store, tmp_path):
    # Within the 3 warmup epochs the lr does not depend on --num-epochs: stopping after epoch 1 (in
    # the frozen phase) and resuming to 3 must give the run that went through 3 epochs at once.
    full = _finetune(other_store, source, tmp_path / "full", "--num-epochs", "3")
    part = _finetune(other_store, source, tmp_path / "part", "--num-epochs", "1")
    assert full.exit_code == 0 and part.exit_code == 0, full.stderr + part.stderr
    resumed = runner.invoke(app, ["train", "--resume", str(tmp_path / "part" / "r"), "--num-epochs", "3"])
    assert resumed.exit_code == 0, resumed.stderr
    a, b = tmp_path / "full" / "r", tmp_path / "part" / "r"
    strip = [[{k: v for k, v in m.items() if k not in TIMING} for m in read_metrics(r)] for r in (a, b)]
    assert strip[0] == strip[1] and len(strip[0]) == 3
    for name in ("model.safetensors", "optimizer.safetensors"):
        x, y = load_file(a / "state" / name), load_file(b / "state" / name)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name
    src, final = load_file(source / "model.safetensors"), load_file(a / "state" / "model.safetensors")
    assert not torch.equal(final["blocks.0.mlp.0.weight"], src["blocks.0.mlp.0.weight"])  # epoch 3 unfroze
    rec = [json.loads((r / "config.json").read_text())["runtime"]["init_from"] for r in (a, b)]
    assert rec[0] == rec[1]
