"""Numeric bounds of every config field: declared once, checked by one function.

A config Struct declares each number with a bounded type, an ``Annotated[int | float,
msgspec.Meta(...)]`` (the aliases below, or an inline one for a field of its own)::

    class StoreConfig(msgspec.Struct, CheckNumbers, frozen=True, kw_only=True):
        max_answer_chars: Chars = 100_000
        timeout_s: Seconds | None = None

msgspec enforces the bounds when a file is decoded; :func:`check_numbers` enforces
the same bounds on a Struct built in Python (the :class:`CheckNumbers` mixin runs it
in ``__post_init__``) and rejects NaN and infinities everywhere, also in third-party
configs that declare no bounds. It walks nested Structs, lists and dicts and names
the dotted field (``stages[2].timeout_s``). :func:`unbounded_fields` lists the
numbers that lack a lower or an upper bound, so a test can keep every built-in
config bounded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import Annotated, Any

import msgspec
import msgspec.inspect as mi

from stagecache.errors import ConfigError

__all__ = [
    "MAX_DEPTH",
    "MAX_SECONDS",
    "Chars",
    "CheckNumbers",
    "Delay",
    "Port",
    "Retries",
    "Seconds",
    "Unit",
    "check_numbers",
    "check_tree",
    "describe",
    "number_problem",
    "problem_at",
    "unbounded_fields",
]

#: The longest timeout, wait or interval a config may set: one day.
MAX_SECONDS = 86_400.0
#: The deepest nesting of tables and arrays a config file may have.
MAX_DEPTH = 16

Seconds = Annotated[float, msgspec.Meta(gt=0, le=MAX_SECONDS)]
"""A timeout, wait or interval: more than 0, at most a day."""
Delay = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]
"""A delay that may be zero, at most a day."""
Unit = Annotated[float, msgspec.Meta(ge=0, le=1)]
"""A share or score in [0, 1]."""
Chars = Annotated[int, msgspec.Meta(ge=1, le=100_000_000)]
"""A length limit in characters."""
Retries = Annotated[int, msgspec.Meta(ge=0, le=100)]
"""How many times a failed call is retried."""
Port = Annotated[int, msgspec.Meta(ge=0, le=65_535)]
"""A TCP port (0: the system picks a free one)."""

_Numeric = mi.IntType | mi.FloatType


class CheckNumbers:
    """Mixin of config Structs: checks the numbers whenever one is built.

    ``class StoreConfig(msgspec.Struct, CheckNumbers, frozen=True)``: msgspec calls
    ``__post_init__`` after a decode and after a construction in Python alike.

    Raises:
        ConfigError: from ``__post_init__``, naming the field and its valid range.
    """

    __slots__ = ()

    def __post_init__(self) -> None:
        check_numbers(self)


def _fmt(x: float) -> str:
    if float(x).is_integer():
        n = int(x)
        return f"{n:_}" if abs(n) >= 1_000_000 else str(n)
    return repr(float(x))


def describe(info: _Numeric) -> str:
    """``an integer in [1, 100], i.e. >= 1 and <= 100`` for a bounded type."""
    noun = "an integer" if isinstance(info, mi.IntType) else "a finite number"
    low: tuple[str, str, float] | None = None
    if info.gt is not None:
        low = ("(", ">", info.gt)
    elif info.ge is not None:
        low = ("[", ">=", info.ge)
    high: tuple[str, str, float] | None = None
    if info.lt is not None:
        high = (")", "<", info.lt)
    elif info.le is not None:
        high = ("]", "<=", info.le)
    parts = [f"{op} {_fmt(v)}" for _, op, v in (b for b in (low, high) if b)]
    if low is None or high is None:
        return " ".join([noun, " and ".join(parts)]) if parts else noun
    interval = f"{low[0]}{_fmt(low[2])}, {_fmt(high[2])}{high[0]}"
    return f"{noun} in {interval}, i.e. {' and '.join(parts)}"


def number_problem(value: Any, info: _Numeric) -> str | None:
    """Why ``value`` does not fit the bounded type ``info`` (None when it does)."""
    wanted = describe(info)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r:.80} must be {wanted}"
    if isinstance(info, mi.IntType) and not isinstance(value, int):
        return f"{value!r} must be {wanted}"
    if not math.isfinite(value):
        return f"{value!r} must be {wanted}"
    out = (
        (info.gt is not None and not value > info.gt)
        or (info.ge is not None and not value >= info.ge)
        or (info.lt is not None and not value < info.lt)
        or (info.le is not None and not value <= info.le)
    )
    return f"{value!r} is out of range: must be {wanted}" if out else None


@lru_cache(maxsize=256)
def _info(tp: Any) -> mi.Type:
    return mi.type_info(tp)


def _join(where: str, step: str | int) -> str:
    if isinstance(step, int):
        return f"{where}[{step}]"
    if not re.fullmatch(r"[A-Za-z0-9_*-]+", step):
        step = f'"{step}"'  # a dict key such as a model id with dots
    return f"{where}.{step}" if where else step


def _fits(info: mi.Type, value: Any) -> bool:
    if isinstance(info, mi.Metadata):
        info = info.type
    if isinstance(info, mi.NoneType):
        return value is None
    if isinstance(info, mi.IntType):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(info, mi.FloatType):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(info, mi.StructType):
        return type(value) is info.cls
    if isinstance(info, mi.ListType | mi.VarTupleType):
        return isinstance(value, list | tuple)
    if isinstance(info, mi.DictType):
        return isinstance(value, dict)
    return False


def _problems(value: Any, info: mi.Type, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(info, mi.Metadata):
        info = info.type
    if isinstance(info, mi.UnionType):
        member = next((t for t in info.types if _fits(t, value)), None)
        numeric = [t for t in info.types if isinstance(t, _Numeric)]
        if member is None and value is not None and numeric:
            member = numeric[0]  # a wrong type where a number belongs
        if member is not None:
            yield from _problems(value, member, where)
    elif isinstance(info, _Numeric):
        problem = number_problem(value, info)
        if problem is not None:
            yield where, problem
    elif isinstance(info, mi.StructType) and isinstance(value, msgspec.Struct):
        for f in info.fields:
            name = _join(where, f.encode_name)
            yield from _problems(getattr(value, f.name), f.type, name)
    elif isinstance(info, mi.ListType | mi.VarTupleType) and isinstance(
        value, list | tuple
    ):
        for i, item in enumerate(value):
            yield from _problems(item, info.item_type, _join(where, i))
    elif isinstance(info, mi.DictType) and isinstance(value, dict):
        for key, item in value.items():
            yield from _problems(item, info.value_type, _join(where, str(key)))


def check_numbers(obj: object, *, path: str | None = None, prefix: str = "") -> None:
    """Check every number in ``obj`` (nested Structs, lists, dicts included).

    Args:
        obj: a config Struct, built in Python or decoded.
        path: the config file, named in the error.
        prefix: the dotted path of ``obj`` in the file (``"stages[2]"``).

    Raises:
        ConfigError: the first number that is not finite or not within its field's
            bounds, naming the dotted field and the valid range.
    """
    tp: Any = type(obj)
    for where, problem in _problems(obj, _info(tp), prefix):
        raise ConfigError(problem, path=path, field=where or None)


def problem_at(tp: Any, steps: list[str | int], value: Any) -> str | None:
    """The range message for ``value`` at ``steps`` inside ``tp``, if it is a number.

    Used to word msgspec's decode-time constraint errors like :func:`check_numbers`.
    """
    info: mi.Type = _info(tp)
    for step in steps:
        if isinstance(info, mi.Metadata):
            info = info.type
        if isinstance(info, mi.UnionType):
            members = [t for t in info.types if not isinstance(t, mi.NoneType)]
            if len(members) != 1:
                return None
            info = members[0]
        if isinstance(step, str) and isinstance(info, mi.StructType):
            found = [f.type for f in info.fields if f.encode_name == step]
            if not found:
                return None
            info = found[0]
        elif isinstance(step, int) and isinstance(info, mi.ListType | mi.VarTupleType):
            info = info.item_type
        elif isinstance(step, str) and isinstance(info, mi.DictType):
            info = info.value_type
        else:
            return None
    if isinstance(info, mi.Metadata):
        info = info.type
    if isinstance(info, mi.UnionType):
        numeric = [t for t in info.types if isinstance(t, _Numeric)]
        info = numeric[0] if len(numeric) == 1 else info
    if isinstance(info, _Numeric):
        return number_problem(value, info)
    return None


def unbounded_fields(tp: Any) -> list[str]:
    """Dotted names of the numbers in ``tp`` without both a lower and upper bound."""
    out: list[str] = []
    seen: set[type] = set()

    def walk(info: mi.Type, where: str) -> None:
        if isinstance(info, mi.Metadata):
            info = info.type
        if isinstance(info, mi.UnionType):
            for member in info.types:
                walk(member, where)
        elif isinstance(info, _Numeric):
            low = info.gt is not None or info.ge is not None
            high = info.lt is not None or info.le is not None
            if not (low and high):
                out.append(where)
        elif isinstance(info, mi.StructType) and info.cls not in seen:
            seen.add(info.cls)
            for f in info.fields:
                walk(f.type, _join(where, f.encode_name))
        elif isinstance(info, mi.ListType | mi.VarTupleType):
            walk(info.item_type, _join(where, 0))
        elif isinstance(info, mi.DictType):
            walk(info.value_type, _join(where, "*"))

    walk(_info(tp), "")
    return out


def check_tree(raw: Any, *, path: str | None = None, limit: int = MAX_DEPTH) -> None:
    """Refuse tables and arrays nested deeper than ``limit`` (no config needs it),
    and keys or strings that are not valid Unicode (a lone surrogate such as
    ``"\\ud800"``, which a Python caller can pass and no UTF-8 file can hold).

    Iterative, so a hostile file cannot exhaust the stack here.

    Raises:
        ConfigError: naming the dotted path where the limit is passed or the bad
            text sits.
    """
    stack: list[tuple[Any, str, int]] = [(raw, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value, path, where)
            continue
        if isinstance(value, dict):
            items: list[tuple[str | int, Any]] = list(value.items())
        elif isinstance(value, list):
            items = list(enumerate(value))
        else:
            continue
        if depth >= limit:
            raise ConfigError(
                f"tables and arrays are nested more than {limit} levels deep; no "
                "pipeline setting needs that",
                path=path,
                field=where or None,
            )
        for key, item in items:
            if isinstance(key, str):
                _check_text(key, path, where, key=True)
            stack.append((item, _join(where, key), depth + 1))


def _check_text(text: str, path: str | None, where: str, key: bool = False) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        what = "a key" if key else "the value"
        raise ConfigError(
            f"{what} {text!a} is not valid Unicode text (a lone surrogate);"
            " write it as UTF-8",
            path=path,
            field=where or None,
        ) from None
