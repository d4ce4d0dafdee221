"""Schema fuzzing of a real ``assistant serve`` with schemathesis, against its own /openapi.json.

    python -m evaluation.fuzz --requests 5000 [--seed 1] [--url http://127.0.0.1:5000]

Without ``--url`` it starts ``assistant serve`` in a subprocess (waitress and the app, as in
production: the errors the HTTP server writes itself are fuzzed too) over the configured index
— the demo corpus, indexed first if the index is empty — with a throw-away data directory
(conversation log, spool) and extractive answers. Requests are shared out over the document's
operations, half valid data, half invalid (schemathesis' positive and negative modes). Every
response is checked: not a 5xx; its status, content type, headers and body as the document
says; and a streamed answer against the document's event grammar and event schemas
(:func:`assistant.web.openapi.check_sse`). Prints a JSON summary; exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from assistant.config import REPO_DIR
from evaluation.ports import free_port


@dataclass
class FuzzReport:
    requests: int = 0
    seconds: float = 0.0
    statuses: collections.Counter = field(default_factory=collections.Counter)
    server_errors: int = 0
    failures: list[str] = field(default_factory=list)
    streams_checked: int = 0
    streams_cut: int = 0  # of which only the first events were read
    per_operation: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"requests": self.requests, "seconds": round(self.seconds, 1),
                "requests_per_second": round(self.requests / self.seconds, 1) if self.seconds else None,
                "server_errors_5xx": self.server_errors,
                "schema_failures": len(self.failures),
                "streams_checked": self.streams_checked,
                "streams_read_in_part": self.streams_cut,
                "statuses": dict(sorted((str(k), v) for k, v in self.statuses.items())),
                "per_operation": self.per_operation,
                "first_failures": self.failures[:10]}


def _content_type(response) -> str:
    value = response.headers.get("content-type") or ""  # schemathesis: lower-case, a list
    return (value[0] if isinstance(value, list) and value else value) or ""


def _validator(document: dict):
    """``validate(data, schema)`` resolving ``#/components/...`` references of ``document``."""
    import jsonschema_rs

    cache: dict[str, object] = {}

    def validate(data, schema: dict) -> None:
        key = json.dumps(schema, sort_keys=True)
        if key not in cache:
            cache[key] = jsonschema_rs.validator_for(
                {**schema, "components": document["components"]})
        cache[key].validate(data)

    return validate


# Valid requests sent before the generated ones, so that answers, streams and feedback on a
# real exchange are always among what is checked (random text rarely makes a good question).
QUESTIONS = ["Qu'est-ce qu'un VCO ?", "How do I set the attack of a compressor?",
             "Comment régler un filtre passe-bas ?"]


