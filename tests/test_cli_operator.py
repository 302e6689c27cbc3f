"""The operator's commands of issue 17, run through the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("stagecache")


def run_cli(
    *args: str,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
    timeout: float = 240,
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``stagecache`` script on this checkout's code."""
    base = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )
    base.update(env or {})
    return subprocess.run(
        [str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=base,
    )


# -- check-config: the validation load() runs, every error, full paths ----------------

BAD_FILE = """\
[cache]
threshold = 7
thresold = 0.9

[verifier]
kind = "learnt"
max_wrong_hit_rate = 2

[[stages]]
kind = "input_guard"
disable = ["override.ignor_previous"]

[[stages]]
kind = "output_guard"
disable = ["pii.emial"]

[[stages]]
kind = "input_guard"
[[stages.extra_rules]]
id = "site.empty"
patterns = ["a*"]
"""


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('[verifier]\nkind = "learnt"\n', "verifier.kind"),
        ("[verifier]\nmax_wrong_hit_rate = 2\n", "verifier.max_wrong_hit_rate"),
        (
            '[[stages]]\nkind = "input_guard"\ndisable = ["override.ignor_previous"]\n',
            "stages[0].disable[0]",
        ),
        (
            '[[stages]]\nkind = "input_guard"\n[[stages.extra_rules]]\nid = "a.b"\n'
            'patterns = ["a*"]\n',
            "stages[0].extra_rules[0].patterns[0]",
        ),
    ],
)
def test_check_config_rejects_what_load_rejects(
    tmp_path: Path, body: str, field: str
) -> None:
    config = tmp_path / "pipeline.toml"
    config.write_text(body)
    done = run_cli("check-config", str(config))
    assert done.returncode == 2, done.stdout
    assert f"pipeline.toml: {field}: " in done.stderr
    assert "Traceback" not in done.stderr


def test_check_config_reports_every_error_one_line_each(tmp_path: Path) -> None:
    # The tables are checked first (all of them); what is checked when the stages
    # are built (rule ids, patterns) is reported once the tables are well-formed.
    config = tmp_path / "pipeline.toml"
    config.write_text(BAD_FILE)
    done = run_cli("check-config", str(config))
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    fields = [line.split(": ")[3] for line in lines]
    assert fields == [
        "cache.threshold",
        "cache.thresold",
        "verifier.kind",
        "verifier.max_wrong_hit_rate",
    ], done.stderr
    assert all(line.startswith("stagecache: error: ") for line in lines)


def test_check_config_reports_every_construction_error(tmp_path: Path) -> None:
    # Rule ids are checked when the stages are built: still every one, full paths.
    config = tmp_path / "pipeline.toml"
    config.write_text(
        '[[stages]]\nkind = "input_guard"\ndisable = ["override.ignor_previous"]\n'
        '[[stages]]\nkind = "output_guard"\ndisable = ["pii.emial"]\n'
    )
    done = run_cli("check-config", str(config))
    assert done.returncode == 2
    fields = [line.split(": ")[3] for line in done.stderr.splitlines()]
    assert fields == ["stages[0].disable[0]", "stages[1].disable[0]"], done.stderr


def test_load_raises_every_error_with_its_full_path(tmp_path: Path) -> None:
    import stagecache
    from stagecache.config import ConfigErrors

    config = tmp_path / "pipeline.toml"
    config.write_text(
        '[[stages]]\nkind = "input_guard"\ndisable = ["override.ignor_previous"]\n'
        '[[stages]]\nkind = "output_guard"\ndisable = ["pii.emial"]\n'
    )
    with pytest.raises(ConfigErrors) as caught:
        stagecache.load(config)
    assert [e.field for e in caught.value.errors] == [
        "stages[0].disable[0]",
        "stages[1].disable[0]",
    ]
