"""``stagecache tune``: fine-tune the embedder on an operator's own pairs.

Reads labelled pairs (``--pairs``, JSON lines or CSV) and the feedback log of a
cache (``--config``: every ``feedback(..., query=...)``; wrong hits become label 0,
right hits label 1), splits off a grouped held-out set, trains all-MiniLM-L6-v2
on the rest (``stagecache.tuning.train_embedder``), and writes into ``--out``:

- ``model/``: the tuned model with its int8 ONNX export (``OnnxEmbedder`` loads it);
- ``report.md`` / ``report.json``: base and tuned model on the held-out pairs
  (ROC AUC, precision / recall / wrong-hit rate per cosine threshold, the floor
  that keeps the wrong-hit rate within ``--max-wrong-hit-rate``);
- ``stagecache.toml``: ``[embedder]`` on the model, ``[cache] threshold`` = the
  tuned floor, ``[verifier] kind = "structural"``.

Bad input (a missing file, a bad line, too few pairs, one label only) exits 2
with one line naming the file, the line and the fix.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import msgspec

from stagecache._cli._open import open_cache
from stagecache._cli._output import emit, error, warn
from stagecache.errors import InputError, StagecacheError
from stagecache.tuning._data import LabelledPair, dedupe, read_pairs, split_pairs
from stagecache.tuning._render import config_text, report_markdown
from stagecache.tuning._report import cosines, model_scores

__all__ = ["add_tune_arguments", "tune"]

_log = logging.getLogger("stagecache.tuning")


def add_tune_arguments(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``tune`` to the subcommand parsers."""
    tune_cmd = sub.add_parser(
        "tune",
        parents=[common],
        help="fine-tune the embedder on your labelled pairs and the cache's feedback",
        description=(
            "Fine-tune the embedder (all-MiniLM-L6-v2) on your labelled pairs and "
            "on the feedback your cache collected, calibrate it on a held-out "
            "split of that data, and write the model, a report and a config that "
            "uses it. Pair files: JSON lines "
            '{"text_a": ..., "text_b": ..., "label": 1} or CSV with the header '
            "text_a,text_b,label (1: the same question, a right hit; 0: a "
            "different one, a wrong hit). Needs the tune extra "
            "(pip install 'stagecache[tune]'). Exit codes: 0 done, 1 training "
            "failed, 2 bad input."
        ),
    )
    tune_cmd.add_argument(
        "--pairs",
        action="append",
        default=[],
        metavar="FILE",
        help="labelled pairs, JSON lines (.jsonl) or CSV (.csv); repeat for "
        "several files",
    )
    tune_cmd.add_argument(
        "--config",
        default=None,
        help="a pipeline TOML file with a sqlite or redis backend: its feedback log "
        "(feedback given with the query that got the hit) becomes pairs, wrong "
        "hits label 0 and right hits label 1",
    )
    tune_cmd.add_argument(
        "--user", default=None, help="only the feedback on entries of this user"
    )
    tune_cmd.add_argument(
        "--tenant", default=None, help="only the feedback on entries of this tenant"
    )
    tune_cmd.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="where to write model/, report.md, report.json and stagecache.toml "
        "(a new or empty directory)",
    )
    tune_cmd.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        help="share of the pairs held out for the calibration (default 0.2); "
        "pairs sharing a text stay on one side",
    )
    tune_cmd.add_argument(
        "--max-wrong-hit-rate",
        type=float,
        default=0.02,
        help="the wrong-hit budget the cosine floor is calibrated for: wrong "
        "hits / held-out lookups (default 0.02)",
    )
    tune_cmd.add_argument(
        "--epochs", type=int, default=1, help="passes over the pairs (default 1)"
    )
    tune_cmd.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="stop training after this many steps (default: the full epochs)",
    )
    tune_cmd.add_argument(
        "--batch-size", type=int, default=32, help="pairs per step (default 32)"
    )
    tune_cmd.add_argument(
        "--learning-rate",
        type=float,
        default=2e-5,
        help="peak learning rate (default 2e-5)",
    )
    tune_cmd.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seeds the split and the training (same data and seed: same result)",
    )


def _check_args(args: argparse.Namespace) -> Path:
    """The output directory; refuses bad numbers and an occupied directory."""
    if not args.pairs and args.config is None:
        raise InputError(
            "no pairs: pass --pairs FILE (labelled pairs) and/or --config FILE "
            "(the feedback of a cache)"
        )
    if (args.user is not None or args.tenant is not None) and args.config is None:
        raise InputError("--user/--tenant filter the feedback of --config; pass it")
    if not 0.0 < args.holdout < 1.0:
        raise InputError(f"--holdout: {args.holdout} is not between 0 and 1 (try 0.2)")
    if not 0.0 < args.max_wrong_hit_rate < 1.0:
        raise InputError(
            f"--max-wrong-hit-rate: {args.max_wrong_hit_rate} is not between 0 "
            "and 1 (try 0.02)"
        )
    if args.epochs < 1:
        raise InputError(f"--epochs: {args.epochs}; train at least 1 epoch")
    if args.max_steps is not None and args.max_steps < 1:
        raise InputError(f"--max-steps: {args.max_steps}; at least 1, or leave it out")
    if args.batch_size < 2:
        raise InputError(f"--batch-size: {args.batch_size}; at least 2 (try 32)")
    if not 0.0 < args.learning_rate < 1.0:
        raise InputError(f"--learning-rate: {args.learning_rate} (try 2e-5)")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(
            f"--out: {out} exists and is not an empty directory; pass a new one"
        )
    return out


