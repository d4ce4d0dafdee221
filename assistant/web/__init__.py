"""The web app: the JSON API (``assistant.web.api``) and the pages (``assistant.web.pages``).

    app = create_app()                                   # settings from the environment / .env
    app = create_app({"SETTINGS": settings})             # explicit settings (tests)
    app = create_app({"data_dir": "/tmp/x", "TESTING": True})   # lower-case: Settings fields

Nothing heavy happens here: the retriever (index + embedder), the LLM client, the conversation
log and the :class:`~assistant.answering.rag.Assistant` are built on first use by
:class:`assistant.services.Services`, kept in ``app.extensions["assistant"]``.
"""

from __future__ import annotations

from dataclasses import fields

from flask import Flask

from assistant.config import Settings, load_settings
from assistant.errors import ConfigError
from assistant.services import Services

MAX_BODY_BYTES = 64 * 1024


def _settings_from(test_config: dict) -> Settings:
    settings = test_config.pop("SETTINGS", None)
    names = {f.name for f in fields(Settings)}
    overrides = {k: test_config.pop(k) for k in list(test_config) if k.islower()}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"create_app: unknown setting(s) {', '.join(unknown)}")
    if settings is None:
        return load_settings(**overrides)
    if not isinstance(settings, Settings):
        raise ConfigError("create_app: SETTINGS must be an assistant.config.Settings")
    return settings.replace(**overrides) if overrides else settings


def create_app(test_config: dict | None = None) -> Flask:
    """The Flask app (flaskr-style factory). ``test_config``: ``SETTINGS`` (a Settings),
    lower-case keys overriding Settings fields, upper-case keys going to ``app.config``."""
    from assistant.web import admin, api, cors, limits, logs
    from assistant.web.metrics import Metrics
    from assistant.web import pages, security

    test_config = dict(test_config or {})
    settings = _settings_from(test_config)

    app = Flask(__name__, static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES, SETTINGS=settings)
    app.config.update(test_config)
    app.json.sort_keys = False
    app.json.ensure_ascii = False

    logs.configure_logging(settings.log_json)
    metrics = Metrics()
    metrics.init_app(app)
    logs.init_app(app)
    services = app.extensions["assistant"] = Services(settings, observer=metrics)
    metrics.track_spending(settings.llm_daily_budget_usd, lambda: services.spending_cap)

    limits.trust_proxies(app, settings.trusted_proxies)
    origins = security.checked_origins(settings.allowed_origin_list)
    cors.init_app(app, origins)
    app.register_blueprint(api.bp)
    pages.init_app(app)
    admin.init_app(app, admin_token=settings.admin_token, secret_key=settings.secret_key,
                   host=settings.host)
    security.init_app(app, origins)
    api.register_error_handlers(app)
    limits.init_app(app, rate_limit=settings.rate_limit,
                    storage_url=settings.rate_limit_storage_url)
    return app
