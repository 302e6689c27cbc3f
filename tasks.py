#!/usr/bin/env python3
"""Set-up and checks with nothing but Python 3.11, pip and gcc.

    python3 tasks.py demo     create .venv if needed, install, run `stagecache demo`
    python3 tasks.py test     create .venv if needed, install, ruff + mypy + pytest

Both are idempotent: the install step runs again only when pyproject.toml changed.
Extra arguments after `test` go to pytest (it runs on every core: pytest-xdist).
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".stagecache-installed"


def _run(*cmd: str | Path, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, env=env)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def install() -> None:
    """Create .venv and install stagecache with its dev extras, once per pyproject."""
    digest = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + (ROOT / "constraints.txt").read_bytes()
    ).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == digest:
        return
    if not (BIN / "python").exists():
        _run(sys.executable, "-m", "venv", VENV)
    # constraints.txt pins torch so pip takes the CPU wheel from local disk.
    _run(BIN / "pip", "install", "-q", "-c", "constraints.txt", "-e", ".[dev]")
    STAMP.write_text(digest)


def _redis_up() -> None:
    """Start a throwaway redis-server when none listens (the redis tests need one)."""
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
        return
    except OSError:
        pass
    server = subprocess.run(["which", "redis-server"], capture_output=True, text=True)
    if server.returncode != 0:
        print("redis-server not found: tests marked 'redis' will be skipped")
        return
    subprocess.run(
        [
            server.stdout.strip(),
            "--daemonize",
            "yes",
            "--port",
            "6379",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=False,
    )
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", 6379), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)


#: Debian packages some tests need: prometheus (the dashboard queries) and WordNet
#: (the rule-made training pairs of benchmarks/build_pair_model.py).
CI_PACKAGES = {
    "/usr/bin/prometheus": ["prometheus"],
    "/usr/share/wordnet/data.noun": ["wordnet-base", "wordnet-sense-index"],
}


def _ci_packages() -> None:
    """In CI (as root), install the Debian packages that the tests need."""
    missing = [
        name
        for path, names in CI_PACKAGES.items()
        if not Path(path).exists()
        for name in names
    ]
    if not missing or os.environ.get("CI") != "true":
        return
    if os.geteuid() != 0 or not Path("/usr/bin/apt-get").exists():
        print(f"{' '.join(missing)} not installed: the tests that need them skip")
        return
    quiet = {"stdout": subprocess.DEVNULL, "check": False}
    subprocess.run(["apt-get", "update", "-qq"], **quiet)  # type: ignore[call-overload]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        env=env,
        **quiet,  # type: ignore[arg-type]
    )


def demo(args: list[str]) -> None:
    install()
    _run(BIN / "stagecache", "demo", *args, env=_env())


def _workers() -> list[str]:
    """pytest-xdist options: one worker per core (at most 4), a test file per worker
    at a time, so module fixtures (servers, loaded models) are built once per file.
    ``python3 tasks.py test -n 0`` runs in one process."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    workers = min(cores, 4)
    return ["-n", str(workers), "--dist", "loadfile"] if workers > 1 else []


def test(args: list[str]) -> None:
    install()
    env = _env()
    _redis_up()
    _ci_packages()
    started = time.monotonic()
    _run(BIN / "ruff", "check", "stagecache", "tests", "benchmarks", env=env)
    _run(BIN / "mypy", "--strict", "stagecache", env=env)
    _run(
        BIN / "python",
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        *_workers(),
        *args,
        env=env,
    )
    print(f"tasks.py test: all checks passed in {time.monotonic() - started:.0f} s")


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"demo", "test", "install"}:
        print(__doc__)
        return 2
    command, args = sys.argv[1], sys.argv[2:]
    try:
        if command == "install":
            install()
        elif command == "demo":
            demo(args)
        else:
            test(args)
    except subprocess.CalledProcessError as exc:
        return exc.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
