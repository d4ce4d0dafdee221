"""Content gaps: what readers ask that the blog does not cover — the owner's editorial roadmap.

    groups = content_gaps(store, since, embed=query_vectors)   # `assistant gaps`, /dashboard

The questions are the exchanges the coverage gate (or the LLM) declined (``covered`` false) and
those a reader rated thumbs down. They are grouped by meaning: agglomerative clustering of their
vectors (average linkage, cosine distance below :data:`GROUP_DISTANCE`); each group is named by
its most central question (highest mean similarity to the others), with its count, languages and
first/last seen. Without an ``embed`` function (a caller with no embedding model) the vectors are
bags of the questions' content terms instead: rougher, still groups reworded repeats.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any, Callable, Sequence

import numpy as np

from assistant.conversation_log.backends import Cursor, iso, to_utc
from assistant.text import content_terms

# e5 cosines of unrelated texts sit around 0.80, rewordings of one question above 0.90.
GROUP_DISTANCE = 0.10
LEXICAL_GROUP_DISTANCE = 0.6
MAX_QUESTIONS = 1000  # the most recent ones: enough for a roadmap, bounded cost


def gap_questions(store, since: datetime | None = None,
                  until: datetime | None = None) -> list[dict]:
    """The declined and thumbs-down questions of the window, newest first (at most
    :data:`MAX_QUESTIONS`): ``{question, language, created_at, reason}``, ``reason`` being
    ``not_covered`` or ``thumbs_down``."""
    clauses, params = [], []
    if since is not None:
        clauses.append("c.created_at >= %s")
        params.append(store.db_time(to_utc(since, "since")))
    if until is not None:
        clauses.append("c.created_at <= %s")
        params.append(store.db_time(to_utc(until, "until")))
    window = "".join(f" AND {c}" for c in clauses)

    def read(cur: Cursor) -> list[dict]:
        rows = cur.execute(
            "SELECT c.question, c.language, c.created_at, c.covered,"
            " EXISTS (SELECT 1 FROM feedback f WHERE f.exchange_id = c.id AND f.feedback = -1)"
            " FROM conversations c"
            " WHERE c.status = 'ok' AND (c.covered = %s OR EXISTS (SELECT 1 FROM feedback f"
            f" WHERE f.exchange_id = c.id AND f.feedback = -1)){window}"
            " ORDER BY c.created_at DESC, c.id LIMIT %s",
            (False, *params, MAX_QUESTIONS)).fetchall()
        return [{"question": q, "language": lang or "fr", "created_at": store.py_time(t),
                 "reason": "not_covered" if not covered else "thumbs_down"}
                for q, lang, t, covered, _ in rows]

    return store.read(read)


def _lexical_vectors(questions: Sequence[str]) -> np.ndarray:
    vocabulary: dict[str, int] = {}
    # A question of stop words only has no content term: its own text stands for it, so that
    # every row has a direction (cosine distance needs one) and repeats of it still group.
    bags = [Counter(content_terms(q)) or Counter({"\0" + q.casefold(): 1}) for q in questions]
    for bag in bags:
        for term in bag:
            vocabulary.setdefault(term, len(vocabulary))
    matrix = np.zeros((len(questions), max(1, len(vocabulary))), dtype=np.float64)
    for i, bag in enumerate(bags):
        for term, n in bag.items():
            matrix[i, vocabulary[term]] = n
    return matrix


def _unit(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


def cluster(vectors: np.ndarray, distance: float) -> list[list[int]]:
    """Groups of row indices (average linkage, cosine distance), biggest first."""
    n = len(vectors)
    if n == 0:
        return []
    if n == 1:
        return [[0]]
    from sklearn.cluster import AgglomerativeClustering

    labels = AgglomerativeClustering(n_clusters=None, metric="cosine", linkage="average",
                                     distance_threshold=distance).fit_predict(vectors)
    groups: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(int(label), []).append(i)
    return sorted(groups.values(), key=lambda g: (-len(g), g[0]))


def group_gaps(rows: list[dict], embed: Callable[[str], Any] | None = None) -> list[dict]:
    """The rows of :func:`gap_questions` grouped by meaning (see the module doc)."""
    if not rows:
        return []
    questions = [r["question"] for r in rows]
    if embed is not None:
        vectors = _unit(np.vstack([np.asarray(embed(q), dtype=np.float64) for q in questions]))
        distance = GROUP_DISTANCE
    else:
        vectors, distance = _unit(_lexical_vectors(questions)), LEXICAL_GROUP_DISTANCE
    groups = []
    for members in cluster(vectors, distance):
        sub = vectors[members]
        centrality = (sub @ sub.T).mean(axis=1)
        central = members[int(np.argmax(centrality))]
        times = [rows[i]["created_at"] for i in members]
        reasons = Counter(rows[i]["reason"] for i in members)
        groups.append({
            "question": rows[central]["question"],
            "count": len(members),
            "languages": dict(sorted(Counter(rows[i]["language"] for i in members).items())),
            "not_covered": reasons.get("not_covered", 0),
            "thumbs_down": reasons.get("thumbs_down", 0),
            "first_seen": iso(min(times), "seconds"),
            "last_seen": iso(max(times), "seconds"),
            "examples": list(dict.fromkeys(rows[i]["question"] for i in members))[:5],
        })
    return sorted(groups, key=lambda g: -g["count"])  # stable: newest first among equals


def content_gaps(store, since: datetime | None = None, until: datetime | None = None, *,
                 embed: Callable[[str], Any] | None = None) -> list[dict]:
    """The window's content gaps, biggest group first. Raises ``StoreUnavailable``."""
    return group_gaps(gap_questions(store, since, until), embed)


def format_gaps(groups: list[dict]) -> str:
    """The groups as the CLI prints them."""
    if not groups:
        return "No content gaps: every question was covered and none was rated thumbs down."
    lines = [f"{len(groups)} group(s) of questions the blog does not cover (or answered badly):", ""]
    for g in groups:
        langs = ", ".join(f"{lang} {n}" for lang, n in g["languages"].items())
        lines.append(f"{g['count']:>4} × {g['question']}")
        lines.append(f"       {langs}; not covered {g['not_covered']}, thumbs down "
                     f"{g['thumbs_down']}; first {g['first_seen']}, last {g['last_seen']}")
    return "\n".join(lines)
