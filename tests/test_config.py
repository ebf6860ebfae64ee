import json

import pytest

from accel_signs.config import (
    DataConfig,
    ModelConfig,
    ModelSize,
    OptimConfig,
    TrainConfig,
    load_config_file,
    parse_signers,
    parse_signs,
)
from accel_signs.core.errors import ConfigError


def test_parse_signs_ranges_and_lists():
    assert parse_signs("1-3,7, 5") == (1, 2, 3, 5, 7)
    assert parse_signs("1-502") == tuple(range(1, 503))
    for bad in ("0", "3-1", "a", "1-", ""):
        with pytest.raises(ConfigError, match="--signs"):
            parse_signs(bad)


def test_parse_signers_pads_numbers():
    assert parse_signers("01,2, 03") == ("01", "02", "03")
    with pytest.raises(ConfigError):
        parse_signers(" , ")


@pytest.mark.parametrize(
    "text,dims", [("s_4_2", (32, 4, 2)), ("m_12_10", (64, 12, 10)), ("t_1_1", (16, 1, 1)), ("l_16_24", (128, 16, 24))]
)
def test_model_size_any_counts(text, dims):
    size = ModelSize.parse(text)
    assert (size.head_dim, size.heads, size.layers) == dims and str(size) == text


@pytest.mark.parametrize("bad", ["x_4_2", "s_0_2", "s_4", "s42", "s_4_2_1", ""])
def test_model_size_rejects(bad):
    with pytest.raises(ConfigError, match="unknown model size"):
        ModelSize.parse(bad)


@pytest.mark.parametrize(
    "make",
    [
        lambda: TrainConfig(num_epochs=0),
        lambda: TrainConfig(batch_size=0),
        lambda: TrainConfig(mixed_precision="fp8"),
        lambda: TrainConfig(run_name="a/b"),
        lambda: DataConfig(val_fraction=1.0),
        lambda: DataConfig(num_workers=-1),
        lambda: ModelConfig(size="q_1_1"),
        lambda: ModelConfig(dropout=1.0),
        lambda: OptimConfig(lr=0),
        lambda: OptimConfig(lr_scaling="cube"),
    ],
)
def test_invalid_configs_raise(make):
    with pytest.raises(ConfigError):
        make()


def test_round_trip_through_json(tmp_path):
    cfg = TrainConfig(
        data=DataConfig(signs="1-3", signers="01", path=tmp_path), num_epochs=3, model=ModelConfig(size="t_2_1")
    )
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg.to_dict()))
    again = TrainConfig.from_dict(load_config_file(path))
    assert again == cfg and again.data.signs == (1, 2, 3) and again.data.signers == ("01",)


def test_unknown_keys_are_errors():
    with pytest.raises(ConfigError, match="unknown key"):
        TrainConfig.from_dict({"optim": {"learning_rate": 1}})


def test_lr_scaling():
    assert OptimConfig(lr=1e-3).scaled_lr(4) == pytest.approx(2e-3)
    assert OptimConfig(lr=1e-3, lr_scaling="linear").scaled_lr(4) == pytest.approx(4e-3)
    assert OptimConfig(lr=1e-3, lr_scaling="none").scaled_lr(4) == pytest.approx(1e-3)


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "missing.json")
    yml = tmp_path / "c.yaml"
    yml.write_text("num_epochs: 4\noptim:\n  lr: 0.01\n")
    assert TrainConfig.from_dict(load_config_file(yml)).optim.lr == 0.01


@pytest.mark.parametrize(
    "raw,needle",
    [
        ({"num_epochs": 2.5}, "num_epochs: expected int"),
        ({"batch_size": "8"}, "batch_size: expected int"),
        ({"model": {"size": 42}}, "model.size: expected str"),
        ({"optim": {"lr": "fast"}}, "optim.lr: expected float"),
        ({"evaluate": "yes"}, "evaluate: expected bool"),
        ({"seed": None}, "seed may not be null"),
    ],
)
def test_config_file_types_are_checked(raw, needle):
    with pytest.raises(ConfigError, match=None) as info:
        TrainConfig.from_dict(raw)
    assert needle in str(info.value)


