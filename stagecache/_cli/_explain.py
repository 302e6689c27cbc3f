"""``stagecache explain``: why a question hits or misses, candidate by candidate.

Loads the embedding model (the question has to be embedded) and the configured
backend; changes nothing in the cache.
"""

from __future__ import annotations

import argparse
from typing import Any

import msgspec

from stagecache._cli._output import emit
from stagecache._model import Caller
from stagecache.errors import ConfigError

__all__ = ["add_explain_arguments", "explain"]


def add_explain_arguments(
    sub: Any, common: argparse.ArgumentParser, config: argparse.ArgumentParser
) -> None:
    """The ``explain`` subcommand."""
    cmd = sub.add_parser(
        "explain",
        parents=[common, config],
        help="why a question hits or misses: the nearest entries of the caller's "
        "scope, each with its cosine and the rule that accepted or rejected it",
    )
    cmd.add_argument("question", help="the question, as the user would ask it")
    cmd.add_argument("--user", required=True, help="the user who asks")
    cmd.add_argument("--tenant", default=None, help="the user's tenant")
    cmd.add_argument(
        "--session", default=None, help="the session (per_session scope only)"
    )
    cmd.add_argument("--model", default=None, help="the request's model id")
    cmd.add_argument(
        "-k",
        type=int,
        default=5,
        help="how many of the nearest entries to list (1 to 100, default 5)",
    )


async def explain(args: argparse.Namespace) -> int:
    """Explain a lookup; exit 0 on a hit, 1 on a miss."""
    import stagecache
    from stagecache.testing import ScriptedLLM

    pipeline = stagecache.load(args.config, llm=ScriptedLLM(lambda p: "", delay_s=0))
    if pipeline.cache.engine.settings.backend.kind == "memory":
        raise ConfigError(
            "the memory backend keeps nothing between processes, so a new process "
            'finds it empty; use kind = "sqlite" or "redis"',
            path=args.config,
            field="cache.backend.kind",
        )
    caller = Caller(user_id=args.user, session_id=args.session, tenant=args.tenant)
    async with pipeline:
        found = await pipeline.cache.explain(
            args.question, caller=caller, model=args.model, k=args.k
        )
    data = msgspec.to_builtins(found)
    lines = [_headline(found.decision, data)]
    for item in found.entries:
        detail = f" ({item.detail})" if item.detail else ""
        score = "" if item.score is None else f" score {item.score:.3f}"
        lines.append(
            f"  {item.similarity:.3f}  {item.rule:<20}{score}{detail}  "
            f"{item.entry_id}  {(item.question or '-')[:60]}"
        )
    emit(data, "\n".join(lines), as_json=args.json)
    return 0 if found.decision == "hit" else 1


def _headline(decision: str, data: dict[str, Any]) -> str:
    """Decision, best cosine, the floor in force (set or calibrated), the verifier
    with its calibration, and the rule the lookup ends on."""
    best = data.get("best_similarity")
    near = "none" if best is None else f"{best:.3f}"
    verifier = data.get("verifier") or "none"
    origin = "[cache] threshold" if data.get("threshold_set") else "verifier floor"
    head = (
        f"{decision}: best cosine {near}, threshold {data['threshold']:.3f} ({origin})"
    )
    if data["floor"] != data["threshold"]:
        head += f", candidate floor {data['floor']:.3f}"
    head += f", verifier {verifier}"
    if data.get("calibration"):
        head += f" (calibration {data['calibration']})"
    verdict = data.get("verdict")
    if verdict:
        floor = verdict.get("floor")
        at = "" if floor is None else f", floor {floor:.3f}"
        head += f"; rule: {verdict['reason']} (score {verdict['score']:.3f}{at})"
    return head
