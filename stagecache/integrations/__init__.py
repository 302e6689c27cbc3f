"""Integrations with agent runtimes: AutoGen, LangChain, an OpenAI-compatible proxy.

Each lives behind its own extra and is imported lazily.
"""

from __future__ import annotations

__all__: list[str] = []
