"""Configuration is untrusted input: every bad value is a ConfigError naming the field.

Replays issue 13 finding 9: stage ``timeout_s`` of -1, 0 or NaN, ``cache_check
timeout_s = nan``, ``max_answer_chars = -1``, ``max_facts_per_user = -1``, ``top_k =
1e9``, ``hnsw_ef_search = 1e12``, a ReDoS ``ttl_patterns`` entry, a Prometheus ``port
= -1``, a deeply nested TOML, and ``check-config`` exiting 1 with a traceback.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from stagecache._configerrors import convert_strict
from stagecache.cache import CacheSettings, SemanticCache, TtlPattern
from stagecache.config import (
    MemoryConfig,
    OpenAIChatConfig,
    PipelineConfig,
    ScriptedLLMConfig,
    load_config,
)
from stagecache.errors import ConfigError
from stagecache.guards import InjectionScanner, PatternSpec, PiiRedactor, RuleSpec
from stagecache.pipeline._registry import (
    BUILTIN_EXPORTERS,
    BUILTIN_STAGES,
    load_factory,
)

ROOT = Path(__file__).resolve().parents[2]
# The installed console script, beside the interpreter running the tests.
CLI = str(Path(sys.executable).with_name("stagecache"))
STAGES = sorted(BUILTIN_STAGES)
BAD_SECONDS = ["-1", "0", "nan", "inf", "-inf", "1e12"]


def _load(tmp_path: Path, text: str) -> ConfigError:
    path = tmp_path / "pipeline.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == str(path)
    return info.value


def _stages(target: str) -> str:
    """A chain whose third table (index 2) is ``target``."""
    return (
        '[[stages]]\nkind = "input_guard"\n[[stages]]\nkind = "memory_search"\n'
        f"[[stages]]\n{target}\n"
    )


@pytest.mark.parametrize("value", BAD_SECONDS)
@pytest.mark.parametrize("kind", STAGES)
def test_every_stage_rejects_a_bad_timeout(
    tmp_path: Path, kind: str, value: str
) -> None:
    error = _load(tmp_path, _stages(f'kind = "{kind}"\ntimeout_s = {value}'))
    assert error.field == "stages[2].timeout_s"


# (TOML, the dotted field named by the error)
BAD_VALUES = [
    (_stages('kind = "cache_check"\ntimeout_s = nan'), "stages[2].timeout_s"),
    (_stages('kind = "cache_check"\nflight_wait_s = -1'), "stages[2].flight_wait_s"),
    (_stages('kind = "store"\nmax_answer_chars = -1'), "stages[2].max_answer_chars"),
    (_stages('kind = "store"\nmax_answer_chars = 0'), "stages[2].max_answer_chars"),
    (_stages('kind = "memory_search"\nk = 1000000'), "stages[2].k"),
    (
        _stages('kind = "memory_search"\nmin_similarity = nan'),
        "stages[2].min_similarity",
    ),
    (_stages('kind = "input_guard"\nmax_chars = 0'), "stages[2].max_chars"),
    ("[memory]\nmax_facts_per_user = -1", "memory.max_facts_per_user"),
    ("[cache]\ntop_k = 1000000000", "cache.top_k"),
    ("[cache]\ntop_k = 1e9", "cache.top_k"),
    ("[cache]\nhnsw_ef_search = 1000000000000", "cache.hnsw_ef_search"),
    ("[cache]\nhnsw_ef_search = 1e12", "cache.hnsw_ef_search"),
    ("[cache]\ntimeout_s = nan", "cache.timeout_s"),
    ("[cache]\ndefault_ttl = inf", "cache.default_ttl"),
    ("[cache]\nthreshold = nan", "cache.threshold"),
    ("[cache]\nmax_total_entries = 0", "cache.max_total_entries"),
    (
        '[cache]\nttl_patterns = [{pattern = "x", ttl_s = nan}]',
        "cache.ttl_patterns[0].ttl_s",
    ),
    ("[cache.backend]\nbusy_timeout_s = nan", "cache.backend.busy_timeout_s"),
    ('[llm]\nkind = "scripted"\ndelay_s = -1', "llm.delay_s"),
    (
        '[llm]\nkind = "openai"\nbase_url = "http://h"\nmodel = "m"\ntimeout_s = nan',
        "llm.timeout_s",
    ),
    (
        '[llm]\nkind = "openai"\nbase_url = "http://h"\nmodel = "m"\nmax_retries = -1',
        "llm.max_retries",
    ),
    ('[embedder]\nkind = "onnx"\nmax_batch = 1000000000', "embedder.max_batch"),
    ('[embedder]\nkind = "onnx"\nbatch_window_ms = nan', "embedder.batch_window_ms"),
    ('[[exporters]]\nkind = "prometheus"\nport = -1', "exporters[0].port"),
    ('[[exporters]]\nkind = "prometheus"\nport = 65536', "exporters[0].port"),
    ('[[exporters]]\nkind = "prometheus"\nport = "9464"', "exporters[0].port"),
    ('[[exporters]]\nkind = "prometheus"\nport = 9464.5', "exporters[0].port"),
    ('[[exporters]]\nkind = "otlp"\ntimeout_s = nan', "exporters[0].timeout_s"),
    (
        '[[exporters]]\nkind = "otlp"\nexport_interval_s = inf',
        "exporters[0].export_interval_s",
    ),
    (
        '[[exporters]]\nkind = "prometheus"\n'
        '[exporters.prices."gpt"]\ninput_per_1k = nan',
        "exporters[0].prices.gpt.input_per_1k",
    ),
]


@pytest.mark.parametrize(("text", "field"), BAD_VALUES)
def test_bad_numbers_name_the_dotted_field(
    tmp_path: Path, text: str, field: str
) -> None:
    error = _load(tmp_path, text)
    assert error.field == field, str(error)
    assert str(error).startswith(f"{error.path}: {field}: ")


def _config_types() -> list[type[msgspec.Struct]]:
    types: list[type[msgspec.Struct]] = [
        PipelineConfig,
        MemoryConfig,
        ScriptedLLMConfig,
        OpenAIChatConfig,
        CacheSettings,
    ]
    types += [load_factory(k, "stage").Config for k in BUILTIN_STAGES]
    types += [load_factory(k, "exporter").Config for k in BUILTIN_EXPORTERS]
    from stagecache.embeddings import (
        OnnxConfig,
        OpenAIConfig,
        SentenceTransformersConfig,
    )
    from stagecache.quality import VerifierConfig

    types += [OnnxConfig, OpenAIConfig, SentenceTransformersConfig, VerifierConfig]
    return types


@pytest.mark.parametrize("tp", _config_types(), ids=lambda t: t.__name__)
def test_every_numeric_field_has_a_lower_and_an_upper_bound(
    tp: type[msgspec.Struct],
) -> None:
    from stagecache._validate import unbounded_fields

    assert unbounded_fields(tp) == []


@pytest.mark.parametrize(
    "build",
    [
        lambda: load_factory("llm").Config(timeout_s=math.nan),
        lambda: load_factory("cache_check").Config(timeout_s=-1.0),
        lambda: load_factory("store").Config(max_answer_chars=-1),
        lambda: MemoryConfig(max_facts_per_user=-1),
        lambda: CacheSettings(hnsw_ef_search=10**12).check(),
        lambda: CacheSettings(top_k=True).check(),
        lambda: CacheSettings(timeout_s=math.nan).check(),
        lambda: SemanticCache(CacheSettings(top_k=10**9)),
    ],
)
def test_configs_built_in_python_are_checked_by_the_same_code(build: object) -> None:
    with pytest.raises(ConfigError):
        build()  # type: ignore[operator]


class _PluginConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A third-party stage config that declares no bounds."""

    ratio: float = 0.5
    limit: int | None = None


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_third_party_configs_get_no_nan_or_infinity(value: float) -> None:
    with pytest.raises(ConfigError) as info:
        convert_strict({"ratio": value}, _PluginConfig, prefix="stages[4]")
    assert info.value.field == "stages[4].ratio"


