"""The typed tables of a pipeline file (re-exported by :mod:`stagecache.config`)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from stagecache._validate import CheckNumbers, Delay, Retries, Seconds
from stagecache.cache import CacheSettings
from stagecache.exporters._pricing import ModelPrice

__all__ = [
    "DEFAULT_STAGES",
    "LLMConfig",
    "MemoryConfig",
    "OpenAIChatConfig",
    "PipelineConfig",
    "PipelineSection",
    "ScriptedLLMConfig",
]

DEFAULT_STAGES: tuple[str, ...] = (
    "input_guard",
    "memory_search",
    "cache_check",
    "llm",
    "output_guard",
    "store",
    "write_invalidate",
)


class PipelineSection(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """The ``[pipeline]`` table.

    Attributes:
        model: model id used (and keyed on) when ``run()`` passes none.
        instructions: default system prompt (its hash is part of the cache key).
        tracing: False switches spans off.
        record_query_text: put the raw query on cache spans (debugging only: it
            puts user text into your traces).
        record_error_messages: put error messages of the model client, embedder,
            backends and plugins into spans, events and logs, stripped of the
            request's text, PII-redacted and cut to 200 characters (off: only the
            type, status and length; see docs/security.md).
        prices: USD per 1k tokens by model id (``"*"``: any other model), for
            the cost saved that ``stats()`` and ``stagecache stats`` report; the
            ``prices`` of the exporters fill in the models not named here.
    """

    model: str = "default"
    instructions: str = ""
    tracing: bool = True
    record_query_text: bool = False
    record_error_messages: bool = False
    prices: dict[str, ModelPrice] = {}


class ScriptedLLMConfig(
    msgspec.Struct,
    CheckNumbers,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag_field="kind",
    tag="scripted",
):
    """A local scripted model (for demos and tests): echoes a template after a delay."""

    delay_s: Delay = 0.5
    template: str = "Here is what I know about: {prompt}"


class OpenAIChatConfig(
    msgspec.Struct,
    CheckNumbers,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag_field="kind",
    tag="openai",
):
    """Any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp)."""

    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: Seconds = 60.0
    max_retries: Retries = 2


LLMConfig = ScriptedLLMConfig | OpenAIChatConfig


class MemoryConfig(
    msgspec.Struct, CheckNumbers, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """The ``[memory]`` table: the per-user memory store."""

    max_facts_per_user: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1000


class PipelineConfig(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """A whole pipeline file. Stage and exporter tables are checked by their kind."""

    pipeline: PipelineSection = PipelineSection()
    cache: CacheSettings = CacheSettings()
    embedder: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"kind": "sentence_transformers"}
    )
    verifier: dict[str, Any] = {}
    llm: LLMConfig | None = None
    memory: MemoryConfig = MemoryConfig()
    stages: list[dict[str, Any]] = msgspec.field(
        default_factory=lambda: [{"kind": k} for k in DEFAULT_STAGES]
    )
    exporters: list[dict[str, Any]] = []
