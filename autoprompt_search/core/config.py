"""Strict YAML loading and dataclass configs.

YAML is read with ``yaml.safe_load`` only (no tags, no code). Mappings are turned
into dataclasses by :func:`from_mapping`, which rejects unknown keys with a message
naming the key and the file, and suggests the closest known key.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import UserError, did_you_mean
from .files import read_text

C = TypeVar("C")
E = TypeVar("E", bound=enum.Enum)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a :class:`UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    try:
        data = yaml.safe_load(read_text(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: malformed YAML{where}: {problem}") from None
    if data is None:
        raise UserError(f"{path}: the file is empty; expected a mapping of keys to values")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


def check_keys(data: dict[str, Any], allowed: typing.Iterable[str], source: str) -> None:
    """Raise a :class:`UserError` naming the first key not in ``allowed``."""
    allowed = list(allowed)
    for key in data:
        if key not in allowed:
            raise UserError(
                f"{source}: unknown key '{key}'{did_you_mean(str(key), allowed)}; "
                f"allowed keys: {', '.join(allowed)}"
            )


def parse_choice(enum_cls: type[E], value: Any, where: str) -> E:
    """``value`` as a member of the closed choice ``enum_cls`` (configs built in Python may pass
    plain strings); anything else is a user error naming the choices."""
    try:
        return enum_cls(value)
    except ValueError:
        choices = [str(m.value) for m in enum_cls]
        raise UserError(f"{where}: '{value}' is not one of {', '.join(choices)}"
                        f"{did_you_mean(str(value), choices)}") from None


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Light type coercion for values coming from YAML / the command line."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _coerce(value, non_none[0], where)
        return value
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return parse_choice(annotation, value, where)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "1", "yes", "false", "0", "no"}:
            return value.lower() in {"true", "1", "yes"}
        raise UserError(f"{where}: expected true or false, got {value!r}")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise UserError(f"{where}: expected a number, got {value!r}")
        try:
            number = annotation(value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: expected {annotation.__name__}, got {value!r}") from None
        if annotation is int and isinstance(value, float) and value != number:
            raise UserError(f"{where}: expected an integer, got {value!r}")
        return number
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise UserError(f"{where}: expected text, got {type(value).__name__}")
        return str(value)
    if origin in (list, tuple) and isinstance(value, str):
        value = [v for v in value.split(",") if v != ""]
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, args[0], where) for v in value] if args else value
    return value


def from_mapping(cls: type[C], data: dict[str, Any], source: str) -> C:
    """Build dataclass ``cls`` from ``data``; unknown keys are errors naming ``source``."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    check_keys(data, fields, source)
    hints = typing.get_type_hints(cls)
    kwargs = {
        name: _coerce(value, hints[name], f"{source}: key '{name}'") for name, value in data.items()
    }
    try:
        return cls(**kwargs)
    except TypeError as exc:  # missing required keys
        raise UserError(f"{source}: {exc}") from None


def to_jsonable(obj: Any) -> Any:
    """A JSON-ready copy of dataclasses, enums, paths and containers."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


def field_help(cls: type) -> list[tuple[str, str, Any]]:
    """(name, help, default) for each field of a dataclass config, for ``--help``."""
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        rows.append((f.name, f.metadata.get("help", ""), default))
    return rows


def dump_json(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False, sort_keys=False)


def resumable_fields(cls: type) -> set[str]:
    """The fields of a dataclass config declared ``metadata={"resumable": True}``: settings
    (budgets, display, workers) that may change when a run is resumed."""
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("resumable")}
