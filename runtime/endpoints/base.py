"""What every endpoint kind provides: chat, completions and the model list of one server."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Completion:
    """One generated reply, whatever the kind of endpoint that produced it."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    model: str


class EndpointError(Exception):
    """A request failed. ``reason`` is short and stable (it becomes an item's failure reason)."""

    def __init__(self, reason: str, detail: str = "", *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


def status_error(status: int, detail: str, retry_after: float | None = None) -> EndpointError:
    """The error for an HTTP status: 408/409/429 and 5xx are worth retrying, other 4xx are not."""
    retryable = status in (408, 409, 429) or status >= 500
    return EndpointError(f"http_{status}", detail[:300], retryable=retryable, status=status, retry_after=retry_after)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from model servers; fall back to our own backoff


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


class Endpoint(abc.ABC):
    """One OpenAI-compatible server. Retries, rate and concurrency are the pool's business."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    @abc.abstractmethod
    async def chat(self, body: dict[str, Any]) -> Completion:
        """POST /chat/completions with ``body`` (model, messages, sampling...)."""

    @abc.abstractmethod
    async def complete(self, body: dict[str, Any]) -> Completion:
        """POST /completions with ``body`` (model, prompt, sampling...)."""

    @abc.abstractmethod
    async def models(self) -> list[str]:
        """GET /models: the names this server answers to."""

    async def aclose(self) -> None:
        """Release connections."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url})"
