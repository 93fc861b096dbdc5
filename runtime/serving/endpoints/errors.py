"""HTTP failures as :class:`EndpointError`: the one place a status or a transport error gets its name.

Every HTTP request the runtime makes with aiohttp (the http endpoint kind, the server routes the
swaps use, the managed server's health check, the metrics poller) goes through :func:`send`;
the OpenAI SDK kind maps the SDK's exceptions with :func:`status_error` too, so a failure has
the same name and the same retry decision whichever client met it.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
from typing import Any

import aiohttp

from isheep.runtime.core.endpoint import EndpointError
from isheep.runtime.core.errors import EndpointUnavailable

#: Statuses worth sending again: timeouts, conflicts, rate limits and server errors.
RETRYABLE_STATUSES = frozenset({408, 409, 429})
_JSON = {"Content-Type": "application/json"}


def status_error(status: int, detail: str, retry_after: float | None = None) -> EndpointError:
    """The error for an HTTP status: 408/409/429 and 5xx are worth retrying, other 4xx are not."""
    retryable = status in RETRYABLE_STATUSES or status >= 500
    return EndpointError(f"http_{status}", detail[:300], retryable=retryable, status=status, retry_after=retry_after)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_reset(value: str | None) -> float | None:
    """Seconds from a rate-limit reset header: ``20ms``, ``1s``, ``6m0s`` (OpenAI's form) or plain seconds."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def wait_asked(status: int, headers: Any) -> float | None:
    """How long the server asked us to wait: ``Retry-After``, else on a 429 the reset of the
    exhausted rate limit (``x-ratelimit-reset-requests`` / ``-tokens``, the later of the two)."""
    asked = parse_retry_after(headers.get("Retry-After"))
    if asked is not None or status != 429:
        return asked
    resets = [parse_reset(headers.get(name)) for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")]
    known = [r for r in resets if r is not None]
    return max(known) if known else None


def limit_spent(headers: Any) -> float | None:
    """Seconds until a spent rate limit resets, read from a successful reply: for requests and
    tokens, ``x-ratelimit-remaining-*`` at 0 with its ``x-ratelimit-reset-*`` (the later of the two)."""
    waits = []
    for kind in ("requests", "tokens"):
        remaining = headers.get(f"x-ratelimit-remaining-{kind}")
        if remaining is not None and remaining.strip() in ("0", "0.0"):
            reset = parse_reset(headers.get(f"x-ratelimit-reset-{kind}"))
            if reset is not None:
                waits.append(reset)
    return max(waits) if waits else None


_SCHEMA_WORDS = re.compile(r"response_format|json|schema|grammar", re.IGNORECASE)
_CHAT_ONLY = re.compile(r"chat|completions|not supported|unsupported", re.IGNORECASE)
_FENCE = re.compile(r"^```(?:json)?\s*", re.IGNORECASE)


def refused_feature(err: EndpointError, needs: frozenset[str]) -> str | None:
    """The feature a failed request was refused for: a JSON schema (HTTP 400, 422 or 500 whose body
    names response_format, json, schema or grammar: llama.cpp answers 500), or plain completions
    (HTTP 404, 405 or 501, or a 400 that says the model is chat-only)."""
    if "response_format" in needs and err.status in (400, 422, 500) and _SCHEMA_WORDS.search(err.detail):
        return "response_format"
    if "completions" in needs and (err.status in (404, 405, 501) or err.status == 400 and _CHAT_ONLY.search(err.detail)):
        return "completions"
    return None


def ignores_schema(text: str) -> bool:
    """A reply to a request with a JSON schema that is no JSON object: the server ignored the schema."""
    return not _FENCE.sub("", text.strip()).startswith("{")


def key_refused(url: str, status: int | None) -> EndpointUnavailable | None:
    """A refused API key stops the run at once: every request would be refused the same way."""
    if status in (401, 403):
        return EndpointUnavailable(f"{url} refused the API key (HTTP {status}); set OPENAI_API_KEY or the "
                                   "endpoint's api_key_env")
    return None


async def send(session: aiohttp.ClientSession, method: str, url: str, *, body: Any = None,
               params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
               typed: bool = False) -> bytes:
    """Send one request and return the body of a 2xx answer (``typed``: the session already says JSON).

    Raises:
        EndpointError: as :func:`exchange`.
    """
    return (await exchange(session, method, url, body=body, params=params, headers=headers, typed=typed))[0]


async def exchange(session: aiohttp.ClientSession, method: str, url: str, *, body: Any = None,
                   params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
                   typed: bool = False) -> tuple[bytes, Any]:
    """:func:`send`, returning the 2xx answer's headers with its body.

    Raises:
        EndpointError: ``http_<status>`` for any other status (with ``Retry-After``), ``timeout``,
            ``truncated_body`` or ``connection`` for transport failures.
    """
    data = None
    if body is not None:
        data = json.dumps(body)
        if not typed:
            headers = {**_JSON, **headers} if headers else _JSON
    try:
        async with session.request(method, url, data=data, params=params, headers=headers) as resp:
            raw = await resp.read()
            if not 200 <= resp.status < 300:
                raise status_error(resp.status, raw.decode("utf-8", "replace"), wait_asked(resp.status, resp.headers))
            return raw, resp.headers
    except asyncio.TimeoutError:
        raise EndpointError("timeout", url, retryable=True) from None
    except aiohttp.ClientPayloadError as exc:
        raise EndpointError("truncated_body", str(exc), retryable=True) from None
    except aiohttp.ClientResponseError as exc:
        raise status_error(exc.status, exc.message) from None
    except (aiohttp.ClientConnectionError, OSError) as exc:
        raise EndpointError("connection", f"{url}: {exc}", retryable=True) from None


def parse_json(raw: bytes) -> Any:
    """A reply body as JSON; a body that is not JSON is a retryable ``bad_json``."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise EndpointError("bad_json", raw[:200].decode("utf-8", "replace"), retryable=True) from None
