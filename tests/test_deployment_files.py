"""docker-compose.yaml, Dockerfile, .dockerignore, .env.example and the Grafana provisioning
agree with each other and with the app's settings.

No Docker engine is needed: ``docker-compose config`` validates and resolves the compose file
without one (Debian's ``docker-compose`` package; CI installs it). It is never skipped.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from assistant.config import Settings, load_settings, read_env_file

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
ENV_EXAMPLE = REPO / ".env.example"
DATASOURCE_FILE = REPO / "grafana" / "provisioning" / "datasources" / "postgres.yaml"
PROVIDER_FILE = REPO / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
INSTALL_HINT = ("docker-compose not found: install it with `apt-get install -y docker-compose` "
                "(Debian's package validates compose files without a Docker engine; CI installs it)")

SETTINGS_VARS = [f.name.upper() for f in fields(Settings) if f.name != "extra"]
# Settings that compose decides for the containers instead of passing the .env value through.
COMPOSE_FIXED = {"ENGINE": "elasticsearch", "ES_URL": "http://elasticsearch:9200"}

_VAR = re.compile(r"\$(?:\{(\w+)(?::?[-?+][^}]*)?\}|(\w+))")


def compose_vars(text: str) -> set[str]:
    """Names of the variables a compose (or Grafana provisioning) value interpolates."""
    text = text.replace("$$", "")  # an escaped dollar is a literal
    return {braced or bare for braced, bare in _VAR.findall(text)}


def walk_strings(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk_strings(key)
            yield from walk_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_strings(item)
    elif isinstance(node, str):
        yield node


def compose_command() -> list[str]:
    binary = shutil.which("docker-compose")
    if binary:
        return [binary]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=30).returncode == 0:
        return [docker, "compose"]
    pytest.fail(INSTALL_HINT, pytrace=False)


def run_compose(*args: str, env_file: Path) -> subprocess.CompletedProcess:
    """``docker-compose --env-file <env_file> <args>`` on the repository's compose file, with
    none of the caller's compose variables in the environment."""
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    command = [*compose_command(), "--project-directory", str(REPO), "-f", str(COMPOSE_FILE),
               "--env-file", str(env_file), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env,
                          cwd=REPO)


@pytest.fixture(scope="module")
def empty_env(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
    return path


@pytest.fixture(scope="module")
def resolved(empty_env) -> dict:
    """The compose file as docker-compose resolves it with no .env (defaults applied)."""
    result = run_compose("--profile", "kibana", "--profile", "redis", "config", env_file=empty_env)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


# -- Dockerfile parsing ----------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def final_stage(instructions):
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def exec_form(args: str) -> list[str]:
    import json

    return json.loads(args) if args.startswith("[") else shlex.split(args)


def url_port(text: str) -> int:
    match = re.search(r"https?://[^\s'\"]+", text)
    assert match, f"no URL in {text!r}"
    parsed = urlparse(match.group(0))
    assert parsed.path.rstrip("/") == "/health", f"health check on {parsed.path!r}, not /health"
    return parsed.port


def option(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))


# -- docker-compose validates it -------------------------------------------------------------


def test_compose_config_is_valid_without_env_file(empty_env):
    result = run_compose("config", "-q", env_file=empty_env)
    assert result.returncode == 0, f"docker-compose config -q failed:\n{result.stderr}"
    assert "is not set" not in result.stderr, result.stderr  # every variable has a default


def test_compose_config_is_valid_with_the_example_env_and_kibana():
    result = run_compose("--profile", "kibana", "config", "-q", env_file=ENV_EXAMPLE)
    assert result.returncode == 0, f"docker-compose config -q failed:\n{result.stderr}"


