"""Issue 9 over HTTP (Flask's test client, a real SQLite log): CORS for ALLOWED_ORIGINS, admin
access (bearer token, login form, loopback-only without a token), per-client rate limits with
TRUSTED_PROXIES, and no client address in the log. No index is needed: the admin pages,
``/feedback`` and ``/health`` work without one."""

from __future__ import annotations

import logging
import re

import pytest

from assistant.config import Settings
from assistant.conversation_log import Exchange
from assistant.errors import ConfigError
from assistant.web import create_app

BLOG = "https://blog.example.org"
TOKEN = "a-long-random-admin-token-0123456789"
ADMIN_PATHS = ("/dashboard", "/dashboard/data", "/metrics")


def make_app(tmp_path, **settings):
    base = dict(data_dir=str(tmp_path / "var"), embedded_path=str(tmp_path / "none.sqlite"),
                rate_limit="off")
    base.update(settings)
    app = create_app({"SETTINGS": Settings(**base), "TESTING": True})
    yield_app = app
    return yield_app


@pytest.fixture
def apps(tmp_path):
    made = []

    def build(**settings):
        app = make_app(tmp_path, **settings)
        made.append(app)
        return app

    yield build
    for app in made:
        app.extensions["assistant"].close()


def logged_exchange(app) -> str:
    exchange = Exchange(question="Qu'est-ce qu'un VCO ?", answer="Un oscillateur [1].")
    assert app.extensions["assistant"].store.save_exchange(exchange)
    return exchange.id


# -- CORS ------------------------------------------------------------------------------------


def preflight(client, origin, path="/question"):
    return client.options(path, headers={"Origin": origin,
                                         "Access-Control-Request-Method": "POST",
                                         "Access-Control-Request-Headers": "content-type"})


def cors_headers(response) -> dict:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def test_preflight_from_an_allowed_origin_echoes_it(apps):
    client = apps(allowed_origins=f"{BLOG}, https://www.blog.example.org/").test_client()
    for origin in (BLOG, "https://www.blog.example.org"):
        for path in ("/question", "/feedback"):
            r = preflight(client, origin, path)
            assert r.status_code == 200
            assert r.headers["Access-Control-Allow-Origin"] == origin
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
            assert r.headers["Access-Control-Allow-Headers"] == "Content-Type"
            assert int(r.headers["Access-Control-Max-Age"]) > 0
            assert "Origin" in r.headers["Vary"]
            assert "Access-Control-Allow-Credentials" not in r.headers


@pytest.mark.parametrize("origin", ["https://evil.example", "http://blog.example.org",
                                    "https://blog.example.org:8443", "null"])
def test_no_cors_header_for_any_other_origin(apps, origin):
    client = apps(allowed_origins=BLOG).test_client()
    assert cors_headers(preflight(client, origin)) == {}
    r = client.post("/feedback", json={"feedback": 1, "exchange_id": "0" * 32},
                    headers={"Origin": origin})
    assert r.status_code == 404 and cors_headers(r) == {}


def test_actual_responses_carry_the_origin_and_admin_ones_never(apps):
    app = apps(allowed_origins=BLOG)
    client = app.test_client()
    exchange_id = logged_exchange(app)
    r = client.post("/feedback", json={"feedback": 1, "exchange_id": exchange_id},
                    headers={"Origin": BLOG})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == BLOG
    assert "Retry-After" in r.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Methods" not in r.headers  # only on preflights
    for path in ADMIN_PATHS:  # loopback: open, but never cross-origin
        r = client.get(path, headers={"Origin": BLOG})
        assert r.status_code == 200 and cors_headers(r) == {}, path


def test_without_allowed_origins_nobody_gets_cors(apps):
    client = apps().test_client()
    assert cors_headers(preflight(client, BLOG)) == {}


@pytest.mark.parametrize("value", ["https://blog.example.org/path", "*", "blog.example.org",
                                   "https://*.example.org", "ftp://x.org"])
