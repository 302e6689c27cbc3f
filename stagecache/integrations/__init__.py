"""Integrations with agent runtimes: AutoGen, LangChain, an OpenAI-compatible proxy.

Each lives behind its own extra and is imported lazily, on first use of a name:

- ``StagecacheChatCompletionClient``, ``AutoGenModel``
  (:mod:`stagecache.integrations.autogen`, ``pip install 'stagecache[autogen]'``);
- ``StagecacheLangChainCache``, ``StagecacheRunnable``, ``LangChainModel``
  (:mod:`stagecache.integrations.langchain`, ``'stagecache[langchain]'``);
- ``ProxySettings``, ``create_app``, ``serve_main``
  (:mod:`stagecache.integrations.proxy`, ``'stagecache[serve]'``).

Importing this package imports none of AutoGen, LangChain or Starlette.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "AutoGenModel": "autogen",
    "LangChainModel": "langchain",
    "ProxySettings": "proxy",
    "StagecacheChatCompletionClient": "autogen",
    "StagecacheLangChainCache": "langchain",
    "StagecacheRunnable": "langchain",
    "create_app": "proxy",
    "serve_main": "proxy",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
