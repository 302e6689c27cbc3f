"""Reading and checking a pipeline file, every problem at once.

Each top-level table and each stage and exporter table is checked on its own, and
checking goes on after a failure. :func:`parse_sections` also returns the
well-formed part of the file, which :mod:`stagecache.config` builds to find what
only construction checks (rule ids, keys), so one ``load()`` or ``check-config``
reports every problem, each with its full dotted path.
"""

from __future__ import annotations

import tomllib
import typing
from pathlib import Path
from typing import Any, NamedTuple

from stagecache._configerrors import Collector, convert_strict, struct_field_names
from stagecache._configtypes import PipelineConfig
from stagecache._validate import check_tree
from stagecache.embeddings import embedder_config
from stagecache.errors import ConfigError
from stagecache.pipeline._registry import load_factory

__all__ = [
    "Partial",
    "check_embedder",
    "load_config",
    "parse_config",
    "parse_sections",
    "read_toml",
    "stage_config",
    "verifier_config",
]


def load_config(path: str | Path) -> PipelineConfig:
    """Read and check a pipeline file (stage tables included).

    Raises:
        ConfigError: the file is missing, is not TOML, or has a bad field
            (:class:`ConfigErrors` when it has several).
    """
    return parse_config(read_toml(path), file=str(path))


def read_toml(path: str | Path) -> dict[str, Any]:
    file = str(path)
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found", path=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", path=file) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=file) from None
    except RecursionError:  # tomllib recurses once per level of nesting
        raise ConfigError(
            "tables or arrays are nested too deeply to parse", path=file
        ) from None


def parse_config(raw: dict[str, Any], *, file: str | None = None) -> PipelineConfig:
    """Check decoded TOML and return the typed config.

    Every section (each top-level table, each stage and exporter table) is checked
    on its own and checking goes on after a failure, so one call reports every
    problem of the file.

    Raises:
        ConfigError: the one problem found, with its full dotted path.
        ConfigErrors: several problems (``.errors`` holds each).
    """
    partial, found = parse_sections(raw, file)
    found.raise_any()
    return partial.config


class Partial(NamedTuple):
    """The well-formed part of a file: what can still be built to find more errors.

    ``positions`` maps each stage (exporter) kept to its index in the file.
    """

    config: PipelineConfig
    positions: list[int] | None
    exporter_positions: list[int] | None
    llm_ok: bool


def parse_sections(raw: dict[str, Any], file: str | None) -> tuple[Partial, Collector]:
    check_tree(raw, path=file)
    found = Collector(file)
    hints = typing.get_type_hints(PipelineConfig)
    sections: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in hints:
            valid = ", ".join(struct_field_names(PipelineConfig))
            found.errors.append(
                ConfigError(
                    f"unknown field; valid fields: {valid}", path=file, field=key
                )
            )
            continue
        if key in ("stages", "exporters"):
            value = _tables(value, key, found)
            if value is None:
                continue
        with found.check(key):
            sections[key] = convert_strict(value, hints[key], file=file, prefix=key)
    checks = {
        "cache": lambda v: v.check(path=file),
        "embedder": lambda v: embedder_config(v, path=file),
        "verifier": lambda v: verifier_config(v, file),
    }
    for key, check in checks.items():
        if key in sections and not _passes(found, key, check, sections[key]):
            del sections[key]  # built with the defaults to find the other errors
    kept: dict[str, list[int]] = {}
    for group, section in (("stage", "stages"), ("exporter", "exporters")):
        tables = sections.get(section, [])
        kept[section] = [
            i
            for i, table in enumerate(tables)
            if _passes(
                found,
                f"{section}[{i}]",
                lambda t, i=i, g=group: stage_config(t, i, file, group=g),
                table,
            )
        ]
        if section in sections:
            sections[section] = [tables[i] for i in kept[section]]
    llm_ok = "llm" in sections or "llm" not in raw
    partial = Partial(
        PipelineConfig(**sections),
        kept["stages"] if "stages" in sections else None,
        kept["exporters"] if "exporters" in sections else None,
        llm_ok,
    )
    return partial, found


def _passes(found: Collector, prefix: str, check: Any, value: Any) -> bool:
    before = len(found.errors)
    with found.check(prefix):
        check(value)
    return len(found.errors) == before


def _tables(value: Any, key: str, found: Collector) -> list[Any] | None:
    """``value`` if it is an array of tables, else None with the error recorded."""
    if isinstance(value, list) and all(isinstance(t, dict) for t in value):
        return value
    found.errors.append(
        ConfigError(
            f"expected an array of tables ([[{key}]]), got {value!r:.80}",
            path=found.file,
            field=key,
        )
    )
    return None


def check_embedder(config: PipelineConfig, file: str | None) -> Any:
    return embedder_config(config.embedder, path=file)


def stage_config(
    table: dict[str, Any], index: int, file: str | None, *, group: str
) -> tuple[Any, Any]:
    section = "stages" if group == "stage" else "exporters"
    where = f"{section}[{index}]"
    kind = table.get("kind")
    if not isinstance(kind, str):
        raise ConfigError(
            f"every table needs a string 'kind' (got {kind!r})",
            path=file,
            field=f"{where}.kind",
        )
    try:
        factory = load_factory(kind, group)
    except ConfigError as exc:
        raise ConfigError(str(exc), path=file, field=f"{where}.kind") from None
    rest = {k: v for k, v in table.items() if k != "kind"}
    return factory, convert_strict(rest, factory.Config, file=file, prefix=where)


def verifier_config(table: dict[str, Any], file: str | None) -> Any:
    from stagecache.quality import VerifierConfig

    return convert_strict(table, VerifierConfig, file=file, prefix="verifier")