def test_a_malformed_origin_is_refused_at_start(tmp_path, value):
    with pytest.raises(ConfigError, match="ALLOWED_ORIGINS"):
        make_app(tmp_path, allowed_origins=value)


# -- admin access ----------------------------------------------------------------------------


def test_admin_pages_need_the_token(apps):
    app = apps(admin_token=TOKEN, host="0.0.0.0")
    assert "ADMIN_TOKEN required" in start_lines(app)
    assert "SECRET_KEY is not set" in start_lines(app)
    client = app.test_client()
    for path in ADMIN_PATHS:
        r = client.get(path)
        assert r.status_code == 401, path
        assert "error" in r.get_json() and r.headers["WWW-Authenticate"].startswith("Bearer")
        r = client.get(path, headers={"Authorization": "Bearer wrong-token"})
        assert r.status_code == 401 and r.get_json()["error"] == "wrong admin token"
        r = client.get(path, headers={"Authorization": f"Bearer {TOKEN}x"})
        assert r.status_code == 401
        r = client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, path
        assert r.headers["Cache-Control"] == "no-store"
    assert "arsonor_http_requests_total" in client.get(
        "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).get_data(as_text=True)


def test_public_endpoints_stay_public_with_a_token(apps):
    app = apps(admin_token=TOKEN, host="0.0.0.0")
    client = app.test_client()
    assert client.get("/").status_code == 200
    assert client.get("/health").status_code in (200, 503)  # no index here: 503, but answered
    assert client.get("/openapi.json").status_code == 200
    exchange_id = logged_exchange(app)
    r = client.post("/feedback", json={"feedback": -1, "exchange_id": exchange_id})
    assert r.status_code == 200


def test_a_person_is_sent_to_the_login_form_and_back(apps):
    client = apps(admin_token=TOKEN, host="0.0.0.0").test_client()
    r = client.get("/dashboard", headers={"Accept": "text/html"})
    assert r.status_code == 302 and r.headers["Location"] == "/login?next=/dashboard"

    form = client.get("/login?next=/dashboard")
    assert form.status_code == 200
    html = form.get_data(as_text=True)
    assert "<script>" not in html.replace('<script src=', '')  # no inline script (CSP)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)

    r = client.post("/login", data={"token": TOKEN, "next": "/dashboard"})  # no CSRF token
    assert r.status_code == 400
    r = client.post("/login", data={"token": "nope", "csrf_token": csrf, "next": "/dashboard"})
    assert r.status_code == 401 and "Jeton incorrect" in r.get_data(as_text=True)
    assert client.get("/dashboard/data").status_code == 401

    r = client.post("/login", data={"token": TOKEN, "csrf_token": csrf, "next": "/dashboard"})
    assert r.status_code == 303 and r.headers["Location"] == "/dashboard"
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("arsonor_admin=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    assert client.get("/dashboard").status_code == 200
    assert client.get("/dashboard/data").status_code == 200
    assert client.get("/metrics").status_code == 200

    # Logging out needs the session's (new) CSRF token too.
    assert client.post("/logout").status_code == 400
    assert client.get("/dashboard/data").status_code == 200
    html = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert client.get("/dashboard/data").status_code == 401


def login(client, token=TOKEN, next_path="/dashboard", base_url="http://localhost"):
    html = client.get("/login", base_url=base_url).get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    return client.post("/login", data={"token": token, "csrf_token": csrf, "next": next_path},
                       base_url=base_url)


def test_the_cookie_is_secure_over_https(apps):
    client = apps(admin_token=TOKEN, host="0.0.0.0").test_client()
    r = login(client, base_url="https://localhost")
    assert r.status_code == 303 and "Secure" in r.headers["Set-Cookie"]


def test_https_behind_a_trusted_proxy_only(apps):
    for proxies, secure in ((0, False), (1, True)):
        client = apps(admin_token=TOKEN, host="0.0.0.0", trusted_proxies=proxies).test_client()
        client.environ_base["HTTP_X_FORWARDED_PROTO"] = "https"
        assert ("Secure" in login(client).headers["Set-Cookie"]) is secure


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example",
                                    "javascript:alert(1)"])
