"""Killing the conversation database during a bounded load loses no conversation.

A real PostgreSQL cluster, the app in extractive mode over the demo index, 60 questions from
4 threads: the cluster is stopped (immediate mode, like a crash) once a third of the questions
have been taken and started again after two thirds. Every request must be answered 200, and
after ``replay_spool`` the database must hold exactly the 60 exchanges, once each.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg2

from assistant.answering.rag import Assistant
from assistant.answering.request import Ask
from assistant.services import Services
from assistant.web import create_app

N = 60
THREADS = 4
QUESTIONS = [
    "What is a VCO?",
    "Quel niveau LUFS viser pour Spotify ?",
    "Comment fonctionne l'oscillateur d'un synthétiseur ?",
    "what does the resonance knob do on a synth filter",
]


def count_rows(url: str, sql: str) -> int:
    conn = psycopg2.connect(url, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchone()[0]
    finally:
        conn.close()


def test_database_killed_under_load_loses_nothing(demo_index_settings, pg_cluster, pg_url, tmp_path):
    settings = demo_index_settings.replace(data_dir=str(tmp_path / "var"), database_url=pg_url)
    # Warm the sentence vectors of these questions (shared embedding cache), without logging:
    # the load then measures the log, not the embedder.
    with Services(settings) as parts:
        warm = Assistant(parts.retriever, None, None, sentence_vectors=parts.sentence_vectors)
        for question in QUESTIONS:
            warm.answer(Ask.parse(question))

    app = create_app({"SETTINGS": settings, "TESTING": True})
    services = app.extensions["assistant"]
    lock = threading.Lock()
    taken = 0
    events: list[str] = []

    def ask(_):
        nonlocal taken
        with lock:
            k = taken
            taken += 1
        # The thread taking question N/3 stops the database, the one taking 2N/3 restarts it;
        # the other threads keep asking meanwhile.
        if k == N // 3:
            pg_cluster.stop("immediate")
            events.append(f"stopped at {k}")
        elif k == 2 * N // 3:
            pg_cluster.start()
            events.append(f"started at {k}")
        response = app.test_client().post("/question", json={"question": QUESTIONS[k % len(QUESTIONS)]})
        return response.status_code, response.get_json()

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(ask, range(N)))
    finally:
        pg_cluster.start()

    assert events == [f"stopped at {N // 3}", f"started at {2 * N // 3}"]
    assert [code for code, _ in results] == [200] * N, [r for r in results if r[0] != 200][:3]
    exchange_ids = {body["exchange_id"] for _, body in results}
    assert len(exchange_ids) == N
    assert all(body["mode"] == "extractive" and body["answer"] for _, body in results)

    store = services.store
    store.replay_spool()
    assert store.spooled() == 0
    assert count_rows(pg_url, "SELECT count(*) FROM conversations") == N
    assert count_rows(pg_url, "SELECT count(DISTINCT id) FROM conversations") == N
    assert {e.id for e in store.recent(limit=N + 10)} == exchange_ids
    # The outage really happened: some exchanges went through the spool.
    spooled = app.extensions["metrics"].registry.get_sample_value("arsonor_exchanges_spooled_total")
    assert spooled >= 1
    services.close()
