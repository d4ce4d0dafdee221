"""The one door to a chat LLM: OpenAI, or any OpenAI-compatible server (Ollama, vLLM, …).

The official ``openai.OpenAI`` client is built on first use (importing and configuring it
costs nothing until an answer is needed), with its own retries disabled: this module retries
429, 408, 5xx, timeouts and connection failures itself, with exponential backoff and jitter,
honouring ``Retry-After`` (capped), and turns every failure into an :class:`LLMError` whose
message says where and what went wrong. ``max_retries`` counts retries after the first try.

A stream is retried only while no text has been yielded: replaying it later would repeat
output the reader has already seen.
"""

from __future__ import annotations

import email.utils
import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from assistant.answering import prices
from assistant.errors import AssistantError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DUMMY_API_KEY = "not-needed"  # local servers (Ollama…) ignore the key, the client wants one
RETRY_AFTER_CAP = 20.0  # seconds: never wait longer than this between two tries
_RETRY_STATUS = frozenset({408, 429})


@dataclass
class Usage:
    """Token counts of one completion. ``known`` is False when the server reported none (the
    counts are then zeros, not estimates)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    known: bool = True

    @classmethod
    def unknown(cls) -> "Usage":
        return cls(known=False)

    @classmethod
    def from_api(cls, usage: Any) -> "Usage":
        if usage is None:
            return cls.unknown()
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        total = int(getattr(usage, "total_tokens", 0) or 0) or prompt + completion
        return cls(prompt, completion, total)


@dataclass
class Completion:
    """A finished answer: its text, token usage and the model that wrote it (as the server
    names it, e.g. a dated snapshot)."""

    text: str
    usage: Usage
    model: str
    finish_reason: str | None = None
    elapsed: float = 0.0  # seconds, first request to last byte, retries included

    @property
    def cost(self) -> float | None:
        """USD, or None for an unknown model or unknown usage."""
        return prices.cost(self.model, self.usage)


class LLMError(AssistantError):
    """The LLM refused or failed a request. ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class LLMUnavailable(LLMError):
    """The LLM cannot answer now: unreachable, timing out, overloaded (5xx) or rate-limited
    (429), after every retry."""


