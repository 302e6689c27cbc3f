"""Property: a lookup never returns an entry stored under another scope."""

from __future__ import annotations

import anyio
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stagecache._model import Caller
from stagecache.cache import CacheSettings, KeyParts, Scope, SemanticCache

DIM = 16
_rng = np.random.default_rng(0)
VOCAB = _rng.standard_normal((6, DIM)).astype(np.float32)
VOCAB /= np.linalg.norm(VOCAB, axis=1, keepdims=True)
PARTS = KeyParts("m", "i", "c")

ids = st.sampled_from(["alice", "alice:x", "bob", "x", 'a"b'])  # "" is refused
maybe = st.one_of(st.none(), ids)
ops = st.lists(
    st.tuples(st.booleans(), maybe, maybe, maybe, st.integers(0, len(VOCAB) - 1)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode=st.sampled_from(["per_user", "per_session"]), script=ops)
def test_lookups_never_cross_scopes(mode: str, script: list[tuple]) -> None:
    async def main() -> None:
        cache = SemanticCache(CacheSettings(scope=mode, threshold=0.99), dim=DIM)
        owner: dict[str, str] = {}  # entry id -> scope key
        async with cache:
            for is_store, user, session, tenant, q in script:
                caller = Caller(user_id=user, session_id=session, tenant=tenant)
                scope = cache.scope_for(caller)
                if not isinstance(scope, Scope):
                    assert not user or (mode == "per_session" and not session)
                    continue
                assert scope.user_id == user
                if is_store:
                    eid = await cache.store(scope, f"q{q}", VOCAB[q], PARTS, scope.key)
                    assert eid is not None
                    owner[eid] = scope.key
                else:
                    found = await cache.lookup(scope, VOCAB[q], PARTS, f"q{q}")
                    if found.hit is not None:
                        assert owner[found.hit.entry_id] == scope.key
                        assert found.hit.answer == scope.key
                    for cand in found.candidates:
                        assert owner[cand.entry_id] == scope.key

    anyio.run(main)