def test_login_never_redirects_off_site(apps, target):
    client = apps(admin_token=TOKEN, host="0.0.0.0").test_client()
    r = login(client, next_path=target)
    assert r.status_code == 303 and r.headers["Location"] == "/dashboard"


def test_a_changed_token_ends_the_sessions(apps):
    client = apps(admin_token=TOKEN, secret_key="s" * 32, host="0.0.0.0").test_client()
    assert login(client).status_code == 303
    cookie = client.get_cookie("arsonor_admin").value
    assert client.get("/dashboard/data").status_code == 200
    other = apps(admin_token=TOKEN + "-new", secret_key="s" * 32, host="0.0.0.0").test_client()
    other.set_cookie("arsonor_admin", cookie)
    assert other.get("/dashboard/data").status_code == 401
    same = apps(admin_token=TOKEN, secret_key="s" * 32, host="0.0.0.0").test_client()
    same.set_cookie("arsonor_admin", cookie)
    assert same.get("/dashboard/data").status_code == 200  # SECRET_KEY: survives a restart


def test_a_forged_cookie_is_refused(apps):
    client = apps(admin_token=TOKEN, secret_key="s" * 32, host="0.0.0.0").test_client()
    client.set_cookie("arsonor_admin", '{"admin": "x"}')
    assert client.get("/dashboard/data").status_code == 401


def start_lines(app) -> str:
    return "\n".join(line for _, line in app.extensions["start_lines"])


def test_without_a_token_admin_pages_are_open_on_loopback(apps):
    app = apps(host="127.0.0.1")
    client = app.test_client()
    assert "open without a token because the server listens on loopback" in start_lines(app)
    for path in ADMIN_PATHS:
        assert client.get(path).status_code == 200, path
    # HOST says loopback, yet a visitor from elsewhere (another WSGI server on 0.0.0.0, or a
    # trusted proxy's X-Forwarded-For) is refused all the same.
    remote = app.test_client()
    remote.environ_base["REMOTE_ADDR"] = "192.0.2.44"
    for path in ADMIN_PATHS:
        r = remote.get(path)
        assert r.status_code == 403 and "this machine only" in r.get_json()["error"], path
    assert remote.get("/").status_code == 200


def test_without_a_token_admin_pages_are_refused_elsewhere(apps):
    app = apps(host="0.0.0.0")
    client = app.test_client()
    (level, line), = [(lv, t) for lv, t in app.extensions["start_lines"] if "admin" in t]
    assert level == logging.WARNING and "REFUSED" in line and "set ADMIN_TOKEN" in line
    for path in ADMIN_PATHS:
        r = client.get(path)
        assert r.status_code == 403 and "ADMIN_TOKEN" in r.get_json()["error"], path
        assert client.get(path, headers={"Authorization": "Bearer anything"}).status_code == 403
    page = client.get("/dashboard", headers={"Accept": "text/html"})
    assert page.status_code == 403 and "ADMIN_TOKEN" in page.get_data(as_text=True)
    assert client.post("/login", data={"token": ""}).status_code == 403
    assert client.get("/").status_code == 200


# -- rate limits -----------------------------------------------------------------------------


