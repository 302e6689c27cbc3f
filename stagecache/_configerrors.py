"""Turning msgspec validation errors into messages a person can act on.

msgspec says ``Object contains unknown field `thresold` - at `$.cache```. We say
``pipeline.toml: cache.thresold: unknown field; valid fields: default_ttl, ...``, or
``cache.scope: invalid value 'per_usr'; valid choices: per_session, per_user, shared``.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any

import msgspec

from stagecache._validate import check_numbers, problem_at
from stagecache.errors import ConfigError

__all__ = ["convert_strict", "struct_field_names"]

_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>[^`]+)`")
_MISSING = re.compile(r"Object missing required field `(?P<name>[^`]+)`")
_STEP = re.compile(r'\."(?P<quoted>[^"]*)"|\.(?P<name>[^.\[]+)|\[(?P<index>\d+)\]')
_ANY_KEY = "[...]"  # how msgspec writes "some key of this dict"


def struct_field_names(tp: Any) -> list[str]:
    """Sorted field names of a Struct type (or [] for anything else)."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return sorted(f.encode_name for f in msgspec.structs.fields(tp))
    return []


def _walk(value: Any, steps: list[str | int]) -> Any:
    for step in steps:
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _type_at(tp: Any, steps: list[str | int]) -> Any:
    for step in steps:
        tp = _unwrap(tp)
        if isinstance(step, int):
            args = typing.get_args(tp)
            tp = args[0] if args else Any
        elif isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            hints = typing.get_type_hints(tp)
            tp = hints.get(step, Any)
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        else:
            return Any
    return _unwrap(tp)


def _unwrap(tp: Any) -> Any:
    # Optional[X] -> X, so "choices" come from the meaningful member.
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def _choices(tp: Any) -> list[str]:
    if typing.get_origin(tp) is typing.Literal:
        return sorted(repr(a) for a in typing.get_args(tp))
    return []


def _steps(path: str) -> list[str | int]:
    steps: list[str | int] = []
    for m in _STEP.finditer(path):
        index = m.group("index")
        name = m.group("quoted") if m.group("quoted") is not None else m["name"]
        steps.append(int(index) if index is not None else name)
    return steps


def _key(key: str) -> str:
    return f".{key}" if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'."{key}"'


def _name_keys(raw: Any, tp: Any, path: str) -> str:
    """Put the key of the bad dict entry where msgspec wrote ``[...]``."""
    while _ANY_KEY in path:
        head, _, tail = path.partition(_ANY_KEY)
        container = _walk(raw, _steps(head))
        value_tp = _type_at(tp, [*_steps(head), "*"])
        if not isinstance(container, dict):
            break
        bad = None
        for key, value in container.items():
            try:
                msgspec.convert(value, value_tp, strict=True)
            except (msgspec.ValidationError, TypeError, ValueError):
                bad = key
                break
        if bad is None:
            break
        path = f"{head}{_key(str(bad))}{tail}"
    return path


def _dotted(prefix: str, path: str) -> str:
    text = path.lstrip(".")
    if prefix:
        text = (
            f"{prefix}.{text}" if text and not text.startswith("[") else prefix + text
        )
    return text or "(top level)"


def convert_strict(
    raw: Any, tp: type[Any], *, file: str | None = None, prefix: str = ""
) -> Any:
    """``msgspec.convert(raw, tp)`` with errors rewritten as :class:`ConfigError`.

    Args:
        raw: decoded TOML (dicts, lists, scalars).
        tp: the Struct type to convert into.
        file: the config file, named in the message.
        prefix: the dotted path of ``raw`` inside the file (``"stages[2]"``).

    Raises:
        ConfigError: naming the file, the field path, the bad value and the valid
            fields or choices.
    """
    try:
        result = msgspec.convert(raw, tp, strict=True)
    except msgspec.ValidationError as exc:
        text = str(exc)
        at = _AT.search(text)
        path = _name_keys(raw, tp, at.group("path") if at else "")
        message = _AT.sub("", text)
        steps = _steps(path)
        if m := _UNKNOWN.match(message):
            container = _type_at(tp, steps)
            valid = struct_field_names(container)
            field = _dotted(prefix, f"{path}.{m.group('name')}")
            hint = f"; valid fields: {', '.join(valid)}" if valid else ""
            raise ConfigError(f"unknown field{hint}", path=file, field=field) from None
        if m := _MISSING.match(message):
            field = _dotted(prefix, f"{path}.{m.group('name')}")
            raise ConfigError(
                "required field is missing", path=file, field=field
            ) from None
        bad = _walk(raw, steps)
        field = _dotted(prefix, path)
        numeric = _numeric_problem(tp, steps, bad)
        if numeric is not None:
            raise ConfigError(numeric, path=file, field=field) from None
        choices = _choices(_type_at(tp, steps))
        detail = message[0].lower() + message[1:] if message else "invalid value"
        text = f"{detail} (got {bad!r:.80})"
        if choices:
            text += f"; valid choices: {', '.join(choices)}"
        raise ConfigError(text, path=file, field=field) from None
    # Python-side checks msgspec cannot express: NaN and infinities in numbers
    # without bounds (third-party configs), on the same code as every section.
    check_numbers(result, path=file, prefix=prefix)
    return result


def _numeric_problem(tp: Any, steps: list[str | int], bad: Any) -> str | None:
    """The range message when the bad value sits in a bounded number field."""
    if isinstance(bad, bool) or not isinstance(bad, int | float):
        return None
    try:
        return problem_at(tp, steps, bad)
    except (TypeError, ValueError):  # a type msgspec.inspect cannot describe
        return None
