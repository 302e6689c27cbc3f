"""Embedder configuration: strict, frozen msgspec Structs tagged by ``kind``.

In a TOML file::

    [embedder]
    kind = "onnx"            # "sentence_transformers" | "onnx" | "openai"
    quantize = "int8"
    cache_path = "~/.cache/stagecache/embeddings.sqlite3"

:data:`EmbedderConfig` is the tagged union of the three kinds; decode it with
``msgspec.convert(data, EmbedderConfig)`` (or :func:`embedder_config`, which turns
every error into a :class:`~stagecache.errors.ConfigError` naming the field and the
valid values) and build the embedder with :func:`make_embedder`.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

import msgspec

from stagecache._validate import CheckNumbers, Retries, Seconds, problem_at
from stagecache.embeddings._cache import CachedEmbedder
from stagecache.embeddings._onnx import OnnxEmbedder
from stagecache.embeddings._openai import OpenAIEmbedder
from stagecache.embeddings._sentence_transformers import SentenceTransformerEmbedder
from stagecache.errors import ConfigError
from stagecache.pipeline._events import EventBus
from stagecache.types import Embedder

__all__ = [
    "EmbedderConfig",
    "OnnxConfig",
    "OpenAIConfig",
    "SentenceTransformersConfig",
    "embedder_config",
    "make_embedder",
]


class _Base(
    msgspec.Struct,
    CheckNumbers,
    frozen=True,
    forbid_unknown_fields=True,
    kw_only=True,
    tag_field="kind",
):
    """Fields every kind shares: micro-batching and the embedding cache."""

    batch_window_ms: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 2.0
    max_batch: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 64
    cache: bool = True
    cache_path: str | None = None
    memory_items: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 10_000
    casefold: bool = False
    cache_version: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 1


class SentenceTransformersConfig(_Base, frozen=True, tag="sentence_transformers"):
    """A local sentence-transformers model on torch (the default).

    Attributes:
        model: None for the packaged all-MiniLM-L6-v2, or a local model folder.
        device: the torch device.
    """

    model: str | None = None
    device: str = "cpu"


class OnnxConfig(_Base, frozen=True, tag="onnx"):
    """A sentence-transformers model exported to ONNX, run without torch.

    Attributes:
        model: None for the packaged all-MiniLM-L6-v2, or a local model folder.
        quantize: ``"int8"`` or ``"fp32"``.
        threads: onnxruntime intra-op threads (None: its default).
        spinning: let onnxruntime's idle threads spin between calls (off: an
            embedding leaves no core busy after it; see OnnxEmbedder).
        cache_dir: where exports live (default ``$STAGECACHE_CACHE_DIR``).
    """

    model: str | None = None
    quantize: Literal["fp32", "int8"] = "int8"
    threads: Annotated[int, msgspec.Meta(ge=1, le=1024)] | None = None
    spinning: bool = False
    cache_dir: str | None = None


class OpenAIConfig(_Base, frozen=True, tag="openai"):
    """An OpenAI-compatible ``/v1/embeddings`` server.

    Attributes:
        base_url: the API root (``https://api.openai.com/v1``).
        model: the model name.
        api_key_env: the environment variable holding the API key (None: no key).
        dim: the expected dimension (None: learned from the first reply).
        timeout_s: timeout of one HTTP request.
        max_retries: retries on 429, 5xx, connection errors and timeouts.
        batch_size: texts per HTTP request.
    """

    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    dim: Annotated[int, msgspec.Meta(ge=1, le=65_536)] | None = None
    timeout_s: Seconds = 30.0
    max_retries: Retries = 3
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if not re.match(r"https?://", self.base_url):
            raise ConfigError(
                f"{self.base_url!r} is not an http(s) URL", field="base_url"
            )


EmbedderConfig = Union[SentenceTransformersConfig, OnnxConfig, OpenAIConfig]  # noqa: UP007 - a runtime alias msgspec and isinstance() accept
"""The embedder section of a config: one of the three kinds, chosen by ``kind``."""

_KINDS: dict[str, type[_Base]] = {
    "sentence_transformers": SentenceTransformersConfig,
    "onnx": OnnxConfig,
    "openai": OpenAIConfig,
}


def embedder_config(
    data: Mapping[str, Any], *, path: str | None = None
) -> EmbedderConfig:
    """Decode the embedder section of a config.

    Args:
        data: the decoded TOML/JSON table (with ``kind``).
        path: the config file, for messages.

    Returns:
        The typed config.

    Raises:
        ConfigError: naming the field, the bad value and the valid values.
    """
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise ConfigError(
            f"{kind!r} is not a known embedder kind; valid kinds: "
            f"{', '.join(sorted(_KINDS))}",
            path=path,
            field="embedder.kind",
        )
    cls = _KINDS[kind]
    try:
        result: EmbedderConfig = msgspec.convert(dict(data), EmbedderConfig)
        return result
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = re.search(r"at `\$\.([A-Za-z_]+)", message) or re.search(
            r"unknown field `([^`]+)`", message
        )
        field = match.group(1) if match else None
        choices = _choices(cls, field) if field else None
        detail = message.split(" - at `")[0]
        numeric = None
        if field is not None and field in data:
            value = data[field]
            if isinstance(value, int | float) and not isinstance(value, bool):
                numeric = problem_at(cls, [field], value)
            detail = numeric or f"{value!r} is invalid ({detail})"
        if choices:
            detail += f"; valid values: {choices}"
        raise ConfigError(
            detail, path=path, field=f"embedder.{field}" if field else "embedder"
        ) from exc


def _choices(cls: type[_Base], field: str) -> str | None:
    hints = typing.get_type_hints(cls)
    if field not in hints:
        valid = sorted(f for f in cls.__struct_fields__)
        return f"known fields of kind {cls.__struct_config__.tag!r}: {', '.join(valid)}"
    args = typing.get_args(hints[field])
    if typing.get_origin(hints[field]) is Literal:
        return ", ".join(repr(a) for a in args)
    return None


def make_embedder(cfg: EmbedderConfig, *, events: EventBus | None = None) -> Embedder:
    """Build the embedder a config describes: micro-batched and, by default, cached.

    Args:
        cfg: the decoded config.
        events: where the embedding cache publishes its hit/miss counts.

    Returns:
        The embedder (a :class:`CachedEmbedder` around the model when
        ``cfg.cache``); it has ``warm_up()`` and ``aclose()``.

    Raises:
        ConfigError: ``api_key_env`` names an unset variable.
    """
    inner: Embedder
    if isinstance(cfg, SentenceTransformersConfig):
        inner = SentenceTransformerEmbedder(
            cfg.model,
            device=cfg.device,
            max_batch=cfg.max_batch,
            batch_window_ms=cfg.batch_window_ms,
        )
    elif isinstance(cfg, OnnxConfig):
        inner = OnnxEmbedder(
            cfg.model,
            quantize=cfg.quantize,
            cache_dir=cfg.cache_dir,
            max_batch=cfg.max_batch,
            batch_window_ms=cfg.batch_window_ms,
            threads=cfg.threads,
            spinning=cfg.spinning,
        )
    elif isinstance(cfg, OpenAIConfig):
        api_key = None
        if cfg.api_key_env:
            api_key = os.environ.get(cfg.api_key_env)
            if not api_key:
                raise ConfigError(
                    f"environment variable {cfg.api_key_env} is not set; set it, or "
                    f'set api_key_env to the variable holding the key (or to "" for '
                    f"a server without keys)",
                    field="embedder.api_key_env",
                )
        inner = OpenAIEmbedder(
            cfg.base_url,
            cfg.model,
            api_key,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
            batch_size=cfg.batch_size,
            dim=cfg.dim,
        )
    else:
        raise ConfigError(
            f"{type(cfg).__name__} is not an embedder config; valid kinds: "
            f"{', '.join(sorted(_KINDS))}",
            field="embedder",
        )
    if not cfg.cache:
        return inner
    path = os.path.expanduser(cfg.cache_path) if cfg.cache_path else None
    return CachedEmbedder(
        inner,
        path=path,
        memory_items=cfg.memory_items,
        casefold=cfg.casefold,
        version=cfg.cache_version,
        events=events,
    )