def fuzz(base_url: str, requests: int, seed: int = 1) -> FuzzReport:
    """Fuzz the server at ``base_url`` with at least ``requests`` requests: a few valid ones,
    then rounds of generated ones (valid and invalid) over every operation of the document."""
    import hypothesis
    import hypothesis.errors
    import requests as http
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    from assistant.web.openapi import check_sse

    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_headers_conformance, response_schema_conformance]
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    document = http.get(f"{base_url}/openapi.json", timeout=10).json()
    validate = _validator(document)
    operations = {f"{op.method.upper()} {op.path}": op
                  for op in (result.ok() for result in schema.get_all_operations())}
    report = FuzzReport()
    session = http.Session()
    started = time.monotonic()

    def send(label: str, case) -> object | None:
        """Send ``case``, check the response, count everything."""
        report.per_operation[label] = report.per_operation.get(label, 0) + 1
        report.requests += 1
        try:
            response = case.call(base_url=base_url, session=session, timeout=60)
        except http.RequestException as e:  # the server dropped us: a failure too
            report.failures.append(f"{label}: no response ({type(e).__name__}: {e})")
            return None
        report.statuses[response.status_code] += 1
        if response.status_code >= 500:
            report.server_errors += 1
        try:
            case.validate_response(response, checks=checks)
            if _content_type(response).startswith("text/event-stream"):
                # schemathesis reads the first 20 events of a stream: the rest is not here
                cut = bool(getattr(response, "stream_cut_short", False))
                check_sse(response.text, validate, complete=not cut)
                report.streams_checked += 1
                report.streams_cut += cut
        except Exception as e:  # noqa: BLE001 - every failed check is counted, none stops the run
            report.failures.append(f"{label} -> {response.status_code}: "
                                   f"{' '.join(str(e).split())[:600]}")
        return response

    def generated(operation, label: str, mode, share: int):
        """A test that sends ``share`` cases generated for ``operation`` in ``mode``."""

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=share, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def one(case):
            send(label, case)

        return one

    question = operations["POST /question"]
    feedback = operations["POST /feedback"]
    for text in QUESTIONS:
        for query, headers in (({}, None), ({"stream": "1"}, None),
                               ({}, {"Accept": "text/event-stream"})):
            response = send("POST /question", question.Case(
                body={"question": text}, query=query, headers=headers,
                media_type="application/json"))
            if response is not None and response.status_code == 200 and not query and not headers:
                answer = response.json()
                send("POST /feedback", feedback.Case(
                    body={"exchange_id": answer["exchange_id"], "feedback": 1,
                          "comment": "<img src=x onerror=alert(1)> merci"},
                    media_type="application/json"))
                send("POST /question", question.Case(
                    body={"question": "Et le filtre ?", "conversation_id": answer["conversation_id"]},
                    media_type="application/json"))

    exhausted: set[str] = set()  # operations without inputs: one request says it all
    round_number = 0
    while report.requests < requests and len(exhausted) < len(operations):
        live = [label for label in operations if label not in exhausted]
        share = max(1, (requests - report.requests) // (2 * len(live)))
        for label in live:
            operation = operations[label]
            before = report.requests
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    hypothesis.seed(seed + round_number)(generated(operation, label, mode, share))()
                except hypothesis.errors.Unsatisfiable:
                    pass  # no invalid data exists for an operation without inputs
            if share > 2 and report.requests - before <= 2:
                exhausted.add(label)
        round_number += 1
    report.seconds = time.monotonic() - started
    return report


class ServedApp:
    """``assistant serve`` in a subprocess on a free port, over ``env`` (stopped by SIGTERM)."""

    def __init__(self, env: dict[str, str], *, args: tuple[str, ...] = (), cwd: Path = REPO_DIR,
                 log_path: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "PYTHONPATH": str(REPO_DIR)}
        self.args = args
        self.cwd = cwd
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self._log = None

    def __enter__(self) -> ServedApp:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout: float = 600) -> None:
        if self.log_path:
            self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "assistant.cli", "--env-file", "/dev/null", "serve",
             "--host", "127.0.0.1", "--port", str(self.port), "--index-if-empty", "--no-warm",
             *self.args],
            env=self.env, cwd=self.cwd, stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"assistant serve exited with {self.process.returncode}"
                                   + (f"; see {self.log_path}" if self.log_path else ""))
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"assistant serve did not answer within {timeout:.0f} s")

    def terminate(self) -> None:
        """Send SIGTERM (what ``docker stop`` sends)."""
        self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 60) -> int | None:
        try:
            if self.process is None or self.process.poll() is not None:
                return self.process.returncode if self.process else None
            self.terminate()
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait()
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None


def serve_env(data_dir: Path, **more: str) -> dict[str, str]:
    """The environment of a served app over the configured index (DATA_DIR, EMBEDDED_PATH,
    EMBEDDING_CACHE of the caller), with its own conversation log and spool in ``data_dir``,
    extractive answers and no rate limit (thousands of requests from one address: the fuzzing
    is of the app, the limiter has its own tests)."""
    from assistant.config import load_settings

    settings = load_settings()
    return {"DATA_DIR": str(data_dir), "EMBEDDED_PATH": str(settings.embedded_file.resolve()),
            "EMBEDDING_CACHE": str(settings.embedding_cache_file.resolve()),
            "SOURCE": str(Path(settings.source).resolve()) if not settings.source.startswith(
                "http") else settings.source,
            "ENGINE": "embedded", "DATABASE_URL": "", "OPENAI_API_KEY": "",
            "OPENAI_BASE_URL": "", "JUDGE_ENABLED": "false", "RATE_LIMIT": "off", **more}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", help="Fuzz this running server instead of starting one.")
    args = parser.parse_args(argv)
    if args.url:
        report = fuzz(args.url.rstrip("/"), args.requests, args.seed)
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="fuzz-"))
        try:
            with ServedApp(serve_env(data_dir), log_path=data_dir / "serve.log") as app:
                report = fuzz(app.url, args.requests, args.seed)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
    print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    return 0 if not report.server_errors and not report.failures else 1


if __name__ == "__main__":
    sys.exit(main())
