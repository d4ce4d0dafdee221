"""Pytest plugin: a real, throw-away PostgreSQL for the tests that need one.

``pg_cluster`` (session): a PostgreSQL cluster initialised in a temporary directory and started
on a free port (binaries from ``/usr/lib/postgresql/*/bin``, newest first; run as the
``postgres`` user through ``runuser`` when the tests run as root). It has ``url``, ``stop()``,
``start()`` (for tests that kill the database), ``running`` and ``create_database(name)``;
it is stopped and deleted at the end of the session. Without PostgreSQL the tests FAIL with the
install hint: they are never skipped silently.

``pg_url`` (per test): a fresh database on that cluster (and the cluster started again first if
an earlier test left it stopped).

``sqlite_data_dir`` (per test): a temporary data directory for the SQLite backend.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from evaluation.ports import free_port

INSTALL_HINT = ("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin: "
                "install them with `apt-get install -y postgresql` (as in CI)")


def find_pg_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb, pg_ctl and postgres."""
    def version(p: Path) -> tuple:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)

    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin")
                  if all((p / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres"))]
    return max(candidates, key=version) if candidates else None


class PgCluster:
    """A PostgreSQL cluster in ``base`` (data in ``base/data``, socket in ``base/sock``)."""

    def __init__(self, bindir: Path, base: Path, port: int):
        self.bindir = bindir
        self.base = base
        self.data = base / "data"
        self.sockets = base / "sock"
        self.logfile = base / "postgres.log"
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        self._as_postgres = os.geteuid() == 0

    # -- processes ---------------------------------------------------------------------------

    def _run(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        command = [str(self.bindir / tool), *args]
        if self._as_postgres:  # PostgreSQL refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        for name in [n for n in env if n.startswith("PG")]:
            env.pop(name)  # a developer's PGDATA / PGPORT must not steer the test cluster
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                env=env, cwd=self.base)
        if result.returncode != 0:
            log_tail = ""
            if self.logfile.exists():
                log_tail = "\n".join(self.logfile.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}\n{log_tail}")
        return result

    def init(self) -> None:
        for d in (self.base, self.sockets):
            d.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            shutil.chown(self.base, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "--no-sync", "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--locale=C")

    def start(self) -> None:
        """Start the server (no-op when it runs); returns once it accepts connections."""
        if self.running:
            return
        # fsync=off only: the OS keeps what PostgreSQL wrote, so an immediate stop (a crash of
        # the server, not of the machine) loses no committed transaction. synchronous_commit
        # stays on: with it off, acknowledged commits die with the server's WAL buffers.
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options,
                  "-w", "-t", "30", "start")

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (``immediate``: like a crash, clients see their connection drop)."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    # -- databases ---------------------------------------------------------------------------

    def url_for(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its URL."""
        import psycopg2

        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"database name {name!r}: lower-case letters, digits, _ only")
        conn = psycopg2.connect(self.url, connect_timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url_for(name)


def start_cluster() -> PgCluster:
    """Initialise and start a throw-away cluster (fails the test with the install hint)."""
    bindir = find_pg_bindir()
    if bindir is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.fail("running as root needs `runuser` (util-linux) to start PostgreSQL as the "
                    "postgres user", pytrace=False)
    if os.geteuid() == 0:
        try:
            import pwd
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root needs a `postgres` system user: "
                        "`apt-get install -y postgresql` creates it", pytrace=False)
    # Not under pytest's tmp_path: /tmp/pytest-of-root is 0700, the postgres user cannot enter.
    base = Path(tempfile.mkdtemp(prefix="arsonor-pg-"))
    cluster = PgCluster(bindir, base, free_port())
    try:
        cluster.init()
        cluster.start()
    except Exception:
        shutil.rmtree(base, ignore_errors=True)
        raise
    return cluster


def destroy_cluster(cluster: PgCluster) -> None:
    try:
        cluster.stop("immediate")
    finally:
        shutil.rmtree(cluster.base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster():
    started = time.monotonic()
    cluster = start_cluster()
    cluster.startup_seconds = time.monotonic() - started
    try:
        yield cluster
    finally:
        destroy_cluster(cluster)


@pytest.fixture
def pg_url(pg_cluster) -> str:
    """A fresh, empty database for this test."""
    pg_cluster.start()  # an earlier test may have stopped it and failed before restarting
    return pg_cluster.create_database(f"test_{secrets.token_hex(6)}")


@pytest.fixture
def sqlite_data_dir(tmp_path) -> Path:
    """A data directory for the SQLite backend (``<dir>/conversations.sqlite``)."""
    path = tmp_path / "var"
    path.mkdir()
    return path
