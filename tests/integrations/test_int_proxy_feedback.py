"""Feedback through the proxy's admin endpoint reaches the log ``stagecache tune``
reads: the official openai client gets a hit, the operator says it was wrong."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from servers import FakeUpstream, ServerThread

from stagecache import Caller
from stagecache._cli._open import open_cache
from stagecache.config import check_file
from stagecache.integrations.proxy import ProxySettings, create_app

KEY, ADMIN = "sk-alice", "admin-secret"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, pipeline_options: dict[str, Any]
) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("feedback")
    config = folder / "pipeline.toml"
    config.write_text(
        '[verifier]\nkind = "structural"\n\n[cache]\ntimeout_s = 30.0\n\n'
        f'[cache.backend]\nkind = "sqlite"\npath = "{folder / "cache.db"}"\n'
    )
    options = {**pipeline_options, "config": check_file(config)}
    fake = FakeUpstream()
    with ServerThread(fake.app) as upstream:
        settings = ProxySettings(
            upstream=upstream.url + "/v1",
            api_keys={KEY: Caller(user_id="alice")},
            admin_key=ADMIN,
        )
        with ServerThread(create_app(settings, **options)) as server:
            yield server.url, config


def _hit_entry(url: str, question: str) -> str:
    client = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0)
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-test", messages=[{"role": "user", "content": question}]
        )
    assert raw.headers["x-stagecache"] == "hit"
    return raw.headers["x-stagecache-entry"]


def _feedback(url: str, body: dict[str, Any]) -> httpx.Response:
    headers = {"authorization": f"Bearer {ADMIN}"}
    return httpx.post(url + "/admin/feedback", json=body, headers=headers)


@pytest.mark.anyio
async def test_admin_feedback_with_the_query_joins_the_feedback_log(
    served: tuple[str, Path],
) -> None:
    url, config = served
    entry = _hit_entry(url, "How do I export my data?")
    body = {"entry_id": entry, "correct": False, "query": "How do I export my data?"}
    response = _feedback(url, body)
    assert response.status_code == 200 and response.json() == {"found": True}
    async with open_cache(str(config)) as api:
        records = await api.feedback_records("alice")
    assert [(r.entry_id, r.hit_query, r.correct) for r in records] == [
        (entry, "How do I export my data?", False)
    ]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [(5, "a string"), (["a"], "a string"), ("   ", "is not a query")],
)
def test_admin_feedback_refuses_a_query_that_is_no_text(
    served: tuple[str, Path], query: object, fragment: str
) -> None:
    url, _ = served
    entry = _hit_entry(url, "Where are my invoices kept?")
    response = _feedback(url, {"entry_id": entry, "correct": True, "query": query})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "query" and fragment in error["message"]
