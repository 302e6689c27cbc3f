"""stagecache as LangChain's semantic LLM cache, and as a Runnable (offline).

pip install 'stagecache[langchain]'
HF_HUB_OFFLINE=1 python examples/langchain_cache.py
"""

from __future__ import annotations

from langchain_core.globals import set_llm_cache
from langchain_core.language_models.fake_chat_models import FakeListChatModel

import stagecache
from stagecache.config import parse_config
from stagecache.integrations.langchain import (
    StagecacheLangChainCache,
    StagecacheRunnable,
)

# The structural verifier accepts close paraphrases; the default learned one is
# tuned for a 1% wrong-hit rate and is stricter.
CONFIG = parse_config({"verifier": {"kind": "structural"}})
current = {"user": stagecache.Caller(user_id="alice")}


def main() -> None:
    cache = StagecacheLangChainCache(caller_from=lambda: current["user"], config=CONFIG)
    set_llm_cache(cache)
    model = FakeListChatModel(responses=["Open Settings > Security.", "Hi Bob!"])
    for user, question in [
        ("alice", "How do I reset my password?"),
        ("alice", "How can I reset my password?"),  # paraphrase: a hit
        ("bob", "How can I reset my password?"),  # another user: a miss
    ]:
        current["user"] = stagecache.Caller(user_id=user)
        answer = model.invoke(question).content
        status = cache.last_result.cache.status if cache.last_result else "-"
        print(f"{user:<6} {status:<5} {question} -> {answer}")
    set_llm_cache(None)
    cache.close()

    runnable = StagecacheRunnable(
        FakeListChatModel(responses=["Paris."]),
        caller=stagecache.Caller(user_id="carol"),
        config=CONFIG,
    )
    for question in [
        "What is the capital of France?",
        "Tell me the capital of France.",
    ]:
        reply = runnable.invoke(question)
        status = reply.response_metadata["stagecache"]["cache"]
        print(f"runnable {status:<5} {reply.content}")
    runnable.close()


if __name__ == "__main__":
    main()
