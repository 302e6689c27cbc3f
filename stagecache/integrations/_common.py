"""What the integrations share: extra checks, caller resolution, keyed messages.

Keyed messages: the cache keys on the last user message and treats everything
before it as history. In an agent's tool loop the request ends with the model's
tool calls and the tools' results *after* that user message; keyed naively, the
answer written from those results would be stored under the bare question (and a
writing tool's "done" could later be served without the tool running). So the
integrations move whatever follows the last user message in front of it: the
pipeline then sees it as history, which skips the cache while ``cache_multi_turn``
is off and is part of the key when it is on. The model itself always gets the
original request, in its original order.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, TypeVar

from stagecache._model import Caller

__all__ = [
    "CallerSource",
    "json_arguments",
    "keyed_order",
    "reorder",
    "require_extra",
    "resolve_caller",
]

T = TypeVar("T")

#: A fixed :class:`~stagecache.Caller`, or a callable returning one (or None).
CallerSource = Caller | Callable[[], Caller | None] | None


def require_extra(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an ImportError naming the extra to install.

    Raises:
        ImportError: ``pip install 'stagecache[extra]'`` in the message.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"this stagecache integration needs {module.split('.')[0]}: "
            f"pip install 'stagecache[{extra}]'"
        ) from exc


def resolve_caller(
    caller: Caller | None, caller_from: Callable[[], Caller | None] | None
) -> Caller:
    """The caller of the current request: ``caller_from()`` first, then ``caller``.

    A callable that returns None (or neither source) gives an anonymous caller,
    which the pipeline does not cache under a non-shared scope.
    """
    if caller_from is not None:
        found = caller_from()
        if found is not None:
            if not isinstance(found, Caller):
                raise TypeError(
                    f"caller_from returned {type(found).__name__}, expected a "
                    "stagecache.Caller or None"
                )
            return found
    return caller if caller is not None else Caller()


def keyed_order(roles: Sequence[str]) -> list[int]:
    """Indices of ``roles`` in the order the pipeline should see them.

    Messages after the last ``user`` message move in front of it (see the module
    docstring); the relative order of everything else is kept.
    """
    last = -1
    for i in range(len(roles) - 1, -1, -1):
        if roles[i] == "user":
            last = i
            break
    if last < 0 or last == len(roles) - 1:
        return list(range(len(roles)))
    return [*range(last), *range(last + 1, len(roles)), last]


def reorder(items: Sequence[T], order: Sequence[int]) -> list[T]:
    """``items`` picked in ``order``."""
    return [items[i] for i in order]


def json_arguments(raw: Any) -> dict[str, Any]:
    """Tool-call arguments as a dict (a JSON string is parsed; junk is kept raw)."""
    import json

    if isinstance(raw, dict):
        return raw
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        return {"raw": str(raw)}
    return value if isinstance(value, dict) else {"value": value}
