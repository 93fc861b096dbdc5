"""The SDK kind: ``openai.AsyncOpenAI``, for providers that need its auth or quirks (Azure...).

Slower per request than the http kind (typed request building and parsing), so it is opt-in:
``kind = "openai"`` on an endpoint. Retries stay with the pool, so the SDK's are turned off.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import httpx
import openai

from .base import Completion, Endpoint, EndpointError, completion_from_json
from .errors import limit_spent, parse_json, status_error, wait_asked

# Parameters the SDK accepts by name; anything else (vLLM's extras) travels in extra_body.
_CHAT_PARAMS = {"model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "stop",
                "seed", "response_format", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty"}
_COMPLETION_PARAMS = {"model", "prompt", "temperature", "top_p", "max_tokens", "n", "stop", "seed", "logprobs",
                      "echo", "presence_penalty", "frequency_penalty"}


class OpenAIEndpoint(Endpoint):
    """The SDK kind: ``openai.AsyncOpenAI`` with its retries off (the pool retries)."""

    def __init__(self, base_url: str, api_key: str | None, *, timeout_s: float, connect_timeout_s: float,
                 max_in_flight: int) -> None:
        super().__init__(base_url)
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=api_key or "EMPTY",  # local servers need none, the SDK insists on one
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            max_retries=0,
        )

    @staticmethod
    def _split(body: dict[str, Any], known: set[str]) -> dict[str, Any]:
        args = {k: v for k, v in body.items() if k in known}
        extra = {k: v for k, v in body.items() if k not in known}
        if extra:
            args["extra_body"] = extra
        return args

    @contextlib.contextmanager
    def _mapped(self) -> Iterator[None]:
        """The SDK's exceptions as the same EndpointErrors the http kind raises."""
        try:
            yield
        except openai.APITimeoutError:
            raise EndpointError("timeout", self.base_url, retryable=True) from None
        except openai.APIConnectionError as exc:
            raise EndpointError("connection", f"{self.base_url}: {exc}", retryable=True) from None
        except openai.APIStatusError as exc:
            raise status_error(exc.status_code, str(exc.message), wait_asked(exc.status_code, exc.response.headers)) \
                from None

    async def _call(self, coro_factory, kind: str) -> Completion:
        with self._mapped():
            raw = await coro_factory()
        # Parsed as the http kind does, for the same errors and the same reading of spent limits.
        result = completion_from_json(parse_json(raw.http_response.content), kind)
        spent = limit_spent(raw.http_response.headers)
        return result if spent is None else dataclasses.replace(result, limit_resets_in=spent)

    async def chat(self, body: dict[str, Any]) -> Completion:
        args = self._split(body, _CHAT_PARAMS)
        return await self._call(lambda: self._client.chat.completions.with_raw_response.create(**args), "chat")

    async def complete(self, body: dict[str, Any]) -> Completion:
        args = self._split(body, _COMPLETION_PARAMS)
        return await self._call(lambda: self._client.completions.with_raw_response.create(**args), "text")

    async def models(self) -> list[str]:
        with self._mapped():
            page = await self._client.models.list()
        return [m.id for m in page.data]

    async def aclose(self) -> None:
        await self._client.close()
