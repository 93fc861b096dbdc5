"""The endpoint interface the roles talk through.

Roles see only this module: a :class:`Client` sends chat and completion requests to the served
models and returns a :class:`Completion`, or raises :class:`EndpointError` once its retries are
spent. How requests reach a server (plain HTTP, the OpenAI SDK, a managed vLLM, a pool of
several) lives in ``isheep.runtime.serving.endpoints``.
"""

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
    #: Seconds until the endpoint's spent rate limit resets, when the reply's headers say it is
    #: spent (``x-ratelimit-remaining-*: 0``): the pool waits that long before the 429 would come.
    limit_resets_in: float | None = None


class EndpointError(Exception):
    """A request failed. ``reason`` is short and stable (it becomes an item's failure reason).

    Args:
        reason: A stable name such as ``http_500``, ``timeout`` or ``bad_json``.
        detail: What the server said, shortened.
        retryable: Whether sending the same request again may succeed.
        status: The HTTP status, when there was one.
        retry_after: Seconds the server asked the client to wait (``Retry-After``).
    """

    def __init__(self, reason: str, detail: str = "", *, retryable: bool, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.retryable = retryable
        self.status = status
        self.retry_after = retry_after


class Client(abc.ABC):
    """Sends requests to the served models (the endpoint pool is the one the roles get)."""

    @abc.abstractmethod
    async def chat(self, body: dict[str, Any]) -> Completion:
        """POST /chat/completions with ``body`` (model, messages, sampling...)."""

    @abc.abstractmethod
    async def complete(self, body: dict[str, Any]) -> Completion:
        """POST /completions with ``body`` (model, prompt, sampling...)."""

    def supports(self, feature: str) -> bool:
        """Whether some endpoint still honours ``feature`` (``completions``, ``response_format``).

        A request that needs a feature every endpoint refused fails with the reason
        ``<feature>_refused`` (``completions_refused``, ``schema_refused``) without being sent.
        """
        return True