def test_compose_services(resolved):
    services = resolved["services"]
    assert set(services) == {"elasticsearch", "postgres", "grafana", "indexer", "app", "kibana",
                             "proxy", "log-purge", "redis"}

    es = services["elasticsearch"]
    assert es["environment"]["discovery.type"] == "single-node"
    assert es["environment"]["xpack.security.enabled"] == "false"
    assert es["environment"]["ES_JAVA_OPTS"] == "-Xms1g -Xmx1g"
    assert "curl" in " ".join(es["healthcheck"]["test"]) and "_cluster/health" in " ".join(
        es["healthcheck"]["test"])

    pg = services["postgres"]
    assert pg["image"] == "postgres:16"
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(pg["environment"])
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])

    grafana = services["grafana"]
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert {"GF_SECURITY_ADMIN_USER", "GF_SECURITY_ADMIN_PASSWORD"} <= set(grafana["environment"])
    assert grafana["depends_on"]["postgres"]["condition"] == "service_healthy"

    indexer = services["indexer"]
    assert indexer["command"] == ["assistant", "index", "--every", "6h"]
    assert indexer["restart"] == "unless-stopped"
    assert indexer["depends_on"]["elasticsearch"]["condition"] == "service_healthy"
    assert "healthcheck()" in " ".join(indexer["healthcheck"]["test"])

    app = services["app"]
    assert app["depends_on"] == {
        "elasticsearch": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
        "indexer": {"condition": "service_healthy"},
    }
    assert "healthcheck" in app
    for name in ("indexer", "app"):
        assert services[name]["environment"]["ENGINE"] == "elasticsearch"
        assert services[name]["environment"]["ES_URL"] == "http://elasticsearch:9200"
        assert "build" in services[name] or "image" in services[name]

    purge = services["log-purge"]
    assert purge["command"] == ["assistant", "db", "purge", "--every", "1d"]
    assert purge["restart"] == "unless-stopped"
    assert purge["environment"]["DATABASE_URL"] == app["environment"]["DATABASE_URL"]
    assert purge["depends_on"]["postgres"]["condition"] == "service_healthy"

    redis = services["redis"]
    assert redis["command"][:1] == ["redis-server"] and "--appendonly" in redis["command"]
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])

    assert services["kibana"]["profiles"] == ["kibana"]
    assert services["redis"]["profiles"] == ["redis"]
    proxy = services["proxy"]
    assert proxy["profiles"] == ["proxy"]
    assert proxy["depends_on"] == {"app": {"condition": "service_healthy"}}
    assert any(v.split(":")[0].endswith("deploy/nginx/assistant.conf")
               and v.split(":")[1] == "/etc/nginx/conf.d/default.conf" for v in proxy["volumes"])
    assert "app:5000" in (REPO / "deploy" / "nginx" / "assistant.conf").read_text()
    # docker stop's SIGKILL must come after the app's drain (SHUTDOWN_TIMEOUT).
    grace = app["stop_grace_period"]
    assert float(str(grace).rstrip("s")) > Settings().shutdown_timeout
    for name, service in services.items():
        if name not in ("kibana", "proxy", "redis"):
            assert not service.get("profiles"), f"{name} must start by default"


def test_compose_volumes_are_named_and_declared(compose):
    declared = set(compose.get("volumes") or {})
    used = set()
    for name in ("elasticsearch", "postgres", "grafana"):
        mounts = [v.split(":")[0] for v in compose["services"][name]["volumes"]]
        named = [m for m in mounts if not m.startswith((".", "/"))]
        assert named, f"{name} keeps its data in no named volume"
        used.update(named)
    for service in compose["services"].values():
        used.update(v.split(":")[0] for v in service.get("volumes", [])
                    if not v.startswith((".", "/")))
    assert used == declared, f"declared {sorted(declared)}, used {sorted(used)}"


def test_app_settings_in_compose_load_and_match_the_defaults(resolved, compose):
    """What the app and the indexer receive is valid for load_settings, and every
    ``${VAR:-default}`` of a setting repeats the Settings default (no silent drift)."""
    defaults = Settings()
    for name in ("app", "indexer", "log-purge"):
        env = {k: str(v) for k, v in resolved["services"][name]["environment"].items()}
        settings = load_settings(env=env, env_file=None)
        assert settings.engine == "elasticsearch"
        assert urlparse(settings.database_url).scheme == "postgresql"
        assert urlparse(settings.database_url).hostname == "postgres"
        raw = compose["services"][name]["environment"]
        for var, value in raw.items():
            if var not in SETTINGS_VARS or var in COMPOSE_FIXED or var == "DATABASE_URL":
                continue
            match = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", str(value))
            assert match and match.group(1) == var, \
                f"{name}: {var} should be ${{{var}:-<default>}}, got {value!r}"
            parsed = load_settings(env={var: match.group(2)}, env_file=None)
            assert getattr(parsed, var.lower()) == getattr(defaults, var.lower()), \
                f"{name}: the default of {var} differs from Settings"
        for var, value in COMPOSE_FIXED.items():
            assert raw[var] == value


# -- .env.example ----------------------------------------------------------------------------


