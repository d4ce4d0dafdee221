"""CORS for the public API: the sites in ``ALLOWED_ORIGINS`` may call it from a browser.

Only the reader-facing endpoints (:data:`CORS_PATHS`) ever carry CORS headers, and only for an
allowed origin, echoed exactly (never ``*``, never credentials: the API uses no cookies). A
preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from an allowed origin gets the
methods, ``Content-Type`` as the one allowed request header and a max-age; from any other origin
it gets Flask's plain ``OPTIONS`` answer with no CORS header, so the browser refuses the call.
The admin endpoints (dashboard data, metrics) are never cross-origin.
"""

from __future__ import annotations

from flask import Flask, request

CORS_PATHS = frozenset({"/question", "/feedback", "/health", "/openapi.json"})
ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Content-Type"
EXPOSED_HEADERS = "Retry-After, X-Request-ID"
MAX_AGE_SECONDS = 600  # browsers cap it anyway (Chromium: 2 h); 10 min keeps changes quick


def init_app(app: Flask, origins: tuple[str, ...]) -> None:
    """``origins``: checked by :func:`assistant.web.security.checked_origins`, lower case."""
    allowed = frozenset(origins)

    @app.after_request
    def _cors(response):
        if request.path not in CORS_PATHS:
            return response
        response.vary.add("Origin")  # the answer differs by origin: caches must keep them apart
        origin = request.headers.get("Origin", "")
        if origin.lower() not in allowed:
            return response
        response.headers["Access-Control-Allow-Origin"] = origin
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Access-Control-Max-Age"] = str(MAX_AGE_SECONDS)
        else:
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        return response
