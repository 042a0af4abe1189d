"""Typed config machinery: YAML/dict -> nested frozen dataclasses, dotted overrides, field docs.

Every config section is a frozen dataclass whose fields carry an attribute docstring (the line
string right under the field, cleanrl style). This module turns plain dicts into those dataclasses,
checking every key and every value type on the way in, so that a bad recipe fails at start-up with
a message that names the key and says what would be valid.

    build(ReProConfig, {"top_k": 5})          -> ReProConfig(top_k=5, ...)
    apply_overrides(raw, ["repro.top_k=5"])   -> raw dict with the override applied
    field_docs(ReProConfig)                   -> {"top_k": "Keep the top-k ...", ...}
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import textwrap
import types
import typing
from typing import Any, Literal, Union

import yaml

from .redact import redact  # saved configs, wandb and reports never hold a secret


class ConfigError(ValueError):
    """A recipe or CLI value is invalid; the message names the key and the fix."""


def _origin(tp):
    return typing.get_origin(tp)


def describe_type(tp) -> str:
    """Human-readable type, as shown in errors and in docs/recipes.md."""
    if tp is type(None):
        return "null"
    if _origin(tp) is Literal:
        return " | ".join(repr(a) if not isinstance(a, str) else a for a in typing.get_args(tp))
    if _origin(tp) in (Union, types.UnionType):
        return " | ".join(describe_type(a) for a in typing.get_args(tp))
    if _origin(tp) in (tuple, list):
        args = typing.get_args(tp)
        return f"list of {describe_type(args[0])}" if args else "list"
    if _origin(tp) is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "section"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp, key: str):
    """Check `value` against type `tp` (YAML scalars), converting int->float and list->tuple."""
    origin = _origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a section (a mapping of keys), got {value!r}")
        return build(tp, value, prefix=key + ".")
    if origin in (Union, types.UnionType):
        return _coerce_union(value, tp, key)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"'{key}' must be one of {', '.join(map(str, choices))}; got {value!r}{hint}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{key}' must be a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return dict(value)
    return _coerce_scalar(value, tp, key)


def _coerce_union(value: Any, tp, key: str):
    """The first member type of the union `tp` that `value` fits (None for an Optional)."""
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    for a in args:
        if a is type(None):
            continue
        try:
            return _coerce(value, a, key)
        except ConfigError:
            pass
    raise ConfigError(f"'{key}' must be {describe_type(tp)}, got {value!r}")


def _coerce_scalar(value: Any, tp, key: str):
    """`value` as a bool, int, float or str (YAML 1.1 reads 1e-6, without a dot, as a string)."""
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} for '{key}'")


def build(cls, data: dict, prefix: str = ""):
    """Build dataclass `cls` from a plain dict; unknown keys and wrong types raise ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError(f"'{prefix.rstrip('.') or 'config'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for k in data:
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f"did you mean '{prefix}{close[0]}'? " if close else ""
            raise ConfigError(f"unknown key '{prefix}{k}': {hint}valid keys here: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:  # a section's own checks (__post_init__)
        raise ConfigError(f"'{prefix.rstrip('.') or 'config'}': {e}") from None


def to_dict(cfg) -> dict:
    """The resolved config as plain YAML-able data (tuples become lists), secrets redacted (redact.py)."""

    def conv(x):
        if dataclasses.is_dataclass(x):
            return {f.name: conv(getattr(x, f.name)) for f in dataclasses.fields(x)}
        if isinstance(x, (tuple, list)):
            return [conv(v) for v in x]
        if isinstance(x, dict):
            return {k: conv(v) for k, v in x.items()}
        return x

    return redact(conv(cfg))


def dump_yaml(cfg) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'algo.alpha=0.2' -> (['algo', 'alpha'], 0.2); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value (e.g. repro.alpha=0.2)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{text}': value is not valid YAML ({e})") from None
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply dotted `key=value` overrides onto a nested dict (copying what it changes)."""
    out = dict(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[path[-1]] = value
    return out


def field_docs(cls) -> dict[str, str]:
    """Attribute docstrings of a dataclass: the string literal right below each field."""
    try:
        src = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = ast.parse(src).body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def iter_fields(cls, prefix: str = ""):
    """Yield (dotted key, type, default, doc) for every leaf field, sections expanded."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from iter_fields(tp, prefix + f.name + ".")
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        yield prefix + f.name, tp, default, docs.get(f.name, "")