def test_env_example_documents_every_compose_variable(compose, example):
    used = set()
    for text in walk_strings(compose):
        used |= compose_vars(text)
    assert used, "the compose file interpolates no variable?"
    missing = sorted(used - set(example))
    assert not missing, f"used in docker-compose.yaml, missing from .env.example: {missing}"


def test_env_example_documents_every_setting(example):
    missing = [name for name in SETTINGS_VARS if name not in example]
    assert not missing, f"Settings fields missing from .env.example: {missing}"
    extra_expected = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "POSTGRES_HOST",
                      "GF_SECURITY_ADMIN_USER", "GF_SECURITY_ADMIN_PASSWORD", "ES_JAVA_OPTS",
                      "APP_PORT", "GRAFANA_PORT", "KIBANA_PORT", "ES_PORT"}
    assert extra_expected <= set(example), sorted(extra_expected - set(example))


def test_env_example_values_are_the_settings_defaults(example):
    """Copying .env.example to .env changes nothing in the app's behaviour."""
    assert load_settings(env=example, env_file=None) == Settings()


def test_env_example_has_a_comment_above_each_variable():
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    seen = set()
    for number, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key = line.split("=", 1)[0].strip()
        assert key not in seen, f".env.example sets {key} twice"
        seen.add(key)
        previous = lines[number - 1].strip() if number else ""
        assert previous.startswith("#") and len(previous) > 2, \
            f".env.example: {key} has no comment on the line above"


# -- ports and health ------------------------------------------------------------------------


def test_ports_agree(dockerfile, resolved, compose):
    stage = final_stage(dockerfile)
    exposed = [args for keyword, args in stage if keyword == "EXPOSE"]
    assert len(exposed) == 1
    expose_port = int(exposed[0].split("/")[0])

    (cmd,) = [exec_form(args) for keyword, args in stage if keyword == "CMD"]
    assert cmd[:2] == ["assistant", "serve"]
    assert option(cmd, "--host") == "0.0.0.0"
    cmd_port = int(option(cmd, "--port"))

    (health,) = [args for keyword, args in stage if keyword == "HEALTHCHECK"]
    docker_health_port = url_port(health)

    app = resolved["services"]["app"]
    compose_cmd_port = int(option(app["command"], "--port"))
    compose_health_port = url_port(" ".join(app["healthcheck"]["test"]))
    targets = {int(p["target"]) for p in app["ports"]}
    raw_ports = compose["services"]["app"]["ports"]
    assert raw_ports == ["${APP_PORT:-5000}:5000"]

    ports = {"EXPOSE": expose_port, "CMD --port": cmd_port, "HEALTHCHECK": docker_health_port,
             "compose command --port": compose_cmd_port,
             "compose healthcheck": compose_health_port, "compose ports target": targets.pop()}
    assert len(set(ports.values())) == 1, f"the app's port differs: {ports}"
    assert not targets


def test_published_ports_use_documented_variables(compose, example):
    expected = {"app": "APP_PORT", "grafana": "GRAFANA_PORT", "kibana": "KIBANA_PORT",
                "elasticsearch": "ES_PORT", "proxy": "PROXY_PORT"}
    for service, var in expected.items():
        ports = compose["services"][service]["ports"]
        assert any(var in compose_vars(p) for p in ports), f"{service}: publish with ${{{var}}}"
        assert var in example


# -- Grafana provisioning against compose ----------------------------------------------------


