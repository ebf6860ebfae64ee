"""Reflection over the config dataclasses for the command line (cli.py generates `train`,
`evaluate` and `serve` from it) and for the options tables of the docs."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class ConfigOption:
    """A config field that the command line sets."""

    path: tuple[str, ...]  # e.g. ("optim", "lr")
    flag: str  # "--lr", "--eval/--no-eval", or the argument's name
    help: str
    default: Any
    type: Any  # what the command line reads
    resumable: bool
    argument: bool
    envvar: str | None = None  # the environment variable that also sets it (a config's ENV_PREFIX)

    @property
    def name(self) -> str:
        """The command's parameter name: the flag's first word, as an identifier."""
        return self.flag.split("/")[0].lstrip("-").replace("-", "_")

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def _cli_type(f: dataclasses.Field, hint: Any) -> Any:
    """What the command line reads for a field: its cli_type, else its type. A choice is read
    as text and checked by the config, so a bad one is a one-line error like any other."""
    cli = f.metadata.get("cli_type")
    if cli is None and typing.get_origin(hint) is Literal:
        cli = type(typing.get_args(hint)[0])
    if cli is None:
        return hint
    return cli | None if f.default is None else cli


def config_options(cls: type, prefix: tuple[str, ...] = (), env_prefix: str | None = None) -> list[ConfigOption]:
    """The fields of `cls` (nested configs included) that have a command-line flag. When `cls`
    has an ENV_PREFIX (e.g. ACCEL_SIGNS_SERVE_), each can also be set by the environment variable
    ENV_PREFIX + its name in capitals (ACCEL_SIGNS_SERVE_MAX_CLIENTS), nested fields included."""
    out = []
    env_prefix = env_prefix or getattr(cls, "ENV_PREFIX", None) or None
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint, meta = hints[f.name], f.metadata
        if dataclasses.is_dataclass(hint):
            out += config_options(hint, (*prefix, f.name), env_prefix)
        elif meta.get("flag"):
            default = f.default if f.default is not dataclasses.MISSING else ...
            option = ConfigOption(
                (*prefix, f.name),
                meta["flag"],
                meta["help"],
                default,
                _cli_type(f, hint),
                meta.get("resumable", False),
                meta.get("argument", False),
            )
            if env_prefix:
                option = dataclasses.replace(option, envvar=env_prefix + option.name.upper())
            out.append(option)
    return out


def config_fields(cls: type, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], dataclasses.Field]]:
    """Every leaf field of `cls` with its path, nested configs included."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += config_fields(hints[f.name], (*prefix, f.name))
        else:
            out.append(((*prefix, f.name), f))
    return out


def get_path(cfg: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        cfg = getattr(cfg, key)
    return cfg


def set_path(raw: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set a value in a nested config dict (what to_dict gives and from_dict reads)."""
    for key in path[:-1]:
        raw = raw.setdefault(key, {})
    raw[path[-1]] = str(value) if isinstance(value, Path) else value
