"""Config files: every mistake names the file, the field, the value and the choices."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from stagecache import ConfigError
from stagecache.config import DEFAULT_STAGES, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_the_shipped_example_is_the_full_default_chain() -> None:
    config = load_config(EXAMPLE)
    assert tuple(t["kind"] for t in config.stages) == DEFAULT_STAGES


def test_unknown_stage_kind_lists_the_valid_kinds(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[[stages]]\nkind = "input_guard"\n[[stages]]\nkind = "cach_check"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "stages[1].kind" in message
    assert "'cach_check'" in message
    assert "cache_check" in message and "write_invalidate" in message


def test_unknown_field_names_the_field_and_the_valid_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "[cache]\nthresold = 0.9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "cache.thresold" in message and "unknown field" in message
    assert "threshold" in message and str(path) in message


def test_unknown_field_in_a_stage_table(tmp_path: Path) -> None:
    path = write(tmp_path, '[[stages]]\nkind = "store"\nmax_answer_char = 5\n')
    with pytest.raises(
        ConfigError, match=r"stages\[0\]\.max_answer_char: unknown field"
    ):
        load_config(path)


def test_wrong_type_names_the_value(tmp_path: Path) -> None:
    path = write(tmp_path, '[cache]\nthreshold = "high"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "cache.threshold" in message and "'high'" in message
    assert "float" in message


def test_bad_choice_lists_the_valid_choices(tmp_path: Path) -> None:
    path = write(tmp_path, '[cache]\nscope = "per_usr"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "cache.scope" in message and "'per_usr'" in message
    assert "'per_session'" in message and "'shared'" in message


def test_shared_scope_without_acknowledgement_explains_why(tmp_path: Path) -> None:
    path = write(tmp_path, '[cache]\nscope = "shared"\n')
    with pytest.raises(ConfigError, match="shared_data_acknowledged"):
        load_config(path)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[cache\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_bad_embedder_kind_lists_the_kinds(tmp_path: Path) -> None:
    path = write(tmp_path, '[embedder]\nkind = "word2vec"\n')
    with pytest.raises(ConfigError, match="sentence_transformers"):
        load_config(path)


def test_stage_without_kind(tmp_path: Path) -> None:
    path = write(tmp_path, "[[stages]]\nk = 1\n")
    with pytest.raises(ConfigError, match=r"stages\[0\]\.kind"):
        load_config(path)


def _install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real distribution on sys.path with a `stagecache.stages` entry point."""
    (tmp_path / "shout_plugin.py").write_text(
        textwrap.dedent(
            """
            import msgspec

            class ShoutConfig(msgspec.Struct, forbid_unknown_fields=True):
                suffix: str = "!"

            class Shout:
                Config = ShoutConfig
                name = "shout"
                failure_policy = "continue"
                timeout_s = None

                def __init__(self, suffix):
                    self.suffix = suffix

                @classmethod
                def from_config(cls, config, ctx):
                    return cls(config.suffix)

                async def __call__(self, turn):
                    if turn.answer is not None:
                        turn.answer = turn.answer.upper() + self.suffix
                    return turn
            """
        )
    )
    dist = tmp_path / "shout_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: shout-plugin\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        "[stagecache.stages]\nshout = shout_plugin:Shout\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "shout_plugin", raising=False)


def test_an_entry_point_stage_loads_from_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_plugin(tmp_path, monkeypatch)
    path = write(tmp_path, '[[stages]]\nkind = "shout"\nsuffix = "?!"\n')
    config = load_config(path)
    assert config.stages == [{"kind": "shout", "suffix": "?!"}]
    bad = write(tmp_path, '[[stages]]\nkind = "shout"\nsufix = "!"\n')
    with pytest.raises(ConfigError, match=r"stages\[0\]\.sufix: unknown field.*suffix"):
        load_config(bad)


@pytest.mark.anyio
async def test_an_entry_point_stage_runs_in_a_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stagecache
    from stagecache.testing import ScriptedLLM

    _install_plugin(tmp_path, monkeypatch)
    path = write(
        tmp_path,
        '[[stages]]\nkind = "llm"\n[[stages]]\nkind = "shout"\n',
    )

    class NoEmbedder:
        model_id, dim = "none", 3

        async def embed(self, texts: object) -> object:
            raise AssertionError("not used")

    pipeline = stagecache.load(
        str(path), llm=ScriptedLLM(lambda p: "hi"), embedder=NoEmbedder()
    )
    async with pipeline:
        result = await pipeline.run("hello")
    assert result.answer == "HI!"
