"""Turn plain JSON data into typed attrs objects, with errors that name the key.

``structure(cls, data, path)`` checks unknown keys (suggesting the closest valid
one), missing required keys, types (``int``, ``float``, ``bool``, ``str``, ``list[X]``,
``Optional[X]``, ``Literal[...]``, ``Union``, nested attrs classes, ``dict``) and runs
the attrs validators; anything wrong becomes one ``ConfigError`` line.
"""
import difflib
import math
import types
import typing
from typing import Any, Literal, Union

import attrs


class ConfigError(ValueError):
    """A configuration value is missing, misspelt, of the wrong type or out of range."""


class Invalid(ValueError):
    """Raised by validators with a message that starts with the key relative to its
    object (``"lr = -1: expected ..."``); ``structure`` prefixes the object's path."""


_MISSING = object()


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if not args:
            return "a list"
        item = _describe(args[0])
        return "a list of " + (item.split(" ", 1)[1] + "s" if item.startswith(("a ", "an ")) else item)
    if origin is dict or tp is dict:
        return "an object"
    if attrs.has(tp):
        return "an object"
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    return getattr(tp, "__name__", str(tp))


def _fail(path: str, value: Any, expected: str) -> ConfigError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ConfigError(f"{path} = {shown}: expected {expected}")


def convert(value: Any, tp: Any, path: str) -> Any:
    """``value`` checked (and lightly converted) against type ``tp``."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        members = [m for m in typing.get_args(tp) if m is not type(None)]
        if value is None and len(members) < len(typing.get_args(tp)):
            return None
        if len(members) == 1:  # Optional[X]: report X's own error
            return convert(value, members[0], path)
        for member in members:
            try:
                return convert(value, member, path)
            except ConfigError:
                continue
        raise _fail(path, value, _describe(tp))
    if tp is type(None):
        if value is None:
            return None
        raise _fail(path, value, "null")
    if origin is Literal:
        if value in typing.get_args(tp) and type(value) in {type(a) for a in typing.get_args(tp)}:
            return value
        raise _fail(path, value, _describe(tp))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(path, value, "true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer() and math.isfinite(value):
            return int(value)
        raise _fail(path, value, "an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise _fail(path, value, "a finite number")
            return float(value)
        raise _fail(path, value, "a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _fail(path, value, "a string")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _fail(path, value, _describe(tp))
        (item_type,) = typing.get_args(tp)[:1] or (Any,)
        return [convert(v, item_type, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise _fail(path, value, "an object")
        if not all(isinstance(k, str) for k in value):
            raise _fail(path, value, "an object with string keys")
        return dict(value)
    if attrs.has(tp):
        return structure(tp, value, path)
    raise TypeError(f"config_schema cannot check type {tp!r} at {path}")


def closest_key(key: str, valid: list) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def shown_key(key: Any, path: str) -> str:
    shown = key if isinstance(key, str) and key.isprintable() else repr(key)
    return f"{path}.{shown}" if path else shown


def config_keys(cls: type) -> list:
    """The JSON keys ``cls`` accepts: its public fields and their aliases (``__config_aliases__``)."""
    fields = [name for name, f in attrs.fields_dict(cls).items() if f.init and not name.startswith("_")]
    return fields + list(getattr(cls, "__config_aliases__", {}))


def _attrs_type(tp: Any):
    """The attrs class a field holds (directly or as ``Optional``), else None."""
    if attrs.has(tp):
        return tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if attrs.has(a)]
        return inner[0] if len(inner) == 1 else None
    return None


def unknown_keys(cls: type, data: Any, path: str) -> list:
    """``(key path, suggestion, valid keys)`` of every key in ``data`` (and its nested objects) that ``cls``
    does not know."""
    if not isinstance(data, dict):
        return []
    valid = config_keys(cls)
    hints = typing.get_type_hints(cls)
    found = []
    for key, value in data.items():
        if key not in valid:
            found.append((shown_key(key, path), closest_key(str(key), valid), valid))
            continue
        nested = _attrs_type(hints.get(key)) if key in hints else None
        if nested is not None:
            found += unknown_keys(nested, value, shown_key(key, path))
    return found


def unknown_keys_error(found: list) -> ConfigError:
    """One line for every unknown key (``unknown_keys`` triples) at once; with one, the valid keys of its object."""
    if len(found) == 1:
        where, hint, valid = found[0]
        return ConfigError(f"{where}: unknown key{hint}; valid keys: {', '.join(valid)}")
    return ConfigError(f"{len(found)} unknown keys: " + ", ".join(where + hint for where, hint, _ in found))


def _move_aliases(cls: type, data: dict, path: str) -> dict:
    """``__config_aliases__`` applied: ``alias -> field``, or ``alias -> field.subfield`` into a nested object."""
    aliases = getattr(cls, "__config_aliases__", {})
    out = {k: v for k, v in data.items() if k not in aliases}
    for alias, target in aliases.items():
        if alias not in data:
            continue
        head, _, tail = target.partition(".")
        if not tail:
            out[head] = data[alias]
            continue
        nested = dict(out.get(head) or {}) if isinstance(out.get(head, {}), dict) else out[head]
        if not isinstance(nested, dict):
            continue  # the nested object's own error names it
        if tail in nested and nested[tail] != data[alias]:
            raise ConfigError(f"{shown_key(alias, path)} = {data[alias]!r} disagrees with "
                              f"{shown_key(target, path)} = {nested[tail]!r}: set one of them")
        nested[tail] = data[alias]
        out[head] = nested
    return out


def structure(cls: type, data: Any, path: str) -> Any:
    """Build attrs class ``cls`` from the JSON object ``data`` found at ``path``."""
    if not isinstance(data, dict):
        raise _fail(path, data, "an object")
    fields = attrs.fields_dict(cls)
    hints = typing.get_type_hints(cls)
    public = [name for name, f in fields.items() if f.init and not name.startswith("_")]
    found = [(shown_key(key, path), closest_key(str(key), public), public)
             for key in data if key not in config_keys(cls)]
    if found:
        raise unknown_keys_error(found)
    data = _move_aliases(cls, data, path)
    kwargs = {}
    for name in public:
        field = fields[name]
        value = data.get(name, _MISSING)
        sub = f"{path}.{name}" if path else name
        if value is _MISSING:
            if field.default is attrs.NOTHING:
                raise ConfigError(f"{sub}: required key is missing (expected {_describe(hints[name])})")
            continue
        kwargs[name] = convert(value, hints[name], sub)
    try:
        return cls(**kwargs)
    except Invalid as err:
        raise ConfigError(f"{path}.{err}" if path else str(err)) from None


def check(predicate, expected: str):
    """An attrs validator: ``predicate(value)`` must hold, else ``Invalid`` naming ``expected``."""

    def validator(_instance, attribute, value):
        if value is not None and not predicate(value):
            raise Invalid(f"{attribute.name} = {value!r}: expected {expected}")

    return validator


positive = check(lambda v: v > 0, "a value > 0")
non_negative = check(lambda v: v >= 0, "a value >= 0")
unit_interval = check(lambda v: 0 <= v <= 1, "a value in [0, 1]")
open_unit = check(lambda v: 0 <= v < 1, "a value in [0, 1)")


def require(condition: bool, message: str) -> None:
    """Cross-field checks in ``__attrs_post_init__``."""
    if not condition:
        raise Invalid(message)
