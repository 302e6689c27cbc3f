"""Model clients: an OpenAI-compatible chat client (httpx, async).

Works with any server that speaks ``POST /v1/chat/completions``: OpenAI, vLLM,
Ollama, llama.cpp. Timeouts; retries on 408/409/425/429, 5xx, timeouts and
connection errors (:mod:`stagecache._http_retry`: tenacity, exponential backoff with
jitter, at least the wait a ``retry-after-ms`` / ``Retry-After`` asks for); errors
translated into :class:`~stagecache.errors.LLMError` with the status code and a hint.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import httpx

from stagecache._http_retry import RETRY_STATUS, RetryPolicy
from stagecache._model import ToolCall, Turn, Usage
from stagecache.errors import ConfigError, LLMError
from stagecache.exporters._propagation import trace_headers
from stagecache.stages.llm import Completion

if TYPE_CHECKING:
    from stagecache.config import OpenAIChatConfig

__all__ = ["OpenAIChatClient", "finish_reason", "turn_to_openai_messages"]


def turn_to_openai_messages(turn: Turn) -> list[dict[str, Any]]:
    """The chat messages of ``turn`` in OpenAI's shape (system prompt first)."""
    messages: list[dict[str, Any]] = []
    has_system = any(m.role == "system" for m in turn.messages)
    if turn.instructions and not has_system:
        messages.append({"role": "system", "content": turn.instructions})
    if turn.memory:
        facts = "\n".join(f"- {m}" for m in turn.memory)
        messages.append(
            {"role": "system", "content": f"Known about the user:\n{facts}"}
        )
    messages.extend({"role": m.role, "content": m.content} for m in turn.messages)
    return messages


class OpenAIChatClient:
    """An async client for an OpenAI-compatible ``/v1/chat/completions``.

    Args:
        base_url: the server, e.g. ``https://api.openai.com/v1`` or
            ``http://127.0.0.1:8000/v1``.
        model: the model to ask for when the turn's model is ``"default"``.
        api_key: bearer token (None for servers without keys).
        timeout_s: per-request timeout.
        max_retries: retries after the first attempt on retryable failures.
        transport: an httpx transport (tests inject faults with it).
        backoff_s: the first retry's delay; it doubles each time (with jitter),
            capped at ``max_backoff_s``.
        max_backoff_s: the longest backoff; a server's ``retry-after-ms`` /
            ``Retry-After`` is waited for in full, up to ``max_retry_after_s``.
        max_retry_after_s: the longest wait a server may ask for; a reply asking
            for more is not retried (an :class:`LLMError` saying so).
    """

    #: ``gen_ai.provider.name`` of the model call's span.
    provider_name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        max_retry_after_s: float = 60.0,
    ) -> None:
        self.model_id = model
        self._url = base_url.rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers, timeout=timeout_s, transport=transport
        )
        self._policy = RetryPolicy(
            max_retries=max_retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            max_retry_after_s=max_retry_after_s,
        )

    @classmethod
    def from_config(cls, config: OpenAIChatConfig) -> OpenAIChatClient:
        api_key = None
        if config.api_key_env:
            api_key = os.environ.get(config.api_key_env)
            if not api_key:
                raise ConfigError(
                    f"environment variable {config.api_key_env} is not set; set it or "
                    'set api_key_env = "" for a server without keys',
                    field="llm.api_key_env",
                )
        return cls(
            config.base_url,
            config.model,
            api_key,
            timeout_s=config.timeout_s,
            max_retries=config.max_retries,
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()

    async def complete(self, turn: Turn) -> Completion:
        """Ask the server for the answer to ``turn``.

        Raises:
            LLMError: after the retries, with the status code and the server's message.
        """
        model = self.model_id if turn.model in ("", "default") else turn.model
        body: dict[str, Any] = {
            "model": model,
            "messages": turn_to_openai_messages(turn),
        }
        if turn.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters
                        or {"type": "object", "properties": {}},
                    },
                }
                for t in turn.tools
            ]
        for name, value in turn.params.items():  # run(params=...): sent along
            body.setdefault(name, value)
        data = await self._post(body)
        return _parse(data)

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        async def post() -> httpx.Response:
            # The trace context of each attempt: the current span when it is sent.
            return await self._client.post(
                self._url, json=body, headers=trace_headers()
            )

        done = await self._policy.send(self._url, post)
        tries = f"after {done.attempts} attempt{'s' if done.attempts > 1 else ''}"
        response = done.response
        if response is None:
            if isinstance(done.error, httpx.TimeoutException):
                raise LLMError(
                    f"timed out calling {self._url} ({tries})"
                ) from done.error
            raise LLMError(
                f"cannot reach {self._url}: {done.error} ({tries})"
            ) from done.error
        if done.retry_after_s is not None:
            raise LLMError(
                f"{_error_text(response)}; the server asked to retry after "
                f"{done.retry_after_s:g} s, more than max_retry_after_s="
                f"{self._policy.max_retry_after_s:g} ({tries})",
                status_code=response.status_code,
            )
        if response.status_code >= 400:
            if response.status_code in RETRY_STATUS:
                text = f"{_error_text(response)} ({tries})"
            else:
                text = _error_text(response)
            raise LLMError(text, status_code=response.status_code)
        try:
            data = response.json()
        except ValueError:
            raise LLMError(f"{self._url} returned a body that is not JSON") from None
        if not isinstance(data, dict):
            raise LLMError(f"{self._url} returned JSON that is not an object")
        return data


def _error_text(response: httpx.Response) -> str:
    try:
        detail = response.json().get("error", {}).get("message", "")
    except (ValueError, AttributeError):
        detail = response.text[:200]
    return f"{response.request.url} answered {response.status_code}: {detail}"


def _parse(data: dict[str, Any]) -> Completion:
    try:
        choice = data["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise LLMError("the server's reply has no choices[0].message") from None
    text = message.get("content") or ""
    if not isinstance(text, str):
        raise LLMError("choices[0].message.content is not a string")
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function", {})
        arguments: Any = function.get("arguments") or {}
        if isinstance(arguments, str):
            import json

            try:
                arguments = json.loads(arguments or "{}")
            except ValueError:
                arguments = {"raw": arguments}
        calls.append(ToolCall(name=str(function.get("name", "")), arguments=arguments))
    usage = data.get("usage") or {}
    return Completion(
        text=text,
        usage=Usage(
            prompt_tokens=int(usage.get("prompt_tokens", 0) or 0),
            completion_tokens=int(usage.get("completion_tokens", 0) or 0),
        ),
        tool_calls=calls,
        model=str(data.get("model", "")),
        finish_reason=finish_reason(choice),
        response_id=_response_id(data),
    )


def _response_id(data: dict[str, Any]) -> str | None:
    """The completion's ``id`` (``gen_ai.response.id``), or None."""
    value = data.get("id")
    return value[:128] if isinstance(value, str) and value else None


def finish_reason(choice: Any) -> str | None:
    """``choices[0].finish_reason`` of an OpenAI-shaped reply, or None when absent."""
    value = choice.get("finish_reason") if isinstance(choice, dict) else None
    return value if isinstance(value, str) and value else None