REDOS = "(a+)+$"


def test_a_backtracking_ttl_pattern_runs_on_re2() -> None:
    settings = CacheSettings(ttl_patterns=[TtlPattern(REDOS, 60.0)])
    settings.check()
    (compiled, ttl), *_ = settings.ttl_rules()
    assert type(compiled).__module__.startswith("re2")
    assert ttl == 60.0
    cache = SemanticCache(settings)
    # The engine uses the same compiled rules (on re2 a long input is linear).
    assert cache.ttl_for("a" * 50_000 + "b") == settings.default_ttl
    assert cache.ttl_for("xaaa") == 60.0


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(a)\1", "RE2"),  # a backreference: backtracking only
        (r"(?=a)b", "RE2"),  # lookaround
        ("a*", "empty string"),
        ("^", "empty string"),
        ("x|", "empty string"),
        ("(unclosed", "RE2"),
        ("a" * 5000, "long"),
    ],
)
def test_ttl_patterns_outside_re2_or_matching_nothing_are_rejected(
    tmp_path: Path, pattern: str, why: str
) -> None:
    text = f"[cache]\nttl_patterns = [{{pattern = '{pattern}', ttl_s = 60}}]"
    error = _load(tmp_path, text)
    assert error.field == "cache.ttl_patterns[0].pattern"
    assert why in str(error)


