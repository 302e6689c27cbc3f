"""The integrations package stays import-light and names its extras."""

from __future__ import annotations

import subprocess
import sys

import stagecache.integrations as integrations


def test_package_import_pulls_in_no_framework() -> None:
    code = (
        "import sys, stagecache.integrations; "
        "print(any(m.split('.')[0] in ('autogen_core', 'langchain_core', 'starlette')"
        " for m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_lazy_names_resolve() -> None:
    assert integrations.create_app.__name__ == "create_app"
    assert sorted(integrations.__all__) == integrations.__all__
