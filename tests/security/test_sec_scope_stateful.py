"""Scope isolation as a stateful property: random interleavings of store, lookup,
purge_user and invalidate across users, sessions and scope modes, against a model
of what each scope holds. A lookup may only ever return its own scope's answer;
after a purge nothing of that user is left in records, indexes or backend."""

from __future__ import annotations

from typing import Any

import anyio.from_thread
import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from stagecache import Caller
from stagecache.cache import CacheSettings, KeyParts, Scope, SemanticCache

DIM = 16
VOCAB = np.random.default_rng(0).standard_normal((5, DIM)).astype(np.float32)
VOCAB /= np.linalg.norm(VOCAB, axis=1, keepdims=True)
PARTS = KeyParts("m", "i", "c")
USERS = st.sampled_from(["alice", "alice:x", "bob", 'x"y'])
SESSIONS = st.sampled_from([None, "x", "s1"])


class ScopeIsolation(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.portal_cm = anyio.from_thread.start_blocking_portal("asyncio")
        self.portal = self.portal_cm.__enter__()
        self.caches = {
            mode: SemanticCache(CacheSettings(scope=mode, threshold=0.99), dim=DIM)  # type: ignore[arg-type]
            for mode in ("per_user", "per_session")
        }
        for cache in self.caches.values():
            self.portal.call(cache.warm_up)
        self.model: dict[tuple[str, str, int], str] = {}  # (mode, key, q) -> answer
        self.owner: dict[str, str] = {}  # answer -> user
        self.n = 0

    def teardown(self) -> None:
        for cache in self.caches.values():
            self.portal.call(cache.aclose)
        self.portal_cm.__exit__(None, None, None)

    def scope(self, mode: str, user: str, session: str | None) -> Scope | None:
        s = self.caches[mode].scope_for(Caller(user_id=user, session_id=session))
        return s if isinstance(s, Scope) else None

    @rule(
        mode=st.sampled_from(["per_user", "per_session"]),
        user=USERS,
        session=SESSIONS,
        q=st.integers(0, 4),
    )
    def store(self, mode: str, user: str, session: str | None, q: int) -> None:
        scope = self.scope(mode, user, session)
        if scope is None:
            return
        self.n += 1
        answer = f"a{self.n}"
        self.portal.call(
            self.caches[mode].store, scope, f"q{q}", VOCAB[q], PARTS, answer
        )
        self.model[(mode, scope.key, q)] = answer
        self.owner[answer] = user

    @rule(
        mode=st.sampled_from(["per_user", "per_session"]),
        user=USERS,
        session=SESSIONS,
        q=st.integers(0, 4),
    )
    def lookup(self, mode: str, user: str, session: str | None, q: int) -> None:
        scope = self.scope(mode, user, session)
        if scope is None:
            return
        found: Any = self.portal.call(
            self.caches[mode].lookup, scope, VOCAB[q], PARTS, f"q{q}"
        )
        expected = self.model.get((mode, scope.key, q))
        assert (found.hit.answer if found.hit else None) == expected

    @rule(user=USERS)
    def purge(self, user: str) -> None:
        for mode, cache in self.caches.items():
            self.portal.call(cache.purge_user, user)
            for k in [
                k
                for k, a in self.model.items()
                if k[0] == mode and self.owner[a] == user
            ]:
                del self.model[k]

    @rule(
        mode=st.sampled_from(["per_user", "per_session"]), user=USERS, session=SESSIONS
    )
    def invalidate(self, mode: str, user: str, session: str | None) -> None:
        scope = self.scope(mode, user, session)
        if scope is None:
            return
        self.portal.call(self.caches[mode].invalidate, scope)
        for k in [k for k in self.model if k[0] == mode and k[1] == scope.key]:
            del self.model[k]

    @invariant()
    def index_matches_store(self) -> None:
        for mode, cache in self.caches.items():
            count = self.portal.call(cache.backend.count)
            expected = sum(1 for k in self.model if k[0] == mode)
            assert cache.stats()["entries"] == count == expected


ScopeIsolation.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_scope_isolation_holds_under_random_interleavings = ScopeIsolation.TestCase
