"""A real, local OpenAI-compatible HTTP server (no network): what the tests and the API benchmark
answer LLM calls with (no mocks of the client).

    with OpenAIStub() as stub:
        stub.script(status(429, retry_after=0.2), "ok")
        client = OpenAI(base_url=stub.url, api_key="sk-test")
        ...
        stub.requests          # the JSON bodies received on /v1/chat/completions, in order

Each ``POST /v1/chat/completions`` pops the next scripted behaviour (``stub.default``, "ok",
when the script is empty). A behaviour is one of:

* ``"ok"`` / ``ok(text)``: a ``chat.completion``, or an SSE stream when the request asked
  for ``"stream": true`` (a final usage chunk only when ``stream_options.include_usage``);
* ``"stream"`` / ``stream(text, usage=True)``: the same, streamed whatever the request says;
  ``usage=False`` never sends usage (servers that ignore ``include_usage``);
* ``stream_break(text, after=2)``: streams ``after`` deltas, then drops the connection;
* ``429`` / ``500`` / ``503`` / ``status(code, retry_after=None, message=None)``: an OpenAI
  style error body with that status (and a ``Retry-After`` header when given);
* ``delay(seconds, then="ok")``: waits, then behaves like ``then`` (timeouts, slow LLMs);
* a callable ``fn(request_json) -> str``, or ``reply(fn)``: answers with the text it returns;
  :func:`rerank_reply` is one that answers the LLM reranker's prompt.

``stub.calls`` records every request (method, path, lower-cased headers, JSON body, arrival
time); ``stub.request_times`` the arrival times of the chat completion requests.

``stub.reply`` (a string or such a callable) is the text of plain "ok" answers.
``stub.api_key``, when set, makes every request without ``Authorization: Bearer <key>`` a 401.
``GET /v1/models`` lists ``stub.models``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

DEFAULT_REPLY = "Réponse de test [1]."


# -- behaviours ---------------------------------------------------------------------------

def ok(text: str | Callable[[dict], str] | None = None) -> dict:
    return {"kind": "ok", "text": text}


def reply(fn: Callable[[dict], str]) -> dict:
    return {"kind": "ok", "text": fn}


def stream(text: str | Callable[[dict], str] | None = None, *, usage: bool = True) -> dict:
    return {"kind": "stream", "text": text, "usage": usage}


def stream_break(text: str | Callable[[dict], str] | None = None, *, after: int = 2) -> dict:
    return {"kind": "stream_break", "text": text, "after": after}


_PASSAGE = re.compile(r'<passage number="(\d+)">\n(.*?)\n</passage>', re.S)


def rerank_reply(order: Callable[[list[str]], list] | None = None) -> Callable[[dict], str]:
    """A reply function for the LLM reranker's prompt (``assistant/llm_reranker.py``): reads
    the fenced passages of the last message and answers ``{"ranking": order(texts)}``; the
    default order is the passages reversed (the most visible change of the fused order)."""

    def answer(body: dict) -> str:
        content = str(((body.get("messages") or [{}])[-1]).get("content") or "")
        texts = [text for _, text in _PASSAGE.findall(content)]
        ranking = order(texts) if order else list(range(len(texts), 0, -1))
        return json.dumps({"ranking": ranking})

    return answer


def status(code: int, *, retry_after: float | str | None = None, message: str | None = None) -> dict:
    return {"kind": "status", "code": int(code), "retry_after": retry_after, "message": message}


def delay(seconds: float, then: Any = "ok") -> dict:
    return {"kind": "delay", "seconds": float(seconds), "then": then}


def _normalise(behaviour: Any) -> dict:
    if isinstance(behaviour, dict):
        return behaviour
    if callable(behaviour):
        return reply(behaviour)
    if isinstance(behaviour, int):
        return status(behaviour)
    if isinstance(behaviour, str):
        if behaviour == "ok":
            return ok()
        if behaviour == "stream":
            return stream()
        if behaviour.isdigit():
            return status(int(behaviour))
    if isinstance(behaviour, tuple) and behaviour and behaviour[0] == "delay":
        return delay(*behaviour[1:])
    raise ValueError(f"unknown stub behaviour: {behaviour!r}")


_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                403: "permission_denied", 404: "not_found", 429: "rate_limit_exceeded"}


def _tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


class OpenAIStub:
    """A threaded HTTP server on 127.0.0.1 speaking enough of the OpenAI API for our client."""

    def __init__(self, *, model: str = "gpt-4o-mini", reply: str | Callable[[dict], str] = DEFAULT_REPLY,
                 api_key: str | None = None, default: Any = "ok"):
        self.model = model
        self.reply = reply
        self.api_key = api_key
        self.default = default
        self.models = [model]
        self.requests: list[dict] = []  # JSON bodies of chat completion requests
        self.calls: list[dict] = []  # every request: method, path, headers, body, time
        self._script: deque = deque()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------------------

    def script(self, *behaviours: Any) -> "OpenAIStub":
        """Queue behaviours for the next chat completion requests, in order."""
        with self._lock:
            self._script.extend(_normalise(b) for b in behaviours)
        return self

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def request_times(self) -> list[float]:
        """``time.monotonic()`` at which each chat completion request arrived."""
        return [c["time"] for c in self.calls if c["path"].endswith("/chat/completions")]

    def start(self) -> "OpenAIStub":
        stub = self

        class Handler(_Handler):
            owner = stub

        self._closing.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="openai-stub", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()  # wakes delayed handlers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "OpenAIStub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- used by the handler -----------------------------------------------------------------

    def _next(self) -> dict:
        with self._lock:
            return self._script.popleft() if self._script else _normalise(self.default)

    def _text_for(self, behaviour: dict, body: dict) -> str:
        text = behaviour.get("text")
        if text is None:
            text = self.reply
        return str(text(body)) if callable(text) else str(text)


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAIStub
    protocol_version = "HTTP/1.0"  # one request per connection; the body ends with the connection

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    # -- plumbing ------------------------------------------------------------------------------

    def _record(self, body: Any) -> None:
        with self.owner._lock:
            self.owner.calls.append({"method": self.command, "path": self.path, "time": time.monotonic(),
                                     "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
            if self.command == "POST" and self.path.rstrip("/").endswith("/chat/completions"):
                self.owner.requests.append(body)

    def _send_json(self, code: int, payload: Any, headers: dict | None = None) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, str(v))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): nothing to do

    def _error(self, code: int, message: str, headers: dict | None = None) -> None:
        self._send_json(code, {"error": {"message": message, "type": _ERROR_TYPES.get(code, "server_error"),
                                         "param": None, "code": None}}, headers)

    def _authorised(self) -> bool:
        key = self.owner.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._error(401, "Incorrect API key provided.")
        return False

    # -- routes ----------------------------------------------------------------------------------

    def do_GET(self):  # noqa: N802
        self._record(None)
        if not self._authorised():
            return
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 1700000000, "owned_by": "stub"}
                for m in self.owner.models]})
        else:
            self._error(404, f"no route GET {self.path}")

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._record(raw.decode("utf-8", "replace"))
            self._error(400, "body is not JSON")
            return
        self._record(body)
        if not self._authorised():
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, f"no route POST {self.path}")
            return
        self._behave(self.owner._next(), body)

    def _behave(self, behaviour: dict, body: dict) -> None:
        kind = behaviour["kind"]
        if kind == "delay":
            if self.owner._closing.wait(behaviour["seconds"]):
                return  # the stub is closing
            self._behave(_normalise(behaviour["then"]), body)
        elif kind == "status":
            code = behaviour["code"]
            headers = {}
            if behaviour.get("retry_after") is not None:
                headers["Retry-After"] = behaviour["retry_after"]
            self._error(code, behaviour.get("message") or f"stub error {code}", headers)
        elif kind == "ok" and not body.get("stream"):
            self._complete(self.owner._text_for(behaviour, body), body)
        elif kind in ("ok", "stream", "stream_break"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(self.owner._text_for(behaviour, body), body,
                         usage=include_usage and behaviour.get("usage", True),
                         break_after=behaviour.get("after") if kind == "stream_break" else None)
        else:
            raise ValueError(kind)

    def _usage(self, body: dict, text: str) -> dict:
        prompt = "".join(str(m.get("content") or "") for m in body.get("messages") or [])
        p, c = _tokens(prompt), _tokens(text)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def _complete(self, text: str, body: dict) -> None:
        self._send_json(200, {
            "id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or self.owner.model,
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": text}}],
            "usage": self._usage(body, text),
        })

    def _stream(self, text: str, body: dict, *, usage: bool, break_after: int | None) -> None:
        model = body.get("model") or self.owner.model
        base = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model}
        pieces = re.findall(r"\s*\S+", text) or [""]
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            if break_after is not None:
                # Announce more bytes than will come, so the early close is an error, not an end.
                self.send_header("Content-Length", "1000000")
            self.end_headers()

            def event(payload: Any) -> None:
                data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
                self.wfile.write(f"data: {data}\n\n".encode("utf-8"))
                self.wfile.flush()

            event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                        "finish_reason": None}]})
            for i, piece in enumerate(pieces):
                if break_after is not None and i >= break_after:
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(2)  # drop the connection mid-stream
                    return
                event({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
            event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if usage:
                event({**base, "choices": [], "usage": self._usage(body, text)})
            event("[DONE]")
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass
