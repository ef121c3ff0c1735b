"""Typed settings: the dataclasses are the schema, this module checks a config table against them.

A setting's type is its field's annotation; its range, an extra check and its line in
the README are the field's metadata (:func:`doc`). :func:`read_table` turns one TOML or
JSON table into typed values and refuses the first wrong key in one line, naming it:
``key 'workers': expected an integer, got "two"``; an unknown key names the nearest
valid one. A boolean must be a TOML/JSON boolean (``"no"`` is not false), an integer an
integer (``"5"`` is not 5), a list a list (``"PA"`` is not ``["PA"]``).

Why not pydantic, which is in the venv: it arrives only with the test extras
(kubernetes, the OpenAPI validators), no runtime dependency needs it, and importing it
costs the client (issue 15: its memory is budgeted) 4 MiB of peak RSS and ~0.09 s of CPU
on top of what a run imports anyway (174 vs 170 MiB, 1.05 vs 0.96 s: medians of 7
interleaved runs importing config, distributed and pipeline, with and without pydantic).
What a config file needs (booleans, integers, numbers, strings, lists, optional values,
nested tables, ranges, nearest names) is this module over ``dataclasses.fields`` and
``typing.get_type_hints``, with nothing to install.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Collection, Iterator, Mapping
from functools import cache
from typing import Any

from cxr_dask.errors import ConfigError

_NOUNS: dict[Any, str] = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "table"}
_PLURALS = {"boolean": "booleans", "integer": "integers", "number": "numbers", "string": "strings", "table": "tables"}


def doc(
    text: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    check: Callable[[Any], str | None] | None = None,
    secret: bool = False,
    shown: str | None = None,
) -> dict[str, Any]:
    """Field metadata: the README's line for a setting, its range, an extra check.

    ``check`` returns a complaint (or None) about a converted value; ``secret`` keeps a
    wrong value out of the error (only its type is named: storage options hold keys);
    ``shown`` replaces the README's rendering of a long default.
    """
    meta: dict[str, Any] = {"doc": text}
    for name, value in (("minimum", minimum), ("maximum", maximum), ("check", check), ("shown", shown)):
        if value is not None:
            meta[name] = value
    if secret:
        meta["secret"] = True
    return meta


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def keys_of(cls: type, tables: Collection[type] = ()) -> list[dataclasses.Field[Any]]:
    """The fields of ``cls`` a table sets; a field whose type is one of ``tables`` is a table of its own."""
    hints = _hints(cls)
    return [f for f in dataclasses.fields(cls) if f.init and hints[f.name] not in tables]


def read_table(data: object, cls: type, path: str, tables: Collection[type] = ()) -> dict[str, Any]:
    """Typed values of the keys ``data`` sets, checked against ``cls``'s fields; unset keys are absent."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"key '{path}': expected a table, got {_shown(data, {})}")
    known = {f.name: f for f in keys_of(cls, tables)}
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in known:
            raise ConfigError(unknown_key(where, str(key), known))
        values[key] = convert(value, hints[key], where, known[key].metadata)
    return values


def unknown_key(where: str, key: str, known: Collection[str]) -> str:
    """``unknown key 'a.b' (did you mean 'c'?)``, or the valid keys when none is near."""
    import difflib  # only on this error path

    near = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f"did you mean '{near[0]}'?" if near else f"valid keys: {', '.join(sorted(known))}"
    return f"unknown key '{where}' ({hint})"


def build(cls: type, data: object, path: str) -> Any:
    """An instance of the dataclass ``cls`` from a table; its own checks are named by ``path``."""
    values = read_table(data, cls, path)
    for f in dataclasses.fields(cls):
        if f.init and f.name not in values and _required(f):
            raise ConfigError(f"key '{path}.{f.name}' is required")
    try:
        return cls(**values)
    except ConfigError as error:
        raise ConfigError(f"key '{path}': {error}") from None


