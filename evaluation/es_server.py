"""Start and stop an Elasticsearch-compatible server for tests and benchmarks.

``ES_URL`` names a running Elasticsearch when set; otherwise noida-db (a dev requirement that
speaks the ES REST API) is started on a free port. Its server binary outlives a plain kill of
the ``noida-db`` script, so it runs in its own process group and is stopped as a group.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from evaluation.ports import free_port


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


@contextlib.contextmanager
def elasticsearch_server(es_url: str | None = None):
    """Yield the URL of ``es_url``/``ES_URL`` if given, else of a noida-db started for the
    duration of the block."""
    es_url = es_url or os.environ.get("ES_URL")
    if es_url:
        yield es_url
        return
    with tempfile.TemporaryDirectory(prefix="noida-") as data_dir:
        port = free_port()
        proc = start_noida(port, data_dir)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_http(url, proc=proc)
            yield url
        finally:
            stop_process_group(proc)