def test_a_burst_from_one_client_gets_429_with_retry_after(apps):
    app = apps(rate_limit="5/minute;100/day")
    exchange_id = logged_exchange(app)
    client = app.test_client()
    statuses = [client.post("/feedback", json={"feedback": 1, "exchange_id": exchange_id})
                for _ in range(8)]
    assert [r.status_code for r in statuses] == [200] * 5 + [429] * 3
    refused = statuses[-1]
    assert refused.is_json and "too many requests" in refused.get_json()["error"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "Retry-After" not in statuses[0].headers
    # Nothing else fails: other endpoints, and another client.
    assert client.get("/health").status_code in (200, 503)
    assert client.get("/metrics").status_code == 200
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "192.0.2.10"
    r = other.post("/feedback", json={"feedback": 1, "exchange_id": exchange_id})
    assert r.status_code == 200
    # Preflights are not counted.
    assert preflight(client, BLOG, "/feedback").status_code == 200
    # /question is counted on its own (no index here: 503, but not 429).
    assert client.post("/question", json={"question": "VCO ?"}).status_code == 503


def test_forwarded_for_is_ignored_unless_proxies_are_trusted(apps):
    for proxies, expected in ((0, [200, 200, 429, 429]), (1, [200, 200, 200, 200])):
        app = apps(rate_limit="2/minute", trusted_proxies=proxies)
        exchange_id = logged_exchange(app)
        client = app.test_client()
        got = [client.post("/feedback", json={"feedback": 1, "exchange_id": exchange_id},
                           headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code
               for n in range(4)]
        assert got == expected, proxies


def test_rate_limit_off_and_bad_values(apps, tmp_path):
    app = apps(rate_limit="off")
    exchange_id = logged_exchange(app)
    client = app.test_client()
    assert {client.post("/feedback", json={"feedback": 1, "exchange_id": exchange_id}).status_code
            for _ in range(30)} == {200}
    for bad in ("ten per minute", "10/fortnight"):
        with pytest.raises(ConfigError, match="RATE_LIMIT"):
            make_app(tmp_path, rate_limit=bad)
    with pytest.raises(ConfigError, match="RATE_LIMIT_STORAGE_URL"):
        make_app(tmp_path, rate_limit_storage_url="mysql://x")


def test_login_attempts_are_limited_even_with_rate_limit_off(apps):
    client = apps(admin_token=TOKEN, host="0.0.0.0", rate_limit="off").test_client()
    statuses = [login(client, token="guess").status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]


# -- privacy ---------------------------------------------------------------------------------


def test_no_client_address_reaches_the_log(apps, tmp_path, caplog):
    address, forwarded = "203.0.113.77", "198.51.100.99"
    app = apps(trusted_proxies=1)
    exchange_id = logged_exchange(app)
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    with caplog.at_level(logging.DEBUG):
        assert client.post("/feedback", json={"feedback": 1, "exchange_id": exchange_id,
                                              "comment": "merci"},
                           headers={"X-Forwarded-For": forwarded}).status_code == 200
        client.post("/question", json={"question": "Qu'est-ce qu'un VCO ?"},
                    headers={"X-Forwarded-For": forwarded})
    app.extensions["assistant"].close()
    stored = b"".join(p.read_bytes() for p in (tmp_path / "var").rglob("*") if p.is_file())
    assert b"merci" in stored  # the feedback is there...
    for ip in (address, forwarded):
        assert ip.encode() not in stored  # ...the reader's address is not
        assert ip not in caplog.text


def test_a_burst_of_questions_is_limited_and_the_answers_are_whole(demo_index_settings, tmp_path):
    settings = demo_index_settings.replace(data_dir=str(tmp_path / "var"), rate_limit="3/minute",
                                           admin_token=TOKEN, allowed_origins=BLOG)
    app = create_app({"SETTINGS": settings, "TESTING": True})
    try:
        client = app.test_client()
        replies = [client.post("/question", json={"question": "Qu'est-ce qu'un VCO ?"},
                               headers={"Origin": BLOG}) for _ in range(5)]
        assert [r.status_code for r in replies] == [200, 200, 200, 429, 429]
        for r in replies[:3]:
            assert r.get_json()["answer"] and r.get_json()["sources"]
        refused = replies[-1]
        assert int(refused.headers["Retry-After"]) >= 1 and "error" in refused.get_json()
        assert refused.headers["Access-Control-Allow-Origin"] == BLOG  # the widget can read it
        assert len(app.extensions["assistant"].store.recent(10)) == 3  # refused: not answered
        admin = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/metrics", headers=admin).status_code == 200
    finally:
        app.extensions["assistant"].close()
