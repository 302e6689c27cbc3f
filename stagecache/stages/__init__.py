"""The built-in stages, one per module.

``input_guard -> memory_search -> cache_check -> llm -> output_guard -> store ->
write_invalidate``. Each module defines a stage class with a ``Config`` struct and a
``from_config(config, ctx)`` classmethod; the registry imports them lazily by kind.
"""

from __future__ import annotations

__all__: list[str] = []
