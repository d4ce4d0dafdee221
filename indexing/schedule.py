"""Periodic index updates: ``assistant index --every 6h``.

A built-in loop rather than a workflow tool: one job, one schedule, one process. Each run is a
whole index job (``indexing.update``); a failed run is logged and the next one still happens.
SIGINT and SIGTERM end the loop cleanly: while waiting at once, and during a run by stopping
that run the way Ctrl-C does (the engines' updates are all-or-nothing, the job lock is
released, the crawl resumes next time).
"""

from __future__ import annotations

import re
import signal
import threading
import time
from typing import Callable

from assistant.engines.base import utc_now

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Stopped(BaseException):
    """A stop signal arrived during a run (a BaseException, like KeyboardInterrupt, so that
    nothing on the way mistakes it for a failure to survive)."""


def parse_every(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``30m``, ``6h``, ``1d`` or ``1h30m``.

    :raises ValueError: anything else, or a duration under one second.
    """
    spec = text.strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhd])", spec)
    if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*([smhd])", "", spec).strip():
        raise ValueError(f"expected a duration such as 30m, 6h or 1d, got {text!r}")
    seconds = sum(float(n) * _UNITS[unit] for n, unit in parts)
    if seconds < 1:
        raise ValueError(f"the period must be at least 1s, got {text!r}")
    return seconds


def run_every(job: Callable[[], object], every: float, *, emit: Callable[[str], None],
              stop: threading.Event | None = None, max_runs: int | None = None) -> int:
    """Run ``job`` now and then every ``every`` seconds (from the start of the previous run;
    a run longer than the period is followed at once by the next) until a signal, ``stop``
    or ``max_runs``. ``emit`` gets one line per run: the job's ``summary()``, or why it
    failed. Returns the number of runs."""
    stop = stop or threading.Event()
    state = {"running": False}

    def on_signal(signum, frame):
        stop.set()
        if state["running"]:
            raise Stopped(signal.Signals(signum).name)

    previous = _install(on_signal)
    runs = 0
    try:
        while not stop.is_set():
            runs += 1
            started = time.monotonic()
            try:
                state["running"] = True
                report = job()
                state["running"] = False
                emit(f"{utc_now()} run {runs} ok: {report.summary()}")
            except Stopped as why:
                emit(f"{utc_now()} run {runs} stopped by {why}: the index is as it was")
                break
            except Exception as exc:  # survive it: the next run may well succeed
                state["running"] = False
                emit(f"{utc_now()} run {runs} failed: {_one_line(exc)}")
            finally:
                state["running"] = False
            if max_runs is not None and runs >= max_runs:
                break
            wait = max(every - (time.monotonic() - started), 0.0)
            if not stop.is_set():
                emit(f"{utc_now()} next run in {_duration(wait)}")
            stop.wait(wait)
    finally:
        _restore(previous)
    return runs


def _install(handler) -> dict:
    """Our handler for SIGINT and SIGTERM (main thread only; elsewhere only ``stop`` works)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def _restore(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _one_line(exc: BaseException) -> str:
    """The assistant's errors are written for people; anything else gets its type."""
    from assistant.errors import AssistantError

    text = " ".join(str(exc).split())
    return text if isinstance(exc, AssistantError) and text else f"{type(exc).__name__}: {text}"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"
