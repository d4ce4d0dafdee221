"""Load benchmark of the real HTTP server (assistant/web/serving.py: waitress as `assistant
serve` runs it) + the app, concurrent clients.

    python -m evaluation.benchmark_api --clients 8 --requests 200 [--llm-delay 1.0] \\
        [--threads 8] [--distinct 12] [--stream] [--no-warmup]

Starts the server in this process (waitress on a free port, in a thread) over the configured
index — the demo corpus, indexed first if the index is empty — with a throw-away SQLite
conversation log. Without ``--llm-delay`` answers are extractive (no LLM). With it, a local
OpenAI-compatible stub (``evaluation/openai_stub.py``) answers every
LLM call after that many seconds: the report shows that requests overlap (total time far below
requests x delay) because slow LLM calls do not block waitress's other threads.

Clients are threads using urllib, each sending its next request as soon as the previous one
is answered. Questions cycle over the first ``--distinct`` demo questions, asked once each
before the timed run (``--no-warmup`` skips it): the first time a passage is used, extractive
answers embed its sentences, which the embedding cache then keeps. Prints a JSON summary:
requests/s, latency percentiles, errors, and the overlap figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from assistant.config import REPO_DIR, load_settings
from assistant.errors import AssistantError

QUESTIONS_FILE = REPO_DIR / "evaluation" / "demo_questions.jsonl"


def load_questions(n: int) -> list[str]:
    lines = QUESTIONS_FILE.read_text(encoding="utf-8").splitlines()
    questions = [json.loads(line)["question"] for line in lines if line.strip()]
    return questions[:max(1, n)]


def ask(url: str, question: str, stream: bool, timeout: float) -> tuple[int, float, float]:
    """(status, seconds to the first byte, seconds to the end) of one POST /question."""
    body = json.dumps({"question": question}).encode()
    headers = {"Content-Type": "application/json"}
    if stream:
        headers["Accept"] = "text/event-stream"
    request = urllib.request.Request(f"{url}/question", data=body, headers=headers, method="POST")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            first = None
            for _ in iter(lambda: response.readline(), b""):
                if first is None:
                    first = time.perf_counter() - started
            status = response.status
    except urllib.error.HTTPError as e:
        e.read()
        status, first = e.code, time.perf_counter() - started
    except OSError:
        status, first = 0, time.perf_counter() - started
    return status, first or 0.0, time.perf_counter() - started


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at the same instant."""
    points = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    best = current = 0
    for _, step in points:
        current += step
        best = max(best, current)
    return best


