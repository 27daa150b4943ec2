"""User configuration: YAML defaults from ``config/`` and ``key=value`` overrides on the command line.

Both are applied onto Isaac Lab ``@configclass`` objects. Keys are dotted paths (``randomization.mass_range``);
values are parsed as YAML (``[0.1, 0.3]``, ``true``, ``12``). An unknown key or a value of the wrong type
raises :class:`ConfigError` naming the key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ConfigError", "CONFIG_DIR", "apply_mapping", "apply_overrides", "load_yaml", "set_value"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
"""The repository's ``config/`` folder of user-facing defaults."""


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names it."""


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from error
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    return data


def _coerce(key: str, current: Any, value: Any) -> Any:
    if current is None or value is None:
        return value
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if isinstance(current, (int, float)) and not isinstance(current, bool):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return type(current)(value) if isinstance(current, float) or float(value).is_integer() else value
    if isinstance(current, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(current):
            raise ConfigError(f"{key} must be a list of {len(current)} values, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", c, v) for i, (c, v) in enumerate(zip(current, value)))
    if isinstance(current, str):
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return str(value)
    return value


def apply_mapping(cfg: Any, values: Mapping[str, Any], prefix: str = "") -> Any:
    """Set nested fields of ``cfg`` from a (nested) mapping; returns ``cfg``."""
    for name, value in values.items():
        key = f"{prefix}{name}"
        if not hasattr(cfg, name) or name.startswith("_"):
            raise ConfigError(f"unknown config key {key!r}")
        current = getattr(cfg, name)
        if isinstance(value, Mapping) and hasattr(current, "__dataclass_fields__"):
            apply_mapping(current, value, prefix=f"{key}.")
        elif isinstance(value, Mapping) and hasattr(current, "from_dict"):
            setattr(cfg, name, type(current).from_dict({**current.to_dict(), **value}))
        else:
            setattr(cfg, name, _coerce(key, current, value))
    return cfg


def apply_overrides(cfg: Any, overrides: Iterable[str]) -> Any:
    """Apply ``key=value`` strings (Hydra style) onto ``cfg``; returns ``cfg``."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"cannot parse the value of {key!r}: {error}") from error
        set_value(cfg, key, value)
    return cfg


def set_value(cfg: Any, key: str, value: Any) -> Any:
    """Set one dotted ``key`` of ``cfg`` to an already parsed ``value``; returns ``cfg``."""
    nested = value
    for part in reversed(key.split(".")):
        nested = {part: nested}
    return apply_mapping(cfg, nested)
