"""Admin access: what shows conversations or operations (the dashboard and its data,
``/metrics``) is for the owner only.

* ``ADMIN_TOKEN`` set: a request is admitted with ``Authorization: Bearer <token>`` (machines:
  Prometheus, scripts) or with the signed admin session cookie that ``POST /login`` sets after
  the same token was typed into the login form (people). Tokens are compared in constant time.
* ``ADMIN_TOKEN`` empty: admitted only when the server listens on loopback (``HOST`` 127.0.0.1,
  ::1 or localhost: the laptop default) and the request comes from this machine (so a server
  started some other way than `assistant serve`, on another interface, still refuses the
  world), refused otherwise (403).

Refused: machines get JSON (401 with ``WWW-Authenticate: Bearer``, or 403), people asking for a
page (``GET`` accepting HTML) are sent to ``/login?next=<path>``, or get a page saying why when
there is no token to log in with.

The session cookie is Flask's (signed with ``SECRET_KEY``), HttpOnly, ``SameSite=Strict`` and
``Secure`` when the request came over https (``X-Forwarded-Proto`` counts only with
``TRUSTED_PROXIES``); it carries a fingerprint of the token, so changing ``ADMIN_TOKEN`` logs
everyone out. The login and logout forms carry a CSRF token kept in the session.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import logging
import secrets
from datetime import timedelta
from enum import Enum

from flask import (Blueprint, Flask, current_app, jsonify, redirect, render_template, request,
                   session, url_for)
from flask.sessions import SecureCookieSessionInterface

log = logging.getLogger(__name__)

bp = Blueprint("admin", __name__, template_folder="templates")

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
SESSION_COOKIE = "arsonor_admin"
SESSION_HOURS = 12
CSRF_FIELD = "csrf_token"


class Access(Enum):
    TOKEN = "token"  # ADMIN_TOKEN set: bearer token or login session
    LOOPBACK = "loopback"  # no token, listening on loopback: open
    REFUSED = "refused"  # no token, listening on a public interface: closed


def access_mode(admin_token: str, host: str) -> Access:
    if admin_token:
        return Access.TOKEN
    return Access.LOOPBACK if host.strip("[]").lower() in LOOPBACK_HOSTS else Access.REFUSED


def describe(mode: Access, host: str) -> str:
    """The start-up line about admin access."""
    if mode is Access.TOKEN:
        return "admin pages (/dashboard, /metrics): ADMIN_TOKEN required (bearer or /login)"
    if mode is Access.LOOPBACK:
        return (f"admin pages (/dashboard, /metrics): open without a token because the server "
                f"listens on loopback ({host}); set ADMIN_TOKEN before listening elsewhere")
    return (f"admin pages (/dashboard, /metrics): REFUSED to everyone: no ADMIN_TOKEN and the "
            f"server listens on {host or 'all interfaces'}; set ADMIN_TOKEN to open them")


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, ``Secure`` exactly when this request came over https."""

    def get_cookie_secure(self, app) -> bool:
        return request.is_secure


def _fingerprint(token: str) -> str:
    """What the session keeps of the token: enough to notice it changed, useless to guess it."""
    return hmac.new(current_app.secret_key.encode() if isinstance(current_app.secret_key, str)
                    else current_app.secret_key, token.encode(), hashlib.sha256).hexdigest()[:32]


def _token_matches(given: str) -> bool:
    expected = current_app.extensions["admin"]["token"]
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def is_admin() -> bool:
    """Whether this request may see admin pages."""
    state = current_app.extensions["admin"]
    if state["mode"] is Access.LOOPBACK:  # and the visitor is this machine, whatever HOST says
        return _from_loopback()
    if state["mode"] is Access.REFUSED:
        return False
    bearer = _bearer()
    if bearer is not None:
        return _token_matches(bearer)
    return session.get("admin") == _fingerprint(state["token"])


def _from_loopback() -> bool:
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def _wants_page() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return request.method == "GET" and best == "text/html"


