"""Pytest plugin: a real, throw-away Redis (Debian's ``redis-server``) for the tests that need one.

``redis_url`` (session): ``redis://127.0.0.1:<free port>/0`` of a ``redis-server`` started in a
temporary directory with no persistence (``--save "" --appendonly no``), stopped at the end of
the session. Without ``redis-server`` the tests FAIL with the install hint, never skip.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from evaluation.ports import free_port

INSTALL_HINT = ("redis-server not found: install it with `apt-get install -y redis-server` "
                "(as in CI)")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    directory = tmp_path_factory.mktemp("redis")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(directory), "--logfile", str(directory / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                log = (directory / "redis.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"redis-server did not start on port {port}:\n{log}", pytrace=False)
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
