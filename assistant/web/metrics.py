"""Prometheus metrics of one app, in its own registry (two apps in one process, as in the
tests, never share or clash), served at ``GET /metrics``.

* ``arsonor_http_requests_total{endpoint, method, status}`` and
  ``arsonor_http_request_seconds{endpoint}`` (time to the response headers; for a stream,
  ``arsonor_answer_seconds`` has the whole answer);
* ``arsonor_retrieval_seconds``, ``arsonor_llm_seconds``, ``arsonor_answer_seconds{mode}``;
* ``arsonor_exchanges_total{mode, status}``, ``arsonor_exchanges_spooled_total``;
* ``arsonor_llm_tokens_total{kind, purpose}`` (kind: prompt | completion; purpose: answer |
  judge) and ``arsonor_llm_cost_usd_total{purpose}``;
* ``arsonor_feedback_total{value}`` (1 | -1), ``arsonor_judgements_total{relevance}``;
* with ``LLM_DAILY_BUDGET_USD``: ``arsonor_llm_budget_usd``, ``arsonor_llm_spent_today_usd``
  and ``arsonor_llm_budget_capped`` (1 while answers are extractive because of the cap).
"""

from __future__ import annotations

import time

from flask import Flask, Response, g, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST, disable_created_metrics

disable_created_metrics()  # no *_created series: they double the output and nobody graphs them

_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SLOW = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("arsonor_http_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "method", "status"], registry=r)
        self.request_seconds = Histogram("arsonor_http_request_seconds",
                                         "Time to answer an HTTP request (to the headers)",
                                         ["endpoint"], buckets=_SLOW, registry=r)
        self.retrieval_seconds = Histogram("arsonor_retrieval_seconds",
                                           "Retrieval time of a question", buckets=_FAST, registry=r)
        self.llm_seconds = Histogram("arsonor_llm_seconds", "LLM time of an answer (rewrite included)",
                                     buckets=_SLOW, registry=r)
        self.answer_seconds = Histogram("arsonor_answer_seconds", "Whole answering time of a question",
                                        ["mode"], buckets=_SLOW, registry=r)
        self.exchanges = Counter("arsonor_exchanges", "Exchanges by answering mode and status",
                                 ["mode", "status"], registry=r)
        self.spooled = Counter("arsonor_exchanges_spooled",
                               "Exchanges spooled because the conversation log was down", registry=r)
        self.tokens = Counter("arsonor_llm_tokens", "LLM tokens by kind and purpose",
                              ["kind", "purpose"], registry=r)
        self.cost = Counter("arsonor_llm_cost_usd", "LLM cost in USD (known prices only)",
                            ["purpose"], registry=r)
        self.feedback = Counter("arsonor_feedback", "Reader feedback by value", ["value"], registry=r)
        self.judgements = Counter("arsonor_judgements", "Relevance verdicts of the LLM judge",
                                  ["relevance"], registry=r)
        for value in ("1", "-1"):
            self.feedback.labels(value=value)
        for purpose in ("answer", "judge"):
            self.cost.labels(purpose=purpose)
            for kind in ("prompt", "completion"):
                self.tokens.labels(kind=kind, purpose=purpose)

    def track_spending(self, budget_usd: float, cap) -> None:
        """Gauges of the daily LLM budget, read at each scrape. ``cap``: a function returning
        the :class:`~assistant.spending.SpendingCap` (or None: no LLM, nothing spent)."""
        if budget_usd <= 0:
            return
        r = self.registry

        def status() -> dict:
            found = cap()
            return found.status() if found is not None else {"spent_today_usd": 0.0,
                                                              "capped": False}

        Gauge("arsonor_llm_budget_usd", "Daily LLM budget in USD (LLM_DAILY_BUDGET_USD)",
              registry=r).set(budget_usd)
        Gauge("arsonor_llm_spent_today_usd", "LLM cost so far today (UTC), answers and judge",
              registry=r).set_function(lambda: status()["spent_today_usd"])
        Gauge("arsonor_llm_budget_capped", "1 while the daily budget is spent (answers are "
              "extractive)", registry=r).set_function(lambda: float(status()["capped"]))

    # -- observer of the assistant (see assistant.answering.rag) -------------------------------

    def exchange(self, exchange, stored: bool) -> None:
        mode = exchange.mode or "none"
        self.exchanges.labels(mode=mode, status=exchange.status).inc()
        if not stored:
            self.spooled.inc()
        if exchange.retrieval_time is not None:
            self.retrieval_seconds.observe(exchange.retrieval_time)
        if exchange.llm_time is not None:
            self.llm_seconds.observe(exchange.llm_time)
        if exchange.response_time is not None and exchange.status == "ok":
            self.answer_seconds.labels(mode=mode).observe(exchange.response_time)
        self.tokens.labels(kind="prompt", purpose="answer").inc(exchange.prompt_tokens or 0)
        self.tokens.labels(kind="completion", purpose="answer").inc(exchange.completion_tokens or 0)
        if exchange.cost:
            self.cost.labels(purpose="answer").inc(exchange.cost)

    def judged(self, relevance: str, usage, cost: float | None) -> None:
        self.judgements.labels(relevance=relevance).inc()
        self.tokens.labels(kind="prompt", purpose="judge").inc(usage.prompt_tokens or 0)
        self.tokens.labels(kind="completion", purpose="judge").inc(usage.completion_tokens or 0)
        if cost:
            self.cost.labels(purpose="judge").inc(cost)

    def feedback_given(self, value: int) -> None:
        self.feedback.labels(value=str(value)).inc()

    # -- Flask -------------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        app.extensions["metrics"] = self

        @app.before_request
        def _start_timer():
            g.metrics_started = time.perf_counter()

        @app.after_request
        def _count(response):
            endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
            self.requests.labels(endpoint=endpoint, method=request.method,
                                 status=str(response.status_code)).inc()
            started = g.get("metrics_started")
            if started is not None:
                self.request_seconds.labels(endpoint=endpoint).observe(time.perf_counter() - started)
            return response

    def response(self) -> Response:
        return Response(generate_latest(self.registry), mimetype=CONTENT_TYPE_LATEST.split(";")[0],
                        headers={"Content-Type": CONTENT_TYPE_LATEST})