def test_guard_patterns_from_config_run_on_re2() -> None:
    scanner = InjectionScanner(extra=[RuleSpec(id="x.redos", patterns=[REDOS])])
    rule = next(r for r in scanner.rules if r.id == "x.redos")
    assert all(type(p).__module__.startswith("re2") for p in rule.patterns)
    assert scanner.scan("a" * 50_000 + "b") is None
    assert scanner.scan("say aaa") is not None
    redactor = PiiRedactor(
        extra=[PatternSpec(id="x.emp", pattern=r"EMP-(\d+)+-", label="EMP")]
    )
    detector = next(d for d in redactor.detectors if d.id == "x.emp")
    assert type(detector.pattern).__module__.startswith("re2")
    assert redactor.redact("id EMP-123- ok").text == "id [REDACTED:EMP] ok"
    with pytest.raises(ConfigError) as info:
        InjectionScanner(extra=[RuleSpec(id="x.back", patterns=[r"(a)\1"])])
    assert info.value.field == "extra_rules[0].patterns[0]"


@pytest.mark.parametrize(
    "text",
    [
        "a = " + "[" * 3000 + "]" * 3000,
        "a = " + "{b=" * 800 + "1" + "}" * 800,
        "[verifier]\nx = " + "{y=" * 40 + "1" + "}" * 40,
    ],
    ids=["arrays", "inline-tables", "forty-levels"],
)
def test_deeply_nested_toml_is_a_config_error(tmp_path: Path, text: str) -> None:
    error = _load(tmp_path, text)
    assert "nested" in str(error)


def test_prometheus_bind_failure_is_a_config_error() -> None:
    import anyio

    from stagecache.exporters import PrometheusExporter
    from stagecache.exporters._prometheus import PrometheusConfig

    exporter = PrometheusExporter(PrometheusConfig(host="256.0.0.1", port=0))

    async def start() -> None:
        await exporter.warm_up()

    with pytest.raises(ConfigError) as info:
        anyio.run(start)
    assert info.value.field is not None and "host" in info.value.field


@pytest.mark.parametrize("value", ["nan", "-5", "0", "abc", "1e12"])
def test_a_bad_otlp_timeout_variable_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    from stagecache.exporters._otlpconfig import OtlpConfig, resolve_timeout

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", value)
    with pytest.raises(ConfigError) as info:
        resolve_timeout(OtlpConfig(), "traces")
    assert info.value.field == "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500")
    assert resolve_timeout(OtlpConfig(), "traces") == 2.5


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    return subprocess.run(
        [CLI, "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a = " + "[" * 3000 + "]" * 3000, "nested"),
        (_stages('kind = "llm"\ntimeout_s = nan'), "stages[2].timeout_s"),
        ('[[exporters]]\nkind = "prometheus"\nport = -1', "exporters[0].port"),
        (
            "[cache]\nttl_patterns = [{pattern = '(a)\\1', ttl_s = 1}]",
            "ttl_patterns",
        ),
    ],
    ids=["nested", "timeout", "port", "regex"],
)
def test_check_config_exits_2_with_one_line_and_no_traceback(
    tmp_path: Path, text: str, needle: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    done = _check_config(path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("stagecache: error: ") and needle in lines[0]


@pytest.mark.parametrize("timeout", [-1.0, 0.0, float("nan"), float("inf"), "5"])
def test_a_stage_built_in_python_with_a_bad_timeout_is_refused(timeout: object) -> None:
    # Configs are checked when decoded; a stage object built by hand bypasses them,
    # and a NaN or negative limit would fail every request.
    from stagecache import Pipeline
    from stagecache.testing import ScriptedLLM

    pipeline = Pipeline.default(llm=ScriptedLLM(lambda p: "ok", delay_s=0))
    stage = pipeline.stages[0]
    stage.timeout_s = timeout  # type: ignore[assignment]
    with pytest.raises(ConfigError, match=r"timeout_s"):
        Pipeline(pipeline.stages)