def _required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def convert(value: object, hint: Any, path: str, meta: Mapping[str, Any]) -> Any:
    """``value`` as the type ``hint`` (nothing is coerced but int -> float and list -> tuple/frozenset)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        if len(options) != 1:
            raise TypeError(f"a setting cannot be of type {hint}")
        return convert(value, options[0], path, meta)
    if hint in (bool, int, float, str):
        ok = isinstance(value, hint) and (hint is bool or not isinstance(value, bool))
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise _wrong(path, hint, value, meta)
        _check_range(value, path, meta)
    elif hint is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise _wrong(path, hint, value, meta)
        value = dict(value)
    elif origin in (tuple, frozenset, list):
        if not isinstance(value, list | tuple):
            raise _wrong(path, hint, value, meta)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise _wrong(path, hint, value, meta)
            value = tuple(convert(v, a, f"{path}[{i}]", {}) for i, (v, a) in enumerate(zip(value, args, strict=True)))
        else:
            value = origin(convert(v, args[0], f"{path}[{i}]", {}) for i, v in enumerate(value))
    elif dataclasses.is_dataclass(hint):
        value = build(typing.cast(type, hint), value, path)
    else:
        raise TypeError(f"a setting cannot be of type {hint}")
    complaint = meta["check"](value) if "check" in meta else None
    if complaint:
        raise ConfigError(f"key '{path}': {complaint}")
    return value


def _check_range(value: Any, path: str, meta: Mapping[str, Any]) -> None:
    if isinstance(value, str):
        return
    if "minimum" in meta and value < meta["minimum"]:
        raise ConfigError(f"key '{path}': must be at least {meta['minimum']:g}, got {value:g}")
    if "maximum" in meta and value > meta["maximum"]:
        raise ConfigError(f"key '{path}': must be at most {meta['maximum']:g}, got {value:g}")


def _wrong(path: str, hint: Any, value: object, meta: Mapping[str, Any]) -> ConfigError:
    expected = "true or false" if hint is bool else _article(describe(hint))
    return ConfigError(f"key '{path}': expected {expected}, got {_shown(value, meta)}")


def _article(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _shown(value: object, meta: Mapping[str, Any]) -> str:
    """A wrong value as the file wrote it, short; only its kind when the setting is secret."""
    if isinstance(value, bool):
        kind, text = "boolean", json.dumps(value)
    elif isinstance(value, int | float):
        kind, text = "number", repr(value)
    elif isinstance(value, str):
        kind, text = "string", json.dumps(value if len(value) <= 40 else value[:40] + "...")
    elif value is None:
        return "null"
    elif isinstance(value, Mapping):
        return "a table"
    elif isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    else:
        return _article(type(value).__name__)
    return _article(kind) if meta.get("secret") else text


def describe(hint: Any) -> str:
    """The type as a reader says it: ``integer``, ``list of strings``, ``list of 4 integers``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args if a is not type(None))
    if hint in _NOUNS or origin is dict:
        return _NOUNS[origin or hint]
    if dataclasses.is_dataclass(hint):
        return "table"
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        item = describe(args[0])
        return f"list of {len(args)} {_PLURALS.get(item, item)}"
    if origin in (tuple, frozenset, list):
        item = describe(args[0])
        return f"list of {_PLURALS.get(item, item.replace('list', 'lists', 1))}"
    return str(hint)


# --------------------------------------------------------------------- the README table


def reference_rows(cls: type, path: str, tables: Collection[type] = ()) -> Iterator[tuple[str, str, str, str]]:
    """``(key, type, default, meaning)`` of every key of ``cls``, nested tables of a list included."""
    hints = _hints(cls)
    for f in keys_of(cls, tables):
        hint, key = hints[f.name], f"{path}.{f.name}" if path else f.name
        yield key, _type_cell(hint, f.metadata), _default_cell(f), f.metadata.get("doc", "")
        item = _list_item(hint)
        if item is not None and dataclasses.is_dataclass(item):
            yield from reference_rows(typing.cast(type, item), f"{key}[]")


def _list_item(hint: Any) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (tuple, frozenset, list) and args and (origin is not tuple or args[-1] is Ellipsis):
        return args[0]
    return None


def _type_cell(hint: Any, meta: Mapping[str, Any]) -> str:
    text = describe(hint)
    if "minimum" in meta and "maximum" in meta:
        text += f", {meta['minimum']:g} to {meta['maximum']:g}"
    elif "minimum" in meta:
        text += f" >= {meta['minimum']:g}"
    return text


def _default_cell(f: dataclasses.Field[Any]) -> str:
    if "shown" in f.metadata:
        return str(f.metadata["shown"])
    if _required(f):
        return "required"
    value = f.default_factory() if callable(f.default_factory) else f.default
    return f"`{_toml(value)}`" if value is not None else "none"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, str | int | float):
        return json.dumps(value)
    if isinstance(value, frozenset):
        value = sorted(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return str(value)


def markdown_table(rows: Collection[tuple[str, str, str, str]]) -> str:
    """The rows as a Markdown table (the README's config file section)."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{key}` | {kind} | {default} | {meaning} |" for key, kind, default, meaning in rows]
    return "\n".join(lines)
