"""The public surface of ``stagecache.exporters`` and its registry entries."""

from __future__ import annotations

import msgspec
import pytest

import stagecache.exporters as exporters
from stagecache.exporters import (
    LogExporter,
    OtlpConfig,
    OtlpExporter,
    PrometheusExporter,
    query_attributes,
)


def _isort_key(name: str) -> tuple[int, str]:
    # Constants, then classes, then functions (ruff's RUF022 order).
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


def test_all_is_sorted_and_every_name_exists() -> None:
    assert exporters.__all__ == sorted(exporters.__all__, key=_isort_key)
    for name in exporters.__all__:
        assert hasattr(exporters, name), name


@pytest.mark.parametrize("factory", [OtlpExporter, PrometheusExporter, LogExporter])
def test_exporter_kinds_are_registry_factories(factory: type) -> None:
    config_type = factory.Config  # type: ignore[attr-defined]
    assert issubclass(config_type, msgspec.Struct)
    assert callable(factory.from_config)  # type: ignore[attr-defined]
    # Strict config: an unknown field is refused, naming it.
    with pytest.raises(msgspec.ValidationError, match="nope"):
        msgspec.convert({"nope": 1}, config_type)


def test_otlp_config_decodes_prices_from_toml_shaped_data() -> None:
    config = msgspec.convert(
        {"protocol": "grpc", "prices": {"gpt-4o": {"input_per_1k": 0.0025}}},
        OtlpConfig,
    )
    assert config.prices["gpt-4o"].input_per_1k == 0.0025
    with pytest.raises(msgspec.ValidationError, match="protocol"):
        msgspec.convert({"protocol": "udp"}, OtlpConfig)


def test_query_attributes_hash_by_default_and_text_on_opt_in() -> None:
    attrs = query_attributes("where is my order 123?")
    assert set(attrs) == {"stagecache.query.hash", "stagecache.query.length"}
    assert "order" not in str(attrs.values())
    opted = query_attributes("where is my order 123?", include_text=True)
    assert opted["stagecache.query.text"] == "where is my order 123?"
