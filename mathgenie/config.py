"""The one config system of mathgenie (`mathgenie run`, `eval`, `demo`; `train` uses TRL's `TrlParser`, which
checks the same things): a dataclass per config, every field with its help text, loaded from YAML with command-line
overrides ``section.field=value`` (the value parsed as YAML). An unknown or misspelled key is an error that names the
key, the file and the valid keys; a value of the wrong type names the field::

    cfg = load_yaml(PipelineConfig, "configs/demo.yaml", ["augment.rounds=1", "solve.n=2"])
    print(format_help(PipelineConfig))  # every field with its default and help text
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A bad configuration value or key; the message names the key, the value and the fix."""


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r}: expected one of {list(choices)}")


def check_positive(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{name}={value!r}: give a positive number")


def from_dict(cls: type, data: dict, path: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict; every key is checked against the fields."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"in section {path!r}" if path else "at the top level"
        raise ConfigError(f"unknown config key(s) {unknown} {where}; valid keys: {sorted(fields)}. Remove them or "
                          "fix the spelling (--help-config lists every field).")
    kwargs = {name: _convert(hints[name], value, f"{path}.{name}" if path else name) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path or 'config'}: {e}") from e


_SCALARS = {  # type -> (accepts the YAML value, what to say when it does not)
    bool: (lambda v: isinstance(v, bool), "true or false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    str: (lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool), "a string"),
}


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        return _convert(next(a for a in args if a is not type(None)), value, path)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value or {}, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}={value!r}: expected a list")
        (item,) = typing.get_args(tp) or (Any,)
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}={value!r}: expected a mapping")
        return dict(value)
    if tp in _SCALARS:
        accepts, expected = _SCALARS[tp]
        if not accepts(value):
            raise ConfigError(f"{path}={value!r}: expected {expected}")
        return tp(value)
    return value


def apply_override(data: dict, override: str) -> None:
    """``"section.field=value"`` → sets ``data[section][field]`` (value parsed as YAML: numbers, lists, null)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. solve.n=4 or augment.prompts=[1,3]")
    key, raw = override.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
    node[parts[-1]] = value


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    return data


def load_yaml(cls: type, path: str | Path | None = None, overrides: list[str] = (), values: dict | None = None):
    """YAML file (optional) + ``key=value`` overrides + ``values`` (already parsed, e.g. command-line flags) → ``cls``.
    Later sources win. An error names the file."""
    data = read_yaml(path) if path is not None else {}
    for override in overrides:
        apply_override(data, override)
    data.update(values or {})
    try:
        return from_dict(cls, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able object (dataclasses are converted)."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def field_default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def format_help(cls: type, prefix: str = "") -> str:
    """Every field of the config with its default and help text (``--help-config``)."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines.append(f"\n[{name}]" + (f"  {f.metadata['help']}" if "help" in f.metadata else ""))
            lines.append(format_help(tp, name + "."))
            continue
        choices = f" choices={f.metadata['choices']}" if "choices" in f.metadata else ""
        lines.append(f"  {name} = {field_default(f)!r}{choices}\n      {f.metadata.get('help', '')}")
    return "\n".join(lines)
