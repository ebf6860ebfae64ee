"""One definition per option: the config field (config.option) holds its default, type and help;
the command line is generated from it. This test fails when they part."""

import dataclasses

import pytest
import typer
import typer.main

from accel_signs.cli import app
from accel_signs.config import EvalConfig, TrainConfig, config_fields, config_options
from accel_signs.serve.config import ServeConfig

COMMAND_ONLY = {"train": {"config", "resume"}, "evaluate": set(), "serve": set()}


@pytest.mark.parametrize("cls", [TrainConfig, EvalConfig, ServeConfig])
def test_every_field_is_documented_once(cls):
    for path, f in config_fields(cls):
        assert f.metadata.get("help"), f"{'.'.join(path)} has no help text (config.option(..., help))"
    flags = [o.flag for o in config_options(cls)]
    assert len(flags) == len(set(flags))


@pytest.mark.parametrize("command,cls", [("train", TrainConfig), ("evaluate", EvalConfig), ("serve", ServeConfig)])
def test_command_options_are_the_config_fields(command, cls):
    click_command = typer.main.get_command(app).commands[command]
    params = {p.name: p for p in click_command.params}
    options = {o.name: o for o in config_options(cls)}
    assert set(params) - COMMAND_ONLY[command] == set(options), (
        "an option without a field, or a field without its option"
    )
    for name, o in options.items():
        p = params[name]
        assert p.help == o.help, name
        expected = "" if o.default == () else o.default
        if not o.argument:
            assert p.default == expected, f"{name}: the command says {p.default!r}, the config {expected!r}"
            assert p.opts[0] == o.flag.split("/")[0], name


def test_defaults_come_from_the_config_only():
    """Without --config, options not given keep the dataclass's defaults (the CLI never writes
    its own): a train config from an empty command line equals TrainConfig()."""
    from typer.testing import CliRunner

    seen = {}

    def fake_train(cfg, resume=None):
        seen["cfg"], seen["resume"] = cfg, resume
        return "runs/x/best"

    import accel_signs.training.loop as trainer

    original = trainer.train
    trainer.train = fake_train
    try:
        result = CliRunner().invoke(app, ["train"])
    finally:
        trainer.train = original
    assert result.exit_code == 0, result.stderr
    assert seen["cfg"] == TrainConfig() and seen["resume"] is None


def test_resumable_fields_are_marked_in_the_config():
    resumable = {o.dotted for o in config_options(TrainConfig) if o.resumable}
    assert resumable == {
        "num_epochs",
        "data.num_workers",
        "data.data_on_device",
        "data.cache_dir",
        "output_dir",
        "run_name",
        "evaluate",
        "log_with",
        "compile",
        "compile_mode",
    }
    assert all(isinstance(f, dataclasses.Field) for _, f in config_fields(TrainConfig))


@pytest.mark.parametrize("cls", [TrainConfig, EvalConfig, ServeConfig])
def test_readme_lists_every_option(cls):
    """Adding an option touches its config field and its line in the README's options table."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    missing = [o.flag for o in config_options(cls) if not o.argument and f"`{o.flag.split('/')[0]}" not in readme]
    assert not missing, f"options missing from the README's tables: {missing}"
