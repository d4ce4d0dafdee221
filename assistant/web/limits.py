"""Per-client rate limits (Flask-Limiter) and the client address behind reverse proxies.

``RATE_LIMIT`` (e.g. ``10/minute;200/day``, or ``off``) applies to ``POST /question`` and
``POST /feedback``, each counted on its own, per client address; ``POST /login`` has a fixed,
stricter limit of its own (:data:`LOGIN_LIMIT`) so the admin token cannot be guessed by brute
force. A refused request gets ``429`` with ``{"error": ...}`` and ``Retry-After`` (seconds
until the oldest counted request leaves the window); other responses carry no rate-limit
header (Flask-Limiter's would put ``Retry-After`` on every answer).

Counters live in memory (``RATE_LIMIT_STORAGE_URL=memory://``, one process) or in Redis
(``redis://host:6379/0``) when several processes or hosts serve the app: then they share the
limits. The counters hold the client address for the length of the longest window only; the
conversation log never does.

The client address is the TCP peer's, unless ``TRUSTED_PROXIES`` (N) says that N reverse
proxies stand in front: then werkzeug's ProxyFix takes the address the N-th proxy from the
right saw in ``X-Forwarded-For`` (and the scheme from ``X-Forwarded-Proto``). With 0, the
default, those headers are ignored: anyone can write them.

Why Flask-Limiter: it is the maintained Flask extension for exactly this, built on ``limits``
(moving windows, memory / Redis / Memcached storage, atomic Redis scripts); writing our own
Redis windows would redo it, less tested.
"""

from __future__ import annotations

import logging
import math
import time

from flask import Flask, jsonify, request
from flask_limiter import Limiter, RateLimitExceeded
from limits import parse_many
from werkzeug.middleware.proxy_fix import ProxyFix

from assistant.errors import ConfigError


READER_ENDPOINTS = ("api.question", "api.feedback")
LOGIN_LIMIT = "5/minute;30/hour"
OFF = ("off", "none", "0", "false", "no", "")


def reader_limit(value: str) -> str | None:
    """``RATE_LIMIT`` checked: the limit string, or None when it is off.

    :raises ConfigError: not a list of ``N/period`` items separated by ``;``."""
    text = value.strip()
    if text.lower() in OFF:
        return None
    try:
        parse_many(text)
    except ValueError:
        raise ConfigError(f"RATE_LIMIT={value!r}: expected limits such as '10/minute;200/day' "
                          "(N per second/minute/hour/day, ';' between them) or 'off'") from None
    return text


def client_address() -> str:
    """The client's address (after ProxyFix when proxies are trusted)."""
    return request.remote_addr or "unknown"


def trust_proxies(app: Flask, count: int) -> None:
    """Believe ``X-Forwarded-For`` / ``-Proto`` as set by ``count`` reverse proxies."""
    if count < 0:
        raise ConfigError(f"TRUSTED_PROXIES={count}: expected 0 (no proxy) or more")
    if count:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count)


def init_app(app: Flask, *, rate_limit: str, storage_url: str) -> Limiter:
    """The app's limiter, its limits on the reader endpoints (and ``admin.login_submit``, when that
    endpoint exists) and the JSON 429 error. Call after the blueprints are registered."""
    limit = reader_limit(rate_limit)
    if not storage_url.startswith(("memory://", "redis://", "rediss://", "redis+unix://",
                                   "redis+sentinel://", "redis+cluster://")):
        raise ConfigError(f"RATE_LIMIT_STORAGE_URL={storage_url!r}: expected memory:// or "
                          "redis://host:6379/0")
    limiter = Limiter(client_address, app=app, storage_uri=storage_url,
                      strategy="moving-window", headers_enabled=False, key_prefix="arsonor",
                      # Redis down: serve rather than refuse everyone (the spending cap still
                      # bounds the LLM bill); each failure is logged.
                      swallow_errors=True)
    wrapped = [(endpoint, limit) for endpoint in READER_ENDPOINTS if limit] + [
        ("admin.login_submit", LOGIN_LIMIT)]
    for endpoint, value in wrapped:
        view = app.view_functions.get(endpoint)
        if view is not None:
            app.view_functions[endpoint] = limiter.limit(value, methods=["POST"])(view)

    @app.errorhandler(RateLimitExceeded)
    def too_many(e: RateLimitExceeded):
        current = limiter.current_limit
        wait = max(1, math.ceil(current.window.reset_time - time.time())) if current else 60
        response = jsonify(error=f"too many requests from this client (at most {e.description}): "
                                 f"try again in {wait} s")
        response.status_code = 429
        response.headers["Retry-After"] = str(wait)
        return response

    app.extensions.setdefault("start_lines", []).append((logging.INFO, (
        f"rate limits: {limit or 'off'} per client on /question and /feedback "
        f"(counters: {storage_url.split('://', 1)[0]})")))
    return limiter