def rss_mb() -> float | None:
    """Resident memory of this process (Linux), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    a = np.asarray(values) * 1000
    return {"p50": round(float(np.percentile(a, 50)), 1), "p95": round(float(np.percentile(a, 95)), 1),
            "p99": round(float(np.percentile(a, 99)), 1), "mean": round(float(a.mean()), 1),
            "max": round(float(a.max()), 1)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m evaluation.benchmark_api",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=200, help="timed requests in all")
    parser.add_argument("--threads", type=int, help="waitress threads (default: THREADS)")
    parser.add_argument("--llm-delay", type=float, help="answer with an LLM stub that takes this many seconds")
    parser.add_argument("--distinct", type=int, default=12, help="distinct demo questions cycled over")
    parser.add_argument("--stream", action="store_true", help="ask for server-sent events")
    parser.add_argument("--no-warmup", action="store_true", help="time the first answers too")
    parser.add_argument("--timeout", type=float, default=120.0, help="client timeout, seconds")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.getLogger("assistant.web.access").setLevel(logging.WARNING)  # no line per request
    workdir = Path(tempfile.mkdtemp(prefix="arsonor-bench-"))
    stub = server = services = None
    try:
        base = load_settings()
        settings = base.replace(
            data_dir=str(workdir), embedded_path=str(base.embedded_file.resolve()),
            embedding_cache=str(base.embedding_cache_file.resolve()), database_url="",
            openai_api_key="", openai_base_url="", judge_enabled=False,
            rate_limit="off",  # many clients on one address: this measures the answering
            threads=args.threads or base.threads)
        if args.llm_delay is not None:
            from evaluation.openai_stub import OpenAIStub, delay

            stub = OpenAIStub(default=delay(args.llm_delay)).start()
            settings = settings.replace(openai_base_url=stub.url, openai_api_key="sk-bench",
                                        llm_max_retries=0, llm_timeout=max(30.0, 5 * args.llm_delay))

        from assistant.web import create_app
        from assistant.web.serving import build_server, serve

        app = create_app({"SETTINGS": settings})
        services = app.extensions["assistant"]
        if services.index_is_empty():
            print(services.index(progress=True).summary(), file=sys.stderr)
        services.warm_up()
        server = build_server(app, settings.replace(host="127.0.0.1", port=0))
        stop_serving = threading.Event()
        threading.Thread(target=serve, args=(server, 5.0, stop_serving),
                         kwargs={"handle_signals": False}, name="server", daemon=True).start()
        url = f"http://127.0.0.1:{server.effective_port}"

        questions = load_questions(args.distinct)
        warmup_seconds = 0.0
        if not args.no_warmup:
            started = time.perf_counter()
            for q in questions:
                ask(url, q, args.stream, args.timeout)
            warmup_seconds = time.perf_counter() - started
            print(f"warm-up: {len(questions)} questions in {warmup_seconds:.1f} s", file=sys.stderr)
        if stub is not None:
            stub.calls.clear()
            stub.requests.clear()

        rss_before = rss_mb()
        lock = threading.Lock()
        next_index = 0
        results: list[tuple[int, float, float, float]] = []  # status, ttfb, total, start

        def client():
            nonlocal next_index
            while True:
                with lock:
                    k = next_index
                    next_index += 1
                if k >= args.requests:
                    return
                start = time.perf_counter()
                status, first, total = ask(url, questions[k % len(questions)], args.stream, args.timeout)
                with lock:
                    results.append((status, first, total, start))

        started = time.perf_counter()
        clients = [threading.Thread(target=client, name=f"client-{i}") for i in range(args.clients)]
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        elapsed = time.perf_counter() - started

        ok = [r for r in results if r[0] == 200]
        summary = {
            "mode": "llm" if stub is not None else "extractive",
            "stream": args.stream,
            "clients": args.clients,
            "server_threads": settings.threads,
            "requests": len(results),
            "ok": len(ok),
            "errors": {str(s): sum(1 for r in results if r[0] == s) for s in sorted({r[0] for r in results}) if s != 200},
            "distinct_questions": len(questions),
            "warmup_seconds": round(warmup_seconds, 2),
            "total_seconds": round(elapsed, 3),
            "requests_per_second": round(len(results) / elapsed, 2) if elapsed else None,
            "latency_ms": percentiles([r[2] for r in ok]),
            "max_requests_in_flight": max_overlap([(r[3], r[3] + r[2]) for r in results]),
            "server_errors_5xx": sum(1 for r in results if r[0] >= 500),
            # The server runs in this process: its resident memory, clients' threads included.
            "process_rss_mb": {"before": rss_before, "after": rss_mb()},
        }
        stop_serving.set()
        if args.stream:
            summary["first_byte_ms"] = percentiles([r[1] for r in ok])
        if stub is not None:
            times = stub.request_times
            serial = len(times) * args.llm_delay
            summary["llm"] = {
                "delay_seconds": args.llm_delay,
                "llm_calls": len(times),
                "serial_llm_seconds": round(serial, 2),
                "speedup_vs_serial": round(serial / elapsed, 2) if elapsed else None,
                "max_llm_calls_in_flight": max_overlap([(t, t + args.llm_delay) for t in times]),
            }
        print(json.dumps(summary, indent=2))
        return 0 if len(ok) == len(results) else 1
    except AssistantError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.close()
        if services is not None:
            services.close()
        if stub is not None:
            stub.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
