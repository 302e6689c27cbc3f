"""What ``stagecache tune`` writes beside the model: report.md and stagecache.toml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stagecache.tuning._report import ModelScores, Operating

__all__ = ["config_text", "report_markdown"]


def _toml_str(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def config_text(model_dir: Path, threshold: float, report: str) -> str:
    """The pipeline file that runs the tuned model with its held-out floor."""
    return (
        "# Written by `stagecache tune` (calibration: " + report + ").\n"
        "# The tuned embedder, the cosine floor calibrated on your held-out pairs,\n"
        "# and the structural verifier: the learned verifier's calibration was\n"
        "# measured on all-MiniLM-L6-v2 cosines and does not hold for this model.\n"
        "# Merge these sections into your pipeline file (entries embedded by another\n"
        "# model are keyed apart: the cache starts cold for the tuned model).\n"
        "\n"
        "[embedder]\n"
        'kind = "onnx"\n'
        f"model = {_toml_str(str(model_dir))}\n"
        'quantize = "int8"\n'
        "\n"
        "[cache]\n"
        f"threshold = {threshold}\n"
        "\n"
        "[verifier]\n"
        'kind = "structural"\n'
    )


def _cell(op: Operating) -> str:
    precision = "-" if op.precision is None else f"{op.precision:.3f}"
    return f"{op.hits} | {precision} | {op.recall:.3f} | {op.wrong_hit_rate:.2%}"


def report_markdown(data: dict[str, Any], base: ModelScores, tuned: ModelScores) -> str:
    """The human-readable calibration report (``report.json`` holds the same)."""
    pairs = data["pairs"]
    budget = data["max_wrong_hit_rate"]
    n = pairs["held_out"]
    lines = [
        "# stagecache tune: calibration report",
        "",
        f"Pairs: {pairs['total']} ({pairs['from_files']} from files, "
        f"{pairs['from_feedback']} from feedback, {pairs['duplicates']} repeats "
        f"dropped); trained on {pairs['train']}, held out {n} "
        f"({pairs['held_out_positive']} label 1, {pairs['held_out_negative']} label 0; "
        f"split seed {data['seed']}, grouped so no text sits on both sides).",
        "",
        "Each held-out pair is read as a lookup: one text cached, the other asked, "
        "a hit when the cosine reaches the threshold. Wrong-hit rate = wrong hits / "
        f"all held-out pairs; budget {budget:.2%} (one wrong hit here is "
        f"{1 / n:.2%}).",
        "",
        "| model | ROC AUC | floor | hits | precision | recall | wrong-hit rate |",
        "|---|---|---|---|---|---|---|",
        f"| base {base.model_id} | {base.auc:.3f} | {base.floor:.4f} | "
        f"{_cell(base.at_floor)} |",
        f"| tuned {tuned.model_id} | {tuned.auc:.3f} | {tuned.floor:.4f} | "
        f"{_cell(tuned.at_floor)} |",
        "",
        f"Training moved the held-out cosines by {data['mean_cosine_change']:.4f} "
        "on average (0: the model did not change; the loss learns from hard pairs "
        "only, a label-1 pair less similar than a label-0 one).",
        "",
        "## Per cosine threshold",
        "",
        "| threshold | base: hits / precision / recall / wrong | "
        "tuned: hits / precision / recall / wrong |",
        "|---|---|---|",
    ]
    for b, t in zip(base.table, tuned.table, strict=True):
        lines.append(
            f"| {b.threshold:.2f} | {_cell(b).replace(' | ', ' / ')} | "
            f"{_cell(t).replace(' | ', ' / ')} |"
        )
    lines += [
        "",
        "## The config",
        "",
        f"`stagecache.toml` runs the tuned model (`[embedder] model = "
        f"{data['model_dir']}`) with `[cache] threshold = {tuned.floor}`, the tuned "
        f'floor above, and `[verifier] kind = "structural"` (cosine plus the '
        "structural veto: numbers, negation, dates, units, entities). The default "
        "learned verifier is not used: its calibration tables were measured on "
        "all-MiniLM-L6-v2 cosines and do not apply to a tuned model's cosines.",
        "",
        f"The floor is measured on {n} held-out pairs: with few pairs it is coarse; "
        "more pairs (a few hundred per label) give a floor you can trust.",
    ]
    if tuned.auc < base.auc:
        lines += [
            "",
            f"**Warning:** the tuned model separates the held-out pairs worse than "
            f"the base (AUC {tuned.auc:.3f} < {base.auc:.3f}); keep the base model "
            "or train on more pairs.",
        ]
    return "\n".join(lines) + "\n"
