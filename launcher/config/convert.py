"""Plain dict -> frozen dataclass, collecting every problem instead of stopping at the first:
unknown keys (with a did-you-mean), missing required settings and wrong types, each a
`Problem` naming the dotted setting. `launcher.config.spec.to_spec` applies it to `JobSpec`."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from launcher.problems import Problem


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str, problems: list[Problem]) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(value, inner[0], where, problems)
    if origin is Literal:
        if value in args and type(value) is type(args[list(args).index(value)]):
            return value
        problems.append(Problem(where, f"{value!r} is not one of {', '.join(map(repr, args))}"))
        return args[0]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            problems.append(Problem(where, f"expected a mapping, got {value!r}"))
            return None
        return build(tp, value, where, problems)
    if origin in (Mapping, dict, typing.Mapping):
        if not isinstance(value, Mapping):
            problems.append(Problem(where, f"expected a mapping, got {value!r}"))
            return {}
        vt = args[1] if args else Any
        return {str(k): _convert(v, vt, f"{where}.{k}", problems) for k, v in value.items()}
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            problems.append(Problem(where, f"expected a list, got {value!r}"))
            return ()
        return tuple(_convert(v, args[0], f"{where}[{i}]", problems) for i, v in enumerate(value))
    if tp is Any:
        return value
    env_number = isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str and (".env." in f".{where}" or ".network." in f".{where}") and env_number:
        return str(value)  # `hw.env.HCCL_CONNECT_TIMEOUT=600` reaches us as an int
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer() and where.endswith("params"):
        return int(value)
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    problems.append(Problem(where, f"expected {_type_name(tp)}, got {value!r}"))
    return value


def settings(cls: Any) -> list[dataclasses.Field]:
    """The fields of a spec dataclass that YAML sets: all but the derived ones
    (launcher.flops.DERIVED), which are computed from other settings."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("derived")]


def build(cls: type, data: Mapping[str, Any], prefix: str, problems: list[Problem]) -> Any:
    """`cls(**data)`, each field converted to its annotated type; what is wrong is appended to
    `problems` (settings named below `prefix`) and a stand-in value is used instead."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in settings(cls)}
    kwargs: dict[str, Any] = {}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{_join(prefix, close[0])}'?)" if close else ""
            problems.append(Problem(_join(prefix, key), f"unknown setting{hint}"))
    for name, f in fields.items():
        where = _join(prefix, name)
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], where, problems)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            problems.append(Problem(where, "missing required setting"))
            kwargs[name] = None
    return cls(**kwargs)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def lenient(cls: type, data: Any, prefix: str) -> Any:
    """`cls` from what a run recorded (its config.yaml), for reading what it used, never for
    planning (`to_spec` is strict): settings added since then take their defaults, settings
    since removed and wrongly typed ones are passed over, a missing required setting is None."""
    problems: list[Problem] = []
    return build(cls, data if isinstance(data, Mapping) else {}, prefix, problems)
