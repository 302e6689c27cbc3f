"""atheris fuzz target: config parsing and message coercion (run as a subprocess).

    python fuzz_inputs.py -atheris_runs=2000

Any exception other than the documented ConfigError / InputError is a crash.
"""

from __future__ import annotations

import contextlib
import sys
import tomllib

import atheris

with atheris.instrument_imports():
    from stagecache._model import coerce_messages
    from stagecache.config import parse_config
    from stagecache.errors import ConfigError, InputError


def target(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    text = fdp.ConsumeUnicodeNoSurrogates(200)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raw = None
    if raw is not None:
        with contextlib.suppress(ConfigError):
            parse_config(raw)
    role = fdp.ConsumeUnicode(8)
    content = fdp.ConsumeUnicode(64)
    with contextlib.suppress(InputError):
        coerce_messages([{"role": role, "content": content}])


if __name__ == "__main__":
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