@dataclass
class _Failure:
    kind: str  # timeout | connection | status | api | client
    retryable: bool
    error: BaseException
    status: int | None = None
    message: str = ""
    retry_after: float | None = None


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _retry_after(headers: Any) -> float | None:
    """Seconds asked by ``Retry-After`` / ``retry-after-ms`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(err: Any) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return _short(body["message"])
    message = getattr(err, "message", None) or str(err)
    return _short(re.sub(r"^Error code: \d+ - ", "", message))


def _is_reasoning_model(model: str) -> bool:
    """o-series and gpt-5 reasoning models take ``max_completion_tokens`` and no temperature."""
    name = model.lower().rsplit("/", 1)[-1]
    return bool(re.match(r"o\d", name)) or (name.startswith("gpt-5") and "chat" not in name)


class LLMClient:
    """A chat model behind an OpenAI-compatible API, with our own retries and clear errors."""

    def __init__(self, *, api_key: str, base_url: str | None = None, model: str = "gpt-4o-mini",
                 timeout: float = 30.0, max_retries: int = 3, backoff: float = 0.5, client=None):
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be a non-negative integer, got {max_retries!r}")
        if timeout is None or timeout <= 0:
            raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
        self._api_key = api_key or ""
        self.base_url = (base_url or "").strip() or None
        self.model = model
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self._client = client
        self._client_ready = False
        self._client_lock = threading.Lock()
        self._sleep: Callable[[float], None] = time.sleep  # tests may replace it

    def __repr__(self) -> str:
        return f"LLMClient(model={self.model!r}, url={self.url!r})"

    def with_timeout(self, timeout: float, max_retries: int = 0) -> "LLMClient":
        """A client of the same server, key and model with another timeout and retry budget
        (a latency-bound caller, such as the LLM reranker, cannot wait for retries)."""
        return LLMClient(api_key=self._api_key, base_url=self.base_url, model=self.model,
                         timeout=timeout, max_retries=max_retries, backoff=self.backoff)

    @property
    def url(self) -> str:
        """The API base URL in use (for messages and logs; never holds the key)."""
        return self.base_url or DEFAULT_BASE_URL

    # -- the underlying client ---------------------------------------------------------------

    def _openai(self):
        """The ``openai.OpenAI`` client, built on first use, with its own retries disabled."""
        if self._client_ready:
            return self._client
        with self._client_lock:
            if not self._client_ready:
                import openai

                if self._client is None:
                    self._client = openai.OpenAI(api_key=self._api_key or DUMMY_API_KEY, base_url=self.url,
                                                 timeout=self.timeout, max_retries=0)
                elif isinstance(self._client, openai.OpenAI):
                    self._client = self._client.with_options(max_retries=0)
                self._client_ready = True
        return self._client

    def close(self) -> None:
        """Release the HTTP connections (the client is rebuilt if used again)."""
        with self._client_lock:
            client, self._client, self._client_ready = self._client, None, False
        if client is not None and hasattr(client, "close"):
            client.close()

    # -- errors and retries -------------------------------------------------------------------

    def _classify(self, err: BaseException) -> _Failure | None:
        """What a failure means for us; None for exceptions that are not LLM failures (bugs)."""
        import openai

        if isinstance(err, (openai.APITimeoutError, TimeoutError)):
            return _Failure("timeout", True, err)
        if isinstance(err, (openai.APIConnectionError, ConnectionError)):
            cause = err.__cause__ if isinstance(err, openai.APIConnectionError) and err.__cause__ else err
            return _Failure("connection", True, err, message=_short(str(cause) or type(cause).__name__))
        if isinstance(err, openai.APIStatusError):
            status = err.status_code
            return _Failure("status", status in _RETRY_STATUS or status >= 500, err, status=status,
                            message=_server_message(err),
                            retry_after=_retry_after(getattr(err.response, "headers", None)))
        if isinstance(err, openai.APIError):  # e.g. an error event inside a stream
            return _Failure("api", False, err, message=_server_message(err))
        if isinstance(err, openai.OpenAIError):
            return _Failure("client", False, err, message=_short(str(err)))
        return None

    def _delay(self, attempt: int, failure: _Failure) -> float:
        """Seconds to wait before retry number ``attempt + 1``."""
        if failure.retry_after is not None:
            return min(failure.retry_after, RETRY_AFTER_CAP)
        base = self.backoff * 2 ** attempt
        return min(base * random.uniform(1.0, 1.5), RETRY_AFTER_CAP)

    def _give_up(self, f: _Failure, tries: int) -> LLMError:
        """The error to raise for ``f``: LLMUnavailable for retryable failures, else LLMError."""
        at = f"LLM at {self.url}"
        after = f"after {tries} {'try' if tries == 1 else 'tries'}"
        if f.kind == "timeout":
            return LLMUnavailable(f"{at} timed out {after} ({self.timeout:g} s per try, model {self.model})")
        if f.kind == "connection":
            return LLMUnavailable(f"{at} could not be reached {after}: {f.message}")
        if f.kind == "status" and f.retryable:
            what = "rate limit" if f.status == 429 else "server error" if f.status >= 500 else "timeout"
            return LLMUnavailable(f"{at} answered HTTP {f.status} ({what}) {after}: {f.message}", f.status)
        if f.status == 401:
            return LLMError(f"{at} rejected the API key (HTTP 401): check OPENAI_API_KEY. {f.message}", 401)
        if f.status == 403:
            return LLMError(f"{at} refused access (HTTP 403): {f.message}", 403)
        if f.status == 404:
            return LLMError(f"{at} answered HTTP 404 for model {self.model!r}: check LLM_MODEL and "
                            f"OPENAI_BASE_URL. {f.message}", 404)
        if f.kind == "status":
            return LLMError(f"{at} refused the request (HTTP {f.status}): {f.message}", f.status)
        if f.kind == "api":
            return LLMError(f"{at} reported an error: {f.message}")
        return LLMError(f"LLM client error ({self.url}): {f.message}")

    def _retry_or_raise(self, failure: _Failure, attempt: int) -> None:
        """Sleep before the next try, or raise when ``failure`` is final."""
        if not failure.retryable or attempt >= self.max_retries:
            raise self._give_up(failure, attempt + 1) from failure.error
        wait = self._delay(attempt, failure)
        log.warning("LLM at %s: %s (try %d of %d), retrying in %.2f s", self.url,
                    f"HTTP {failure.status}" if failure.status else failure.kind,
                    attempt + 1, self.max_retries + 1, wait)
        self._sleep(wait)

    # -- requests -----------------------------------------------------------------------------

    def _params(self, messages: list[dict], temperature: float | None, max_tokens: int | None) -> dict:
        if not messages:
            raise ValueError("messages is empty")
        params: dict[str, Any] = {"model": self.model, "messages": list(messages)}
        reasoning = _is_reasoning_model(self.model)
        if temperature is not None and not reasoning:
            params["temperature"] = temperature
        if max_tokens is not None:
            params["max_completion_tokens" if reasoning else "max_tokens"] = max_tokens
        return params

    def complete(self, messages: list[dict], *, temperature: float = 0.2,
                 max_tokens: int | None = None) -> Completion:
        """One chat completion, retried on transient failures."""
        params = self._params(messages, temperature, max_tokens)
        start = time.monotonic()
        attempt = 0
        while True:
            try:
                response = self._openai().chat.completions.create(**params, timeout=self.timeout)
                break
            except Exception as err:  # noqa: BLE001 - classified below, re-raised if not ours
                failure = self._classify(err)
                if failure is None:
                    raise
            self._retry_or_raise(failure, attempt)
            attempt += 1
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise LLMError(f"LLM at {self.url} returned no answer (no choices)")
        message = choices[0].message
        text = (getattr(message, "content", None) or getattr(message, "refusal", None) or "")
        return Completion(text=text, usage=Usage.from_api(getattr(response, "usage", None)),
                          model=getattr(response, "model", None) or self.model,
                          finish_reason=getattr(choices[0], "finish_reason", None),
                          elapsed=time.monotonic() - start)

    def stream(self, messages: list[dict], *, temperature: float = 0.2,
               max_tokens: int | None = None) -> Iterator[str | Completion]:
        """Yield text deltas as they arrive, then one :class:`Completion` with the whole text
        and the usage (``usage.known`` is False when the server sent none)."""
        params = self._params(messages, temperature, max_tokens)
        params["stream"] = True
        params["stream_options"] = {"include_usage": True}
        start = time.monotonic()
        attempt = 0
        while True:
            pieces: list[str] = []
            usage = model = finish = None
            try:
                chunks = self._openai().chat.completions.create(**params, timeout=self.timeout)
                try:
                    for chunk in chunks:
                        model = getattr(chunk, "model", None) or model
                        usage = getattr(chunk, "usage", None) or usage
                        for choice in getattr(chunk, "choices", None) or ():
                            finish = getattr(choice, "finish_reason", None) or finish
                            content = getattr(getattr(choice, "delta", None), "content", None)
                            if content:
                                pieces.append(content)
                                yield content
                finally:
                    if hasattr(chunks, "close"):
                        chunks.close()
                break
            except Exception as err:  # noqa: BLE001 - classified below, re-raised if not ours
                failure = self._classify(err)
                if failure is None:
                    raise
            if pieces:  # the reader already has part of the answer: do not replay it
                sent = sum(map(len, pieces))
                cls = LLMUnavailable if failure.retryable else LLMError
                raise cls(f"LLM at {self.url} broke off the answer after {sent} characters: "
                          f"{failure.message or failure.kind}", failure.status) from failure.error
            if (failure.status in (400, 422) and "stream_options" in params
                    and "stream_options" in failure.message):
                # An older OpenAI-compatible server that does not know stream_options.
                log.info("LLM at %s does not accept stream_options; streaming without usage", self.url)
                del params["stream_options"]
                continue
            self._retry_or_raise(failure, attempt)
            attempt += 1
        yield Completion(text="".join(pieces), usage=Usage.from_api(usage), model=model or self.model,
                         finish_reason=finish, elapsed=time.monotonic() - start)

    def ping(self) -> None:
        """A cheap reachability check (``GET /models``, one try, at most 5 s); raises
        :class:`LLMUnavailable` saying why the LLM cannot be used."""
        if not (self._api_key or self.base_url):
            raise LLMUnavailable("no LLM configured: set OPENAI_API_KEY or OPENAI_BASE_URL")
        try:
            client = self._openai()
            if hasattr(client, "models"):
                client.models.list(timeout=min(self.timeout, 5.0))
        except Exception as err:  # noqa: BLE001
            failure = self._classify(err)
            if failure is None:
                raise
            if failure.status in (404, 405):
                return  # reachable; this server simply has no model listing
            error = self._give_up(failure, 1)
            raise LLMUnavailable(str(error), failure.status) from err


def llm_from_settings(settings) -> LLMClient | None:
    """The configured LLM, or None (extractive answers) when neither ``OPENAI_API_KEY`` nor
    ``OPENAI_BASE_URL`` is set. A base URL alone is fine: local servers get a dummy key."""
    api_key = (settings.openai_api_key or "").strip()
    base_url = (settings.openai_base_url or "").strip()
    if not api_key and not base_url:
        return None
    return LLMClient(api_key=api_key or DUMMY_API_KEY, base_url=base_url or None, model=settings.llm_model,
                     timeout=settings.llm_timeout, max_retries=settings.llm_max_retries)
