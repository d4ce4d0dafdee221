"""Security headers on every response: a Content-Security-Policy (scripts and styles only from
the app's own files, nothing inline), ``X-Content-Type-Options: nosniff``, a ``Referrer-Policy``
and framing rules.

No page may be framed (``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``, against
clickjacking) except the views marked with :func:`allow_framing` (the widget's ``/embed``
page), which the app itself and the sites in ``ALLOWED_ORIGINS`` may put in an iframe.

    security.init_app(app)        # in create_app, once
"""

from __future__ import annotations

import re

from flask import Flask, request

from assistant.errors import ConfigError

# An exact origin: scheme, host, optional port; nothing else may reach the CSP header.
ORIGIN = re.compile(r"https?://(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?")

# Every page's scripts, styles, images and API calls come from the app itself (no CDN): a
# script or style injected into a page would not run.
POLICY = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
)
REFERRER_POLICY = "strict-origin-when-cross-origin"


def allow_framing(view):
    """Mark a view as one the allowed origins may frame (put it under the route decorator)."""
    view.allow_framing = True
    return view


def checked_origins(origins: tuple[str, ...]) -> tuple[str, ...]:
    """``ALLOWED_ORIGINS`` checked once for the framing rules and CORS: each an exact origin as
    a browser sends it in ``Origin`` (lower case), never a wildcard, a path or header syntax.

    :raises ConfigError: naming the entries that are not origins."""
    bad = [o for o in origins if not ORIGIN.fullmatch(o)]
    if bad:
        raise ConfigError(f"ALLOWED_ORIGINS: {', '.join(map(repr, bad))} is not an origin "
                          f"(scheme://host[:port], e.g. https://www.arsonor.com)")
    return tuple(o.lower() for o in origins)


def init_app(app: Flask, origins: tuple[str, ...]) -> None:
    """``origins``: from :func:`checked_origins`."""
    closed = "; ".join(POLICY + ("frame-ancestors 'none'",))
    frameable = "; ".join(POLICY + ("frame-ancestors " + " ".join(("'self'",) + origins),))

    @app.after_request
    def security_headers(response):
        view = app.view_functions.get(request.endpoint) if request.endpoint else None
        if getattr(view, "allow_framing", False):
            response.headers["Content-Security-Policy"] = frameable
            response.headers.pop("X-Frame-Options", None)  # DENY/SAMEORIGIN would win over CSP
        else:
            response.headers["Content-Security-Policy"] = closed
            response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = REFERRER_POLICY
        return response
