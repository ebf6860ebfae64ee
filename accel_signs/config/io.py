"""Config files and dicts: reading JSON/YAML, upgrading versions 1 and 2, and building any config
dataclass from a nested dict, driven by its fields' type hints (Optional, tuple, Path, Literal,
nested dataclasses). It knows no config class, so schema.py uses it without an import cycle.

Why our own ~50 lines and not dacite, cattrs or pydantic: the core install must stay torch,
accelerate, safetensors, matplotlib, typer and numpy, and none of those three is among them;
the dataclasses validate themselves (schema.py), so this only has to check JSON/YAML types."""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

from accel_signs.core.errors import ConfigError

CONFIG_VERSION = 4

# What the settings added in config version 2 were before they existed: a version 1 config
# (a run or checkpoint from before) means exactly the run it described.
SEED_RECIPE: dict[str, Any] = {
    "model": {"drop_path": 0.0, "input": {"kind": "raw", "handedness": False}},
    "optim": {"optimizer": "adam", "weight_decay": 1e-4, "schedule": "plateau", "label_smoothing": 0.0},
    "data": {
        "augment": {
            "mirror_p": 0.5,
            "crop_min": 1.0,
            "speed_min": 1.0,
            "speed_max": 1.0,
            "hand_p": 0.0,
            "noise": 0.0,
            "part_drop_p": 0.0,
            "frame_drop_p": 0.0,
            "time_mask_p": 0.0,
            "mixup_p": 0.0,
        }
    },
    "best_metric": "val_loss",
}


# What the settings added in config version 3 were before: the validation split by (sign,
# signer) group and accuracy ties broken by val loss alone. A run written then resumes on the
# same split and picks its best epoch as it did.
BEFORE_V3: dict[str, Any] = {"data": {"val_split": "group"}, "best_window": 1}

# What version 4 changed: mixup over sequences became a default (docs/results.md). A run or
# checkpoint written before it trained without mixup unless its config said otherwise.
BEFORE_V4: dict[str, Any] = {"data": {"augment": {"mixup_p": 0.0}}}


def upgrade_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """A version 1 config, with the settings version 2 added filled in as version 1 behaved;
    values the config itself gives win."""
    return _merge(SEED_RECIPE, raw)


def upgrade_v2(raw: dict[str, Any]) -> dict[str, Any]:
    """A version 2 (or upgraded version 1) config, with the settings version 3 added filled in as
    version 2 behaved; values the config itself gives win."""
    return _merge(BEFORE_V3, raw)


def upgrade_v3(raw: dict[str, Any]) -> dict[str, Any]:
    """A version 3 (or upgraded older) config, with the defaults version 4 changed as version 3
    had them; values the config itself gives win."""
    return _merge(BEFORE_V4, raw)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def current_version(raw: dict[str, Any]) -> dict[str, Any]:
    """A saved train config as the current version's dict: without its `runtime` record (what
    a run resolved to, not a setting) and its version, an older version upgraded."""
    raw = dict(raw)
    raw.pop("runtime", None)
    version = raw.pop("version", CONFIG_VERSION)
    upgrades = (upgrade_v1, upgrade_v2, upgrade_v3)
    if isinstance(version, int) and 1 <= version < CONFIG_VERSION:
        for upgrade in upgrades[version - 1 :]:
            raw = upgrade(raw)
        return raw
    if version != CONFIG_VERSION:
        raise ConfigError(f"config version {version} is not supported (this accel_signs reads 1 to {CONFIG_VERSION})")
    return raw


def from_dict(cls: type, raw: Any, where: str = "") -> Any:
    """`cls(**raw)`, nested configs built from their dicts, each value checked against its
    field's type; unknown keys are errors, not silently ignored. `where`: the key path of `raw`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(raw).__name__}")
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(
            f"{where or 'config'}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    hints = typing.get_type_hints(cls)
    return cls(**{key: _coerce(value, hints[key], f"{where}.{key}" if where else key) for key, value in raw.items()})


# The JSON/YAML values each plain type takes (a bool is an int to Python, never here).
_ACCEPTS: dict[Any, tuple[type, ...]] = {int: (int,), float: (int, float), Path: (str, Path)}


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check a config file's value against its field's type (JSON and YAML types are loose:
    YAML reads `1e-3` as a string, JSON has no tuples). Which choice a Literal takes, and the
    items of a tuple, are checked by the dataclass itself, which names the option."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{where} may not be null")
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        exact = [a for a in members if typing.get_origin(a) is None and type(value) is a]
        for member in exact or members:
            try:
                return _coerce(value, member, where)
            except ConfigError as e:
                error = e
        raise error
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else from_dict(hint, value, where)
    if origin is Literal and any(type(value) is type(a) for a in args):
        return value
    if origin is tuple and isinstance(value, (str, list, tuple)):
        return value if isinstance(value, str) else tuple(value)  # "1-10,15": parsed by the field
    if hint is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    accepted = _ACCEPTS.get(hint, (hint,) if isinstance(hint, type) else ())
    if isinstance(value, accepted) and not (isinstance(value, bool) and hint is not bool):
        return hint(value) if hint in (float, Path) else value
    name = getattr(hint, "__name__", str(hint)) if origin is not Literal else "one of " + ", ".join(map(str, args))
    raise ConfigError(f"{where}: expected {name}, got {type(value).__name__} {value!r}")


def default_cache_dir() -> Path:
    """Where the embedded synthetic data set is generated: $ACCEL_SIGNS_CACHE, else
    $XDG_CACHE_HOME/accel_signs, else ~/.cache/accel_signs."""
    if os.environ.get("ACCEL_SIGNS_CACHE"):
        return Path(os.environ["ACCEL_SIGNS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "accel_signs"


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a JSON or YAML config file (e.g. a run's saved config.json) as a nested dict."""
    try:
        text = path.read_text("utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text ({e})") from None
    yaml_file = path.suffix in (".yaml", ".yml")
    try:
        if yaml_file:
            import yaml  # accelerate depends on PyYAML

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - both parsers raise their own error types
        raise ConfigError(f"config file {path} is not valid {'YAML' if yaml_file else 'JSON'}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data
