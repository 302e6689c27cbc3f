"""Turning msgspec validation errors into messages a person can act on.

msgspec says ``Object contains unknown field `thresold` - at `$.cache```. We say
``pipeline.toml: cache.thresold: unknown field; valid fields: default_ttl, ...``, or
``cache.scope: invalid value 'per_usr'; valid choices: per_session, per_user, shared``.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

from stagecache._validate import check_numbers, problem_at
from stagecache.errors import ConfigError

__all__ = [
    "Collector",
    "ConfigErrors",
    "convert_strict",
    "struct_field_names",
    "with_prefix",
]

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

    msgspec stops at the first bad field; to report every bad field of a table,
    the field is taken out and the table converted again (at most 20 rounds).

    Args:
        raw: decoded TOML (dicts, lists, scalars).
        tp: the Struct type to convert into.
        file: the config file, named in the message.
        prefix: the dotted path of ``raw`` inside the file (``"stages[2]"``).

    Raises:
        ConfigError: the one bad field, naming the file, the field path, the bad
            value and the valid fields or choices.
        ConfigErrors: several bad fields.
    """
    found: list[ConfigError] = []
    current = raw
    while len(found) < 20:
        try:
            result = _convert_one(current, tp, file=file, prefix=prefix)
        except ConfigError as exc:
            if any(e.field == exc.field for e in found):
                break  # the field taken out was a required one
            found.append(exc)
            key = _top_key(exc.field, prefix)
            if not isinstance(current, dict) or key not in current:
                break
            current = {k: v for k, v in current.items() if k != key}
            continue
        if not found:
            return result
        break
    raise found[0] if len(found) == 1 else ConfigErrors(found)


def _top_key(field: str | None, prefix: str) -> str | None:
    """The key of the table at ``prefix`` that holds ``field``."""
    if not field:
        return None
    rest = field[len(prefix) :] if prefix and field.startswith(prefix) else field
    rest = rest.lstrip(".")
    name = re.match(r'"([^"]*)"|[^.\[]+', rest)
    if name is None:
        return None
    return name.group(1) if name.group(1) is not None else name.group(0)


def _convert_one(raw: Any, tp: type[Any], *, file: str | None, prefix: str) -> Any:
    """One round of :func:`convert_strict`: raises at the first bad field.

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


class ConfigErrors(ConfigError):
    """Several problems in one config file, each a :class:`ConfigError`.

    ``str()`` lists them one per line; ``errors`` holds them in file order. The
    attributes ``path`` and ``field`` are those of the first problem.
    """

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = list(errors)
        first = self.errors[0]
        lines = "\n  ".join(str(e) for e in self.errors)
        super().__init__(f"{len(self.errors)} problems:\n  {lines}")
        self.path = first.path
        self.field = first.field


def _bare_message(exc: ConfigError) -> str:
    """The message of ``exc`` without its ``file: field:`` prefix."""
    text = str(exc)
    for part in (exc.path, exc.field):
        if part and text.startswith(f"{part}: "):
            text = text[len(part) + 2 :]
    return text


def with_prefix(exc: ConfigError, prefix: str, file: str | None) -> ConfigError:
    """``exc`` with its field put under ``prefix`` (``stages[0]``) and the file set.

    A component checks its own table and names fields relative to it
    (``disable[0]``); the file knows where that table sits (``stages[0]``). A field
    that already starts with the prefix, or with its section (``llm.api_key_env``),
    is kept.
    """
    field = exc.field
    section = prefix.split("[", 1)[0].split(".", 1)[0]
    if not field:
        field = prefix or None
    elif prefix and not (
        field == prefix
        or field.startswith((f"{prefix}.", f"{prefix}["))
        or field.split("[", 1)[0].split(".", 1)[0] == section
    ):
        field = f"{prefix}{field}" if field.startswith("[") else f"{prefix}.{field}"
    if field == exc.field and (exc.path or not file):
        return exc
    return ConfigError(_bare_message(exc), path=exc.path or file, field=field)


class Collector:
    """Gathers every :class:`ConfigError` of a file instead of stopping at one.

    Each section (a table, one stage) is checked inside :meth:`check`; a failure is
    recorded and checking goes on with the next section. :meth:`raise_any` then
    raises the one error, or :class:`ConfigErrors` with all of them.
    """

    __slots__ = ("errors", "file")

    def __init__(self, file: str | None) -> None:
        self.file = file
        self.errors: list[ConfigError] = []

    @contextmanager
    def check(self, prefix: str = "") -> Iterator[None]:
        """Run a section's check; record its errors (under ``prefix``)."""
        try:
            yield
        except ConfigErrors as many:
            self.errors.extend(with_prefix(e, prefix, self.file) for e in many.errors)
        except ConfigError as exc:
            self.errors.append(with_prefix(exc, prefix, self.file))

    def raise_any(self) -> None:
        """Raise what was recorded, if anything.

        Raises:
            ConfigError: the only problem found.
            ConfigErrors: several problems.
        """
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise ConfigErrors(self.errors)