def test_grafana_datasource_variables_are_passed_to_grafana(compose, resolved):
    config = yaml.safe_load(DATASOURCE_FILE.read_text(encoding="utf-8"))
    needed = set()
    for text in walk_strings(config):
        needed |= compose_vars(text)
    assert {"POSTGRES_HOST", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= needed
    environment = resolved["services"]["grafana"]["environment"]
    missing = sorted(needed - set(environment))
    assert not missing, f"the datasource reads {missing}, not set in the grafana service"
    # Grafana connects where the app writes.
    app_url = urlparse(resolved["services"]["app"]["environment"]["DATABASE_URL"])
    assert environment["POSTGRES_HOST"] == app_url.hostname
    assert int(environment.get("POSTGRES_PORT", 5432)) == (app_url.port or 5432)
    assert environment["POSTGRES_USER"] == app_url.username
    assert environment["POSTGRES_DB"] == app_url.path.lstrip("/")
    postgres = resolved["services"]["postgres"]["environment"]
    for var in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert environment[var] == postgres[var]


def test_grafana_mounts_match_the_provisioning(compose):
    provider = yaml.safe_load(PROVIDER_FILE.read_text(encoding="utf-8"))["providers"][0]
    mounts = {}
    for volume in compose["services"]["grafana"]["volumes"]:
        parts = volume.split(":")
        mounts[parts[0]] = (parts[1], parts[2:] == ["ro"])
    assert mounts["./grafana/dashboards"] == (provider["options"]["path"], True)
    assert mounts["./grafana/provisioning"] == ("/etc/grafana/provisioning", True)
    home = compose["services"]["grafana"]["environment"].get(
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        relative = Path(home).relative_to(provider["options"]["path"])
        assert (REPO / "grafana" / "dashboards" / relative).is_file(), home


# -- images ----------------------------------------------------------------------------------


def test_images_are_pinned_and_elastic_versions_match(resolved):
    images = {name: s["image"] for name, s in resolved["services"].items() if "image" in s}
    elastic = {}
    for name, image in images.items():
        if "build" in resolved["services"][name]:
            continue  # the app's own image
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: pin a version, got {image!r}"
        if repository.startswith("docker.elastic.co/"):
            elastic[name] = tag
    assert set(elastic) == {"elasticsearch", "kibana"}
    assert len(set(elastic.values())) == 1, f"Elasticsearch and Kibana versions differ: {elastic}"
    assert images["elasticsearch"] == "docker.elastic.co/elasticsearch/elasticsearch:8.15.3"


# -- Dockerfile --------------------------------------------------------------------------------


def test_dockerfile_runs_as_a_non_root_user(dockerfile):
    stage = final_stage(dockerfile)
    users = [args for keyword, args in stage if keyword == "USER"]
    assert users, "the final stage has no USER: it runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"USER {users[-1]}"
    created = " ".join(args for keyword, args in stage if keyword == "RUN")
    assert re.search(r"useradd\b[^;&]*--uid\s+10001\b", created)
    assert user in ("10001", "app")


def test_dockerfile_base_install_and_runtime(dockerfile):
    froms = [args for keyword, args in dockerfile if keyword == "FROM"]
    assert all(args.split()[0] == "python:3.11-slim" for args in froms), froms
    runs = [args for keyword, args in dockerfile if keyword == "RUN"]
    pip_runs = [r for r in runs if "pip install" in r]
    assert pip_runs and all("--no-cache-dir" in r for r in pip_runs)
    torch_runs = [r for r in pip_runs if "download.pytorch.org/whl/cpu" in r]
    assert len(torch_runs) == 1 and "torch" in torch_runs[0]
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_runs[0]
    assert any("-r requirements.txt" in r for r in pip_runs)
    assert any(re.search(r"pip install\b.*\s\.$", r) for r in pip_runs), "install the project"
    stage = final_stage(dockerfile)
    envs = " ".join(args for keyword, args in stage if keyword == "ENV")
    assert re.search(r"\bDATA_DIR=/app/var\b", envs)
    assert ("WORKDIR", "/app") in stage
    assert any(keyword == "RUN" and "chown" in args and "/app/var" in args
               for keyword, args in stage)


def test_dockerfile_copies_what_exists_and_is_not_ignored(dockerfile):
    """Every COPY source exists in the repository and .dockerignore lets it through."""
    ignored = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.startswith("#") and not line.startswith("!")]
    missing, excluded = [], []
    copied = set()
    for keyword, args in dockerfile:
        if keyword != "COPY" or "--from=" in args:
            continue
        sources = args.split()[:-1]
        for source in sources:
            name = source.rstrip("/")
            copied.add(name)
            if any(ch in name for ch in "*?["):
                continue  # an optional glob
            if not (REPO / name).exists():
                missing.append(name)
            if any(fnmatch.fnmatch(name, pattern.rstrip("/")) for pattern in ignored):
                excluded.append(name)
    assert {"assistant", "indexing", "data", "pyproject.toml", "requirements.txt"} <= copied
    assert not excluded, f".dockerignore excludes what the Dockerfile copies: {excluded}"
    assert not missing, f"the Dockerfile copies files that do not exist: {missing}"


def test_dockerignore_keeps_local_state_out():
    patterns = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    for required in (".venv", "var", ".git", ".env", ".pytest_cache"):
        assert required in patterns, f".dockerignore should exclude {required}"
    assert any("__pycache__" in p for p in patterns)