def test_yaml_style_numbers_and_lists_are_accepted():
    cfg = TrainConfig.from_dict(
        {"optim": {"lr": "1e-3"}, "data": {"signs": [3, 1], "signers": ["01"]}, "log_with": ["tensorboard"]}
    )
    assert (
        cfg.optim.lr == 1e-3
        and cfg.data.signs == (3, 1)
        and cfg.data.signers == ("01",)
        and cfg.log_with == ("tensorboard",)
    )


def test_saved_config_round_trip_ignores_runtime_record():
    raw = TrainConfig().to_dict()
    raw["runtime"] = {"num_processes": 2}
    assert TrainConfig.from_dict(raw) == TrainConfig()


def test_a_version_1_config_means_the_seed_recipe():
    """Runs and checkpoints from before config version 2 keep meaning what they trained; the
    shipped seed recipe is exactly that."""
    from pathlib import Path

    old = TrainConfig.from_dict({"version": 1, "optim": {"lr": 2e-3}})
    assert old.optim.lr == 2e-3 and old.optim.schedule == "plateau" and old.optim.optimizer == "adam"
    assert old.optim.weight_decay == 1e-4 and old.optim.label_smoothing == 0 and old.model.drop_path == 0
    assert old.model.input.kind == "raw" and not old.model.input.handedness and old.best_metric == "val_loss"
    assert old.data.augment.mirror_p == 0.5 and old.data.augment.crop_min == 1 and old.data.augment.time_mask_p == 0
    assert old.data.augment.mixup_p == 0
    recipe = Path(__file__).parent.parent / "examples" / "seed_recipe.yaml"
    assert TrainConfig.from_dict(load_config_file(recipe)) == TrainConfig.from_dict({"version": 1})
    with pytest.raises(ConfigError, match="version 7"):
        TrainConfig.from_dict({"version": 7})


def test_a_version_2_config_keeps_its_split_and_tie_rule():
    """Runs from before config version 3 split by (sign, signer) group and broke accuracy ties by
    val loss alone; a version 2 (or 1) config means that, a current one the new rules."""
    for old in ({"version": 2}, {"version": 1}):
        cfg = TrainConfig.from_dict(old)
        assert cfg.data.val_split == "group" and cfg.best_window == 1
    assert TrainConfig.from_dict({"version": 2, "best_window": 5}).best_window == 5
    new = TrainConfig.from_dict({})
    assert new.data.val_split == "sign" and new.best_window == 3 and new.to_dict()["version"] == 4
    with pytest.raises(ConfigError, match="best_window must be >= 1"):
        TrainConfig(best_window=0)


def test_a_version_3_config_trains_without_mixup():
    """Mixup became a default in config version 4: a run or checkpoint from before (any older
    version) resumes and describes itself without it, unless its config turned it on."""
    for old in ({"version": 3}, {"version": 2}, {"version": 1}):
        assert TrainConfig.from_dict(old).data.augment.mixup_p == 0
    assert TrainConfig.from_dict({"version": 3, "data": {"augment": {"mixup_p": 0.3}}}).data.augment.mixup_p == 0.3
    new = TrainConfig.from_dict({})
    assert new.data.augment.mixup_p == 0.5 and TrainConfig.from_dict(new.to_dict()) == new


@pytest.mark.parametrize(
    "raw,needle",
    [
        ({"model": {"input": {"kind": "raw"}}}, "add --no-handedness"),
        ({"model": {"input": {"kind": "pixels"}}}, "--input must be one of"),
        ({"model": {"input": {"hands": True}}}, "unknown key(s) hands"),
        ({"optim": {"schedule": "step"}}, "--schedule must be one of"),
        ({"optim": {"optimizer": "sgd"}}, "--optimizer must be one of"),
        ({"optim": {"label_smoothing": 1.0}}, "--label-smoothing"),
        ({"optim": {"warmup_epochs": -1}}, "--warmup-epochs"),
        ({"model": {"drop_path": 1.0}}, "--drop-path"),
        ({"best_metric": "top5"}, "--best-metric must be one of"),
        ({"data": {"augment": {"speed_min": 2.0, "speed_max": 1.0}}}, "speed_min/speed_max"),
        ({"data": {"augment": {"crop_min": 0.0}}}, "crop_min"),
        ({"data": {"augment": {"part_drop_p": 1.5}}}, "part_drop_p"),
    ],
)
def test_recipe_options_are_validated(raw, needle):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(raw)
    assert needle in str(info.value)
