"""Settings files: reading a TOML or JSON file of settings and checking their types.

Every settings dataclass of the package (:class:`cardioinr.fit.config.FitConfig`,
:class:`cardioinr.priors.config.PriorConfig`) builds itself with ``from_dict`` and reads files
through :func:`config_from_file`, so a bad file gives the same one-line :class:`ConfigError`
whichever settings it holds.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

from cardioinr.core.console import first_line
from cardioinr.core.errors import ConfigError


def config_from_file(cls: type, path: str | Path, table: str):
    """``cls.from_dict`` of a file's settings; every error names the file."""
    try:
        return cls.from_dict(read_config_table(path, table))
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(f"{path}:") else f"{path}: {msg}") from None


def check_setting_types(cls: type, d: dict, what: str) -> None:
    """Refuse settings whose value does not have the type of the dataclass default: a number
    for a number (an integer for an integer), a string for a string, a list of numbers for a
    tuple, true/false for a flag."""
    defaults = {f.name: f.default for f in fields(cls)}
    for k, v in d.items():
        default = defaults.get(k)
        if isinstance(default, bool):
            ok = isinstance(v, bool)
            want = "true or false"
        elif isinstance(default, int):
            ok = isinstance(v, int) and not isinstance(v, bool)
            want = "an integer"
        elif isinstance(default, float):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            want = "a finite number"
        elif isinstance(default, str):
            ok = isinstance(v, str)
            want = "a string"
        elif isinstance(default, tuple):
            ok = isinstance(v, (list, tuple)) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
            want = "a list of numbers"
        else:
            continue
        if not ok:
            raise ConfigError(f"{what} {k!r} must be {want}, got {v!r}")


def read_config_table(path: str | Path, table: str) -> dict:
    """The settings in a TOML or JSON file: its ``[table]`` if present, else the whole file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text()
        d = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: cannot parse config ({first_line(e, None)})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: a config file must hold a table of settings")
    return d.get(table, d)


__all__ = ["check_setting_types", "config_from_file", "read_config_table"]
