"""An append-only spool: records the database could not take, kept on disk until it can.

Layout, next to each other (``spool.jsonl`` stands for the configured path):

* ``spool.jsonl``            records waiting, one JSON object per line, oldest first;
* ``spool.jsonl.replaying``  a batch taken out of the spool by a replay that has not finished;
* ``spool.jsonl.rejected``   records a replay could not store (unreadable line, bad data,
  feedback for an unknown conversation), with the reason: kept for a person, never replayed;
* ``spool.jsonl.lock``, ``spool.jsonl.replay.lock``  empty files for ``fcntl.flock``.

Appends hold a lock (a process-wide ``threading.Lock`` per path plus ``flock`` on the lock file,
so threads and processes never interleave), write one whole line, ``flush`` and ``fsync``.

A replay renames the spool to ``.replaying`` (under the append lock, so no append is lost),
hands its records to the caller, which stores them idempotently in one transaction, and deletes
the file only once that transaction has committed. A crash before the commit leaves
``.replaying`` in place: the next replay takes it first. A crash between the commit and the
deletion replays records that are already stored: the caller's inserts ignore them (primary key
/ ``spool_id``). Nothing is lost, nothing is stored twice.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger(__name__)

# Records a replay could not store, with the reason: [(record, error), ...].
Rejected = list[tuple[dict, str]]
# Stores a batch of records in one transaction (raising leaves the batch in the spool) and
# returns the ones it rejected.
ApplyFn = Callable[[list[dict]], Rejected]

_registry_lock = threading.Lock()
_thread_locks: dict[str, tuple[threading.Lock, threading.Lock]] = {}


def _process_locks(path: Path) -> tuple[threading.Lock, threading.Lock]:
    """The (append, replay) thread locks shared by every Spool of this process on ``path``."""
    key = os.path.abspath(path)
    with _registry_lock:
        if key not in _thread_locks:
            _thread_locks[key] = (threading.Lock(), threading.Lock())
        return _thread_locks[key]


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Spool:
    """The spool file at ``path`` (created on the first append)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.replaying_path = self.path.with_name(self.path.name + ".replaying")
        self.rejected_path = self.path.with_name(self.path.name + ".rejected")
        self._append_lock_path = self.path.with_name(self.path.name + ".lock")
        self._replay_lock_path = self.path.with_name(self.path.name + ".replay.lock")
        self._append_tlock, self._replay_tlock = _process_locks(self.path)

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r})"

    # -- locks -------------------------------------------------------------------------------

    @contextmanager
    def _locked(self, tlock: threading.Lock, lock_path: Path) -> Iterator[None]:
        with tlock:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    # -- writing -----------------------------------------------------------------------------

    def append(self, record: dict) -> None:
        """Add one record as one line, durably (``fsync``) before returning."""
        data = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._locked(self._append_tlock, self._append_lock_path):
            created = not self.path.exists()
            with open(self.path, "a+b") as f:  # readable too: the torn-line check
                size = os.fstat(f.fileno()).st_size
                if size and os.pread(f.fileno(), 1, size - 1) != b"\n":
                    data = b"\n" + data  # a torn last line (crash mid-append): keep ours whole
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if created:
                _fsync_dir(self.path.parent)

    # -- reading -----------------------------------------------------------------------------

    def pending(self) -> bool:
        """Whether records wait for a replay (two ``stat`` calls: cheap enough for every write)."""
        for p in (self.replaying_path, self.path):
            try:
                if p.stat().st_size > 0:
                    return True
            except FileNotFoundError:
                pass
        return False

    def count(self) -> int:
        """How many records wait for a replay."""
        total = 0
        for p in (self.replaying_path, self.path):
            try:
                total += sum(1 for line in p.read_bytes().splitlines() if line.strip())
            except FileNotFoundError:
                pass
        return total

    @staticmethod
    def _read(path: Path) -> tuple[list[dict], Rejected]:
        records: list[dict] = []
        unreadable: Rejected = []
        for number, raw in enumerate(path.read_bytes().splitlines(), 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, UnicodeDecodeError) as e:
                unreadable.append(({"line": raw.decode("utf-8", "replace")},
                                   f"unreadable spool line {number}: {e}"))
                continue
            records.append(record)
        return records, unreadable

    def _reject(self, rejected: Rejected) -> None:
        if not rejected:
            return
        now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        lines = "".join(
            json.dumps({"rejected_at": now, "error": error, "record": record},
                       ensure_ascii=False, separators=(",", ":")) + "\n"
            for record, error in rejected)
        with open(self.rejected_path, "ab") as f:
            f.write(lines.encode())
            f.flush()
            os.fsync(f.fileno())
        for record, error in rejected:
            log.error("spooled record rejected (kept in %s): %s", self.rejected_path, error)

    # -- replay ------------------------------------------------------------------------------

    def replay(self, apply: ApplyFn) -> int:
        """Hand the waiting records, oldest first, to ``apply``; return how many it stored.

        ``apply`` stores a batch in one transaction and returns the records it rejected; if it
        raises, the batch stays on disk for the next replay and the exception propagates.
        One replay at a time per spool (threads and processes); appends go on meanwhile into
        a fresh spool file, taken by the next replay.
        """
        stored = 0
        with self._locked(self._replay_tlock, self._replay_lock_path):
            # At most two batches: one left over by an interrupted replay, then the spool.
            for _ in range(2):
                if not self.replaying_path.exists():
                    with self._locked(self._append_tlock, self._append_lock_path):
                        try:
                            if self.path.stat().st_size == 0:
                                break
                        except FileNotFoundError:
                            break
                        os.replace(self.path, self.replaying_path)
                        _fsync_dir(self.path.parent)
                records, unreadable = self._read(self.replaying_path)
                refused = apply(records) if records else []  # raises: the batch stays on disk
                self._reject(unreadable + refused)
                os.unlink(self.replaying_path)
                _fsync_dir(self.path.parent)
                stored += len(records) - len(refused)
        return stored
