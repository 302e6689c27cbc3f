"""Printing results: plain text for people, one JSON document for ``--json``."""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["emit", "error", "warn"]


def emit(data: Any, text: str, *, as_json: bool) -> None:
    """Print ``data`` as JSON (``--json``) or ``text`` (one or more lines)."""
    if as_json:
        print(json.dumps(data, ensure_ascii=False, sort_keys=True))
    elif text:
        print(text)


def error(message: str) -> None:
    """One ``stagecache: error:`` line on stderr (newlines folded)."""
    print(f"stagecache: error: {' '.join(message.split())}", file=sys.stderr)


def warn(message: str) -> None:
    """One ``stagecache: warning:`` line on stderr."""
    print(f"stagecache: warning: {' '.join(message.split())}", file=sys.stderr)
