"""Pytest plugin: an Elasticsearch server for the tests that need one.

``es_url`` (session): the server in ``ES_URL`` when that is set (a real Elasticsearch, as in
CI); otherwise a noida-db started on a free port with a throw-away data directory and stopped
at the end. Without either, the tests fail: Elasticsearch tests are never skipped silently.

``es_alias`` (per test): a unique alias name; every ``<alias>*`` index is deleted afterwards.

``start_noida``, ``wait_for_http`` and ``stop_process_group`` are plain functions so the
benchmarks can start and stop noida-db the same way.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from assistant.engines.elasticsearch import safe_url


def free_port() -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def noida_executable() -> str | None:
    """The ``noida-db`` script next to this Python (the venv), else on PATH."""
    local = Path(sys.executable).parent / "noida-db"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which("noida-db")


def start_noida(port: int, data_dir: str | os.PathLike) -> subprocess.Popen:
    """Start noida-db serving only Elasticsearch on ``127.0.0.1:port``, in its own process
    group (its server binary outlives a plain kill of the script: stop it with
    :func:`stop_process_group`). Output goes to ``<data_dir>/noida.log``.

    :raises FileNotFoundError: noida-db is not installed.
    """
    exe = noida_executable()
    if exe is None:
        raise FileNotFoundError("noida-db is not installed (it comes with the dev "
                                "requirements); or set ES_URL to a running Elasticsearch")
    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    log = open(data / "noida.log", "ab")
    try:
        return subprocess.Popen(
            [exe, "start", "--only", "elasticsearch", "--elasticsearch-port", str(port),
             "--data-dir", str(data)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    finally:
        log.close()  # the child keeps its own descriptor


def wait_for_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Return once ``GET url`` answers with 200.

    :raises RuntimeError: ``proc`` exited, or no answer within ``timeout`` seconds.
    """
    parts = urllib.parse.urlsplit(url)
    request = urllib.request.Request(url)
    if parts.username is not None:  # https://user:password@host:9200
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        request = urllib.request.Request(urllib.parse.urlunsplit(parts._replace(netloc=netloc)))
        token = base64.b64encode(
            f"{urllib.parse.unquote(parts.username)}:"
            f"{urllib.parse.unquote(parts.password or '')}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    shown = request.full_url
    deadline = time.monotonic() + timeout
    last: Exception | str = "no attempt"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server process exited with code {proc.returncode} "
                               f"before {shown} answered")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{shown} did not answer within {timeout:g} s (last: {last})")


def stop_process_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by ``proc``, SIGKILL it if it is still there after
    ``timeout`` seconds. ``proc`` must have been started with ``start_new_session=True``."""
    pgid = proc.pid

    def group_alive() -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        proc.wait()
        return
    deadline = time.monotonic() + timeout
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    while group_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_alive():
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _log_tail(data_dir: Path, lines: int = 20) -> str:
    path = data_dir / "noida.log"
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def es_url(tmp_path_factory):
    """The URL of an Elasticsearch-compatible server for this test session."""
    url = os.environ.get("ES_URL", "").strip()
    if url:
        problem = None
        try:
            wait_for_http(url.rstrip("/") + "/", timeout=30)
        except RuntimeError as exc:
            problem = f"ES_URL={safe_url(url)} is set but does not answer: {exc}"
        if problem:
            pytest.fail(problem, pytrace=False)
        yield url.rstrip("/")
        return
    if noida_executable() is None:
        pytest.fail("Elasticsearch tests need a server: set ES_URL to a running Elasticsearch "
                    "or install noida-db (pip install noida-db) into this environment",
                    pytrace=False)
    data_dir = tmp_path_factory.mktemp("noida-es")
    port = free_port()
    proc = start_noida(port, data_dir)
    url = f"http://127.0.0.1:{port}"
    try:
        problem = None
        try:
            wait_for_http(url + "/", timeout=30, proc=proc)
        except RuntimeError as exc:
            problem = f"noida-db did not start: {exc}\n{_log_tail(data_dir)}"
        if problem:
            pytest.fail(problem, pytrace=False)
        yield url
    finally:
        stop_process_group(proc)


@pytest.fixture(scope="session")
def es_client(es_url):
    """A raw ``elasticsearch.Elasticsearch`` client for checks and cleanup."""
    from elasticsearch import Elasticsearch

    client = Elasticsearch(es_url, request_timeout=30)
    yield client
    client.close()


def delete_indices(client, pattern: str) -> None:
    """Delete every index matching ``pattern`` by name (wildcard deletes are refused)."""
    from elasticsearch import NotFoundError

    names = list(client.indices.get(index=pattern, expand_wildcards="all"))
    for name in names:
        try:
            client.indices.delete(index=name)
        except NotFoundError:
            pass


@pytest.fixture
def es_alias(request, es_client):
    """A unique alias for this test; its ``<alias>*`` indices are deleted afterwards."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60] or "test"
    alias = f"t-{base}-{secrets.token_hex(3)}"
    yield alias
    delete_indices(es_client, f"{alias}*")
