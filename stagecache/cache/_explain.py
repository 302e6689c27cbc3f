"""Explaining a lookup: the nearest entries of a scope and the rule that took each.

:meth:`SemanticCache.explain` runs the lookup's own search, its per-result rules
(``SemanticCache._rule_of``) and its verifier step (``SemanticCache._judge``), and
changes nothing: no recency update, no hit counted, expired entries are listed
rather than reclaimed. Each listed entry gets one rule:

- ``hit``: the entry that would answer.
- ``expired``: past its expiry (a lookup reclaims it).
- ``below_threshold``: cosine under the candidate floor (the verifier's
  ``candidate_threshold``, else the floor in force, ``SemanticCache.threshold``).
- ``key_mismatch``: another model, instructions or context (``detail`` names the
  parts that differ).
- ``rejected_by_verifier``: the verifier said no (``detail`` is its reason).
- ``not_chosen``: acceptable, but a better candidate answers.
- ``not_reached``: over ``top_k``: the lookup never offers it to the verifier.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from stagecache._model import Verdict
from stagecache.cache._scope import Scope
from stagecache.cache._settings import KeyParts
from stagecache.errors import InputError

if TYPE_CHECKING:
    from stagecache.cache._engine import SemanticCache

__all__ = ["ExplainedEntry", "Explanation", "explain_lookup", "miss_reason"]


class ExplainedEntry(msgspec.Struct, kw_only=True):
    """One of the nearest entries of the scope, and what the lookup does with it.

    Attributes:
        entry_id: the entry.
        question: the question it answers (None if it went meanwhile).
        similarity: cosine to the query.
        rule: see the module docstring.
        detail: the parts that differ, or the verifier's reason.
        score: the verifier's score (None without a verifier or before it).
        accepted: the verifier's decision (None without a verifier or before it).
        floor: the cosine floor of the verifier's rule (None before it).
    """

    entry_id: str
    question: str | None
    similarity: float
    rule: str
    detail: str = ""
    score: float | None = None
    accepted: bool | None = None
    floor: float | None = None


class Explanation(msgspec.Struct, kw_only=True):
    """What :meth:`SemanticCache.explain` found.

    Attributes:
        decision: what a lookup would say: ``hit`` or its miss reason
            (``no_candidate``, ``below_threshold``, ``key_mismatch``, ``expired``,
            ``rejected_by_verifier``).
        entry_id: the entry that would answer (a hit).
        best_similarity: cosine of the nearest live entry.
        threshold: the cosine floor in force (``[cache] threshold`` when set,
            else the verifier's calibrated floor; see ``SemanticCache.threshold``).
        threshold_set: whether ``[cache] threshold`` was set (a hard floor).
        floor: the cosine a candidate needs to reach the verifier (see
            ``candidate_floor``; a learned verifier searches lower for context).
        verifier: the verifier's class name, or None.
        calibration: the embedder the verifier's calibration was fitted for,
            ``uncalibrated`` or ``none`` (the cosine rules); None: no verifier.
        verdict: the verifier's verdict the lookup ends on (the hit's, or the
            last rejected one's).
        entries: the nearest entries, best first.
    """

    decision: str
    entry_id: str | None = None
    best_similarity: float | None = None
    threshold: float
    threshold_set: bool = False
    floor: float
    verifier: str | None = None
    calibration: str | None = None
    verdict: Verdict | None = None
    entries: list[ExplainedEntry] = []


def miss_reason(
    mismatched: bool, expired: bool, best: float | None, floor: float
) -> str:
    """Why a lookup without a passing candidate missed."""
    if mismatched:
        return "key_mismatch"
    if expired and (best is not None and best >= floor):
        return "expired"
    if best is None:
        return "no_candidate"
    return "below_threshold"


def _differing(mine: KeyParts, theirs: KeyParts) -> str:
    names = [
        name
        for name in mine.__struct_fields__
        if getattr(mine, name) != getattr(theirs, name)
    ]
    return ", ".join(names) + " differ"


async def explain_lookup(
    engine: SemanticCache,
    scope: Scope,
    vector: Any,
    parts: KeyParts,
    query: str,
    *,
    k: int = 5,
) -> Explanation:
    """See :meth:`SemanticCache.explain`."""
    from stagecache.cache._engine import SEARCH_EXTRA

    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 100:
        raise InputError(f"k: expected an integer from 1 to 100, got {k!r}")
    engine._check_up()
    if engine._changes:
        await engine._apply_changes_read()
    v = engine._check_vector(vector)
    settings = engine.settings
    floor = engine.candidate_floor
    verifier = engine.verifier
    out = Explanation(
        decision="no_candidate",
        threshold=engine.threshold,
        threshold_set=settings.threshold is not None,
        floor=floor,
        verifier=None if verifier is None else type(verifier).__name__,
        calibration=None
        if verifier is None
        else getattr(verifier, "calibration", None),
    )
    state = engine._scopes.get(scope.key)
    if state is None or not len(state):
        return out
    found = await engine._search(state, v, max(k, settings.top_k) + SEARCH_EXTRA)
    now = engine._now()
    out.best_similarity = found[0][1] if found else None
    # The lookup's loop, unchanged in its decisions; it lists instead of stopping.
    listed: list[tuple[str, float, str]] = []
    passing: list[tuple[str, float]] = []
    mismatched = expired = stopped = False
    for entry_id, sim in found:
        rule = engine._rule_of(entry_id, state, sim, parts, now, floor)
        if rule is None:
            continue
        if rule == "expired":
            expired = expired or not stopped
        elif rule == "below_threshold":
            stopped = True
        elif rule == "key_mismatch":
            mismatched = mismatched or not stopped
        elif not stopped and len(passing) < settings.top_k:
            passing.append((entry_id, sim))
        else:
            rule = "not_reached"
        listed.append((entry_id, sim, rule))
    listed = listed[:k]
    rows = await engine.backend.get_many([i for i, _, _ in listed])
    verdicts: dict[str, Verdict] = {}
    chosen_id: str | None = None
    if not passing:
        out.decision = miss_reason(mismatched, expired, out.best_similarity, floor)
    else:
        candidates, chosen, out.verdict = await engine._judge(scope, passing, query)
        if chosen is not None:
            chosen_id = out.entry_id = chosen[0].entry_id
            out.decision = "hit"
        else:
            out.decision = engine.rejection_reason([c for c, _ in candidates])
        if verifier is not None:
            for cand, _ in candidates:
                verdicts[cand.entry_id] = verifier.verify(query, cand)
            if chosen_id is not None and out.verdict is not None:
                verdicts[chosen_id] = out.verdict  # the ranked verdict, if ranked
    for entry_id, sim, rule in listed:
        row = rows.get(entry_id)
        item = ExplainedEntry(
            entry_id=entry_id,
            question=None if row is None else row.query,
            similarity=sim,
            rule=rule,
        )
        record = engine._records.get(entry_id)
        if rule == "key_mismatch" and record is not None:
            item.detail = _differing(parts, record.parts)
        verdict = verdicts.get(entry_id)
        if verdict is not None:
            item.score, item.accepted, item.detail = (
                verdict.score,
                verdict.accept,
                verdict.reason,
            )
            item.floor = engine.decision_floor(verdict)
        if rule == "candidate":
            if entry_id == chosen_id:
                item.rule = "hit"
            elif verdict is not None and not verdict.accept:
                item.rule = "rejected_by_verifier"
            else:
                item.rule = "not_chosen"
        out.entries.append(item)
    return out