def _refusal():
    mode = current_app.extensions["admin"]["mode"]
    if mode is not Access.TOKEN:
        message = ("the admin pages are disabled: this server listens on a public interface "
                   "and ADMIN_TOKEN is not set" if mode is Access.REFUSED else
                   "without ADMIN_TOKEN the admin pages are open to this machine only")
        if _wants_page():
            return render_template("login.html", refused=message, csrf_token=None), 403
        response = jsonify(error=message)
        response.status_code = 403
        return response
    if _wants_page() and _bearer() is None:
        return redirect(url_for("admin.login", next=request.full_path.rstrip("?")))
    response = jsonify(error="admin access needed: send 'Authorization: Bearer <ADMIN_TOKEN>'"
                       if _bearer() is None else "wrong admin token")
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Bearer realm="arsonor-admin"'
    return response


def admin_required(view):
    """Admit only the owner to ``view`` (see the module's rules)."""

    @functools.wraps(view)
    def guarded(*args, **kwargs):
        if not is_admin():
            return _refusal()
        response = current_app.make_response(view(*args, **kwargs))
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return guarded


# -- the login form --------------------------------------------------------------------------


def _csrf_token() -> str:
    token = session.get(CSRF_FIELD)
    if not token:
        token = session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return token


def _csrf_ok() -> bool:
    expected = session.get(CSRF_FIELD)
    given = request.form.get(CSRF_FIELD, "")
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def _safe_next(target: str | None) -> str:
    """Only a path of this site: never another host (``//evil``, ``https://…``, ``/\\evil``)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return url_for("pages.dashboard")
    return target


@bp.get("/login")
def login():
    state = current_app.extensions["admin"]
    if state["mode"] is not Access.TOKEN:
        if state["mode"] is Access.LOOPBACK:
            return redirect(_safe_next(request.args.get("next")))
        return _refusal()
    return render_template("login.html", csrf_token=_csrf_token(),
                           next=_safe_next(request.args.get("next")), error=None,
                           logged_in=is_admin())


@bp.post("/login")
def login_submit():
    state = current_app.extensions["admin"]
    if state["mode"] is not Access.TOKEN:
        return _refusal()
    target = _safe_next(request.form.get("next"))
    if not _csrf_ok():
        return render_template("login.html", csrf_token=_csrf_token(), next=target,
                               error="csrf", logged_in=False), 400
    if not _token_matches(request.form.get("token", "")):
        log.warning("admin login refused: wrong token")
        return render_template("login.html", csrf_token=_csrf_token(), next=target,
                               error="token", logged_in=False), 401
    session.clear()  # a new session after login: nothing from before it is carried over
    session.permanent = True
    session["admin"] = _fingerprint(state["token"])
    session[CSRF_FIELD] = secrets.token_urlsafe(32)
    log.info("admin logged in")
    return redirect(target, 303)


@bp.post("/logout")
def logout():
    if not _csrf_ok():
        return jsonify(error="missing or wrong CSRF token"), 400
    session.clear()
    return redirect(url_for("admin.login"), 303)


def init_app(app: Flask, *, admin_token: str, secret_key: str, host: str) -> Access:
    """Register the login pages and the session cookie; add how admin access works to the
    app's start-up lines (``app.extensions["start_lines"]``, logged by `assistant serve`)."""
    mode = access_mode(admin_token, host)
    app.extensions["admin"] = {"mode": mode, "token": admin_token}
    lines = app.extensions.setdefault("start_lines", [])  # what `assistant serve` logs
    level = logging.WARNING if mode is Access.REFUSED else logging.INFO
    lines.append((level, describe(mode, host)))
    if not secret_key and mode is Access.TOKEN:
        lines.append((logging.WARNING, "SECRET_KEY is not set: admin sessions are signed with a "
                      "random key and end when the server restarts (and are not shared between "
                      "workers)"))
    app.secret_key = secret_key or secrets.token_hex(32)
    app.session_interface = _SessionInterface()
    app.config.update(SESSION_COOKIE_NAME=SESSION_COOKIE, SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict",
                      PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS))
    app.register_blueprint(bp)
    return mode
