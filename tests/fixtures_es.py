"""Pytest plugin: an Elasticsearch server for the tests that need one.

``es_url`` (session): the server in ``ES_URL`` when that is set (a real Elasticsearch, as in
CI); otherwise a noida-db started on a free port with a throw-away data directory and stopped
at the end. Without either, the tests fail: Elasticsearch tests are never skipped silently.

``es_alias`` (per test): a unique alias name; every ``<alias>*`` index is deleted afterwards.

``start_noida``, ``wait_for_http`` and ``stop_process_group`` are plain functions so the
benchmarks can start and stop noida-db the same way.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import pytest

from assistant.engines.elasticsearch import safe_url
from evaluation.es_server import noida_executable, start_noida, stop_process_group, wait_for_http
from evaluation.ports import free_port


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
