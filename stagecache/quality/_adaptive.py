"""Per-entry decision boundaries learned from feedback, in the spirit of vCache.

vCache (Schroeder et al., 2025) learns for every cache entry where its decision
boundary lies from the hits it served and whether they were right. Here the
verifier's score plays the part of the similarity: each entry keeps the scores of
its hits that users marked right or wrong, and its threshold moves so that

- a hit scored no higher than a known wrong hit of the entry (plus a margin) is
  rejected: the entry's boundary rises above its worst mistake;
- an entry with several confirmed right hits and no wrong one may accept slightly
  lower scores (down to its lowest confirmed score less the margin, at most
  ``max_lower`` below the base threshold);
- an entry whose wrong-hit share is clearly above the budget is switched off.

A scope-wide offset (one :class:`AdaptiveThresholds` per verifier, so one per scope
when the engine keeps a verifier per scope) tracks the wrong-hit share of all
feedback: every wrong raises it by ``step``, every right lowers it by
``step * rate / (1 - rate)``, so it settles where the share of wrong hits among
judged hits equals the user's ``max_wrong_hit_rate`` (a stochastic-approximation
quantile tracker).
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["AdaptiveThresholds"]


class _Entry:
    __slots__ = ("last_score", "right", "wrong")

    def __init__(self) -> None:
        self.right: list[float] = []
        self.wrong: list[float] = []
        self.last_score: float | None = None


class AdaptiveThresholds:
    """Per-entry and per-scope threshold adjustments driven by feedback.

    Args:
        max_wrong_hit_rate: the wrong-hit share the scope offset steers to.
        margin: how far above a known wrong hit's score the entry's boundary goes.
        max_lower: how far below the base threshold confirmed right hits may take
            an entry.
        step: the scope offset's step per judged hit.
        max_entries: entries remembered (least recently used forgotten first).
    """

    __slots__ = (
        "_entries",
        "_max_entries",
        "_rate",
        "margin",
        "max_lower",
        "offset",
        "step",
    )

    def __init__(
        self,
        max_wrong_hit_rate: float = 0.01,
        *,
        margin: float = 0.05,
        max_lower: float = 0.1,
        step: float = 0.01,
        max_entries: int = 100_000,
    ) -> None:
        self._rate = min(max(max_wrong_hit_rate, 1e-4), 0.5)
        self.margin = margin
        self.max_lower = max_lower
        self.step = step
        self.offset = 0.0
        self._max_entries = max_entries
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def _entry(self, entry_id: str) -> _Entry:
        entry = self._entries.get(entry_id)
        if entry is None:
            entry = self._entries[entry_id] = _Entry()
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(entry_id)
        return entry

    def threshold(self, entry_id: str, base: float) -> float:
        """The score an entry's candidate must reach, given the base threshold."""
        t = base + self.offset
        entry = self._entries.get(entry_id)
        if entry is None:
            return t
        n_wrong, n_right = len(entry.wrong), len(entry.right)
        if n_wrong:
            # switched off when even a generous estimate of its error share is
            # above budget: (wrong) / (judged + 2) with a uniform prior
            if n_wrong / (n_wrong + n_right + 2) > max(self._rate * 5, 0.2):
                return float("inf")
            return max(t, max(entry.wrong) + self.margin)
        if n_right >= 2:
            return min(t, max(t - self.max_lower, min(entry.right) - self.margin))
        return t

    def seen(self, entry_id: str, score: float) -> None:
        """Remember the score of a hit the verifier accepted (for later feedback)."""
        self._entry(entry_id).last_score = score

    def record(self, entry_id: str, correct: bool, score: float | None = None) -> None:
        """Record that a hit of ``entry_id`` was right or wrong.

        Args:
            entry_id: the entry that answered.
            correct: whether its answer was right for the query.
            score: the verifier's score of that hit; defaults to the last accepted
                score of the entry (the usual case: feedback on the latest hit).
        """
        entry = self._entry(entry_id)
        s = score if score is not None else entry.last_score
        if s is not None:
            (entry.right if correct else entry.wrong).append(s)
            del entry.right[:-32], entry.wrong[:-32]
        if correct:
            self.offset -= self.step * self._rate / (1.0 - self._rate)
        else:
            self.offset += self.step
        self.offset = min(max(self.offset, -self.max_lower), 0.5)

    def forget(self, entry_id: str) -> None:
        """Drop the state of an entry (evicted or purged)."""
        self._entries.pop(entry_id, None)

    def __len__(self) -> int:
        return len(self._entries)