async def _feedback_pairs(args: argparse.Namespace) -> list[LabelledPair]:
    """The feedback log of ``--config`` as pairs (wrong: 0, right: 1)."""
    async with open_cache(args.config) as api:
        records = await api.feedback_records(args.user, tenant=args.tenant)
    return [
        LabelledPair(
            r.hit_query, r.entry_query, 1 if r.correct else 0, f"feedback:{r.entry_id}"
        )
        for r in records
    ]


def _train(
    args: argparse.Namespace, train: list[LabelledPair], model_dir: Path
) -> Path:
    from stagecache.tuning import TrainingPair, train_embedder

    return train_embedder(
        [TrainingPair(p.text_a, p.text_b, p.label) for p in train],
        out_dir=model_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_grad_norm=0.5,
        seed=args.seed,
        max_steps=args.max_steps,
    )


async def tune(args: argparse.Namespace) -> int:
    """Run ``stagecache tune``."""
    import anyio

    from stagecache.embeddings import OnnxEmbedder

    out = _check_args(args)
    from_files = [p for file in args.pairs for p in read_pairs(file)]
    from_feedback = await _feedback_pairs(args) if args.config else []
    if args.config and not from_feedback:
        warn(f"{args.config}: the cache's feedback log holds no pairs")
    pairs = dedupe([*from_files, *from_feedback])
    split = split_pairs(pairs, holdout=args.holdout, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    try:
        model_dir = await anyio.to_thread.run_sync(
            _train, args, split.train, out / "model"
        )
    except StagecacheError:
        raise
    except Exception as exc:  # a failure while running, not bad input: exit 1
        _log.exception("tune: training failed")
        error(f"training failed: {type(exc).__name__}: {exc}")
        return 1
    model_dir = model_dir.resolve()
    held = split.held_out
    rate = args.max_wrong_hit_rate
    scores, found = [], []
    for model in (None, model_dir):
        embedder = OnnxEmbedder(model, quantize="int8")
        try:
            found.append(await cosines(embedder, held))
        finally:
            await embedder.aclose()
        scores.append(model_scores(embedder.model_id, found[-1], held, rate))
    base_scores, tuned_scores = scores
    moved = round(float(abs(found[1] - found[0]).mean()), 4)
    if moved == 0.0:
        warn(
            "training left the held-out cosines as they were: the loss learns from "
            "hard pairs only (a label-1 pair less similar than a label-0 one), and "
            "your pairs had none the base model got wrong; add harder pairs"
        )
    positives = sum(p.label for p in held)
    data: dict[str, Any] = {
        "pairs": {
            "total": len(pairs),
            "from_files": len(from_files),
            "from_feedback": len(from_feedback),
            "duplicates": len(from_files) + len(from_feedback) - len(pairs),
            "train": len(split.train),
            "held_out": len(held),
            "held_out_positive": positives,
            "held_out_negative": len(held) - positives,
        },
        "seed": args.seed,
        "holdout": args.holdout,
        "max_wrong_hit_rate": rate,
        "training": {
            "epochs": args.epochs,
            "max_steps": args.max_steps,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "max_grad_norm": 0.5,
        },
        "model_dir": str(model_dir),
        "mean_cosine_change": moved,
        "base": msgspec.to_builtins(base_scores),
        "tuned": msgspec.to_builtins(tuned_scores),
        "config": {
            "path": str((out / "stagecache.toml").resolve()),
            "threshold": tuned_scores.floor,
            "verifier": "structural",
        },
    }
    (out / "report.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (out / "report.md").write_text(report_markdown(data, base_scores, tuned_scores))
    (out / "stagecache.toml").write_text(
        config_text(model_dir, tuned_scores.floor, "report.md")
    )
    summary = {
        "out": str(out),
        "model": str(model_dir),
        "config": data["config"]["path"],
        "pairs": data["pairs"],
        "base_auc": base_scores.auc,
        "tuned_auc": tuned_scores.auc,
        "mean_cosine_change": moved,
        "threshold": tuned_scores.floor,
    }
    emit(
        summary,
        f"tuned on {len(split.train)} pairs, calibrated on {len(held)} held out: "
        f"ROC AUC {base_scores.auc:.3f} (base) -> {tuned_scores.auc:.3f} (tuned); "
        f"floor {tuned_scores.floor} for a wrong-hit rate <= {rate:.2%}\n"
        f"model:  {model_dir}\nreport: {out / 'report.md'}\n"
        f"config: {out / 'stagecache.toml'}",
        as_json=args.json,
    )
    return 0
