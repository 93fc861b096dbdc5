"""What every endpoint kind provides: chat, completions and the model list of one server."""

from __future__ import annotations

import abc
from typing import Any

from isheep.runtime.core.endpoint import Client, Completion, EndpointError


def completion_from_json(data: Any, kind: str) -> Completion:
    """Read a chat or text completion body; a malformed one is a retryable error."""
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"] if kind == "chat" else choice["text"]
        usage = data.get("usage") or {}
        return Completion(
            text=text if isinstance(text, str) else "",
            finish_reason=choice.get("finish_reason"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            model=str(data.get("model") or ""),
        )
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        raise EndpointError("bad_reply", f"unexpected body: {str(data)[:200]}", retryable=True) from None


class Endpoint(Client):
    """One OpenAI-compatible server. Retries, rate and concurrency are the pool's business.

    Kinds sit side by side, one module each: ``http`` (aiohttp, the default), ``openai`` (the
    SDK), ``managed`` (a vLLM server this run started).
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    @abc.abstractmethod
    async def models(self) -> list[str]:
        """GET /models: the names this server answers to."""

    async def aclose(self) -> None:
        """Release connections."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url})"
