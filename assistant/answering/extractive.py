"""Answers without an LLM: the sentences of the retrieved passages that best match the question,
each followed by its citation [n].

Sentences are scored lexically (overlap of accent-folded, lightly stemmed content words, weighted
by rarity), optionally combined with a semantic score from an ``embed(texts) -> array`` callable,
and favour higher-ranked passages. When nothing matches, the answer says so plainly, in the
language of the question.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, Callable, Sequence

from assistant.answering.prompts import passage_field
from assistant.language import detect_language  # noqa: F401  (part of this API)
from assistant.text import ABBREVIATIONS, content_terms, split_sentences, tokens

log = logging.getLogger(__name__)

NO_MATCH = {
    "fr": "Je n'ai pas trouvé la réponse à cette question dans les articles du blog.",
    "en": "I could not find the answer to this question in the blog's articles.",
}

# The frame of an extractive answer, in the reader's language: the passages stay verbatim
# (French), so an English reader is told so before and by the ``quoted_in_french`` notice.
FRAMES = {
    "fr": "Voici ce qu'en dit le blog : ",
    "en": "The blog covers this in French: ",
}
QUOTED_IN_FRENCH = {
    "code": "quoted_in_french",
    "message": "The blog is in French: these passages are quoted verbatim, untranslated.",
}


def framed(answer: str, language: str) -> tuple[str, list[dict]]:
    """An extractive answer framed for a reader of ``language`` ("fr" or "en"), and its
    notices. "Not found" messages are already in the reader's language: left as they are."""
    if answer in NO_MATCH.values():
        return answer, []
    language = language if language in FRAMES else "fr"
    notices = [dict(QUOTED_IN_FRENCH)] if language != "fr" else []
    return FRAMES[language] + answer, notices


# -- answering -------------------------------------------------------------------------------

def _match(term: str, stems: set[str]) -> float:
    """1 for the same stem, 0.75 when one stem (5+ letters) starts the other (reverb /
    reverber, frequenc / frequency), else 0."""
    if term in stems:
        return 1.0
    if len(term) >= 5:
        for s in stems:
            if len(s) >= 5 and (s.startswith(term) or term.startswith(s)):
                return 0.75
    return 0.0


def _cite(sentence: str, n: int) -> str:
    """Put " [n]" before a closing period, or after any other ending."""
    s = sentence.rstrip()
    if s.endswith(".") and not s.endswith(".."):
        last = re.search(r"(\S+)\.$", s)
        if not (last and last.group(1).lower().lstrip("([«") in ABBREVIATIONS | {"etc"}):
            return f"{s[:-1].rstrip()} [{n}]."
    return f"{s} [{n}]"


def _semantic(embed: Callable, question: str, texts: list[str]) -> list[float] | None:
    """Cosine similarity of each text to the question, or None when ``embed`` fails."""
    try:
        import numpy as np

        vectors = np.asarray(embed([question, *texts]), dtype=float)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts) + 1:
            raise ValueError(f"embed returned shape {vectors.shape} for {len(texts) + 1} texts")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms == 0, 1, norms)
        return [float(x) for x in vectors[1:] @ vectors[0]]
    except Exception as e:  # noqa: BLE001 - an answer without semantics beats no answer
        log.warning("extractive answer: embed failed (%s), scoring lexically only", e)
        return None


def extractive_answer(question: str, passages: Sequence[Any], *, max_sentences: int = 4,
                      embed: Callable[[list[str]], Any] | None = None,
                      min_similarity: float | None = None) -> tuple[str, list[int]]:
    """The best sentences of ``passages`` (dicts, or objects, with ``text`` and ``title``,
    best first) for ``question``, in passage order, each followed by its citation [n].

    Returns the answer and the passage numbers (1-based) it cites; when nothing matches (no
    shared content word and no ``embed``), an honest "not found" message and ``[]``.
    ``min_similarity``, with ``embed``, also declines when no sentence shares a word with
    the question and none is at least that similar to it.
    """
    language = detect_language(question)
    q_terms = content_terms(question)

    candidates: list[tuple[int, int, str, set[str]]] = []  # passage index, position, text, stems
    seen: set[str] = set()
    for p_index, passage in enumerate(passages):
        text = passage_field(passage, "text", "chunk", "content")
        for position, sentence in enumerate(split_sentences(text)):
            words = tokens(sentence)
            key = " ".join(words)
            if len(words) < 3 or key in seen:  # headings, debris, overlap repeated in two chunks
                continue
            seen.add(key)
            candidates.append((p_index, position, sentence, set(content_terms(sentence))))
    if not candidates or (not q_terms and embed is None):
        return NO_MATCH[language], []

    # Lexical coverage of the question's terms, each weighted by its rarity among the sentences.
    n = len(candidates)
    weights = {t: math.log(1 + (n + 1) / (1 + sum(t in c[3] for c in candidates))) for t in q_terms}
    total = sum(weights.values()) or 1.0
    lexical = [sum(w * _match(t, c[3]) for t, w in weights.items()) / total for c in candidates]

    semantic = _semantic(embed, question, [c[2] for c in candidates]) if embed is not None else None
    if semantic is None:
        if max(lexical, default=0.0) <= 0:
            return NO_MATCH[language], []
        relevance = lexical
    else:
        if (min_similarity is not None and max(lexical) <= 0 and max(semantic) < min_similarity):
            return NO_MATCH[language], []
        low, high = min(semantic), max(semantic)
        sem = [(s - low) / (high - low) if high - low > 1e-9 else 1.0 for s in semantic]
        top_lex = max(lexical) or 1.0
        relevance = [0.5 * (lx / top_lex) + 0.5 * sm for lx, sm in zip(lexical, sem)]

    scores = []
    for (p_index, _, sentence, _), rel in zip(candidates, relevance):
        n_words = len(sentence.split())
        length = 0.6 if n_words < 6 else 0.8 if n_words > 60 else 1.0
        scores.append(rel * length / (1 + 0.2 * p_index))  # favour better-ranked passages

    best = max(scores)
    if best <= 0:
        return NO_MATCH[language], []
    ranked = sorted(range(n), key=lambda i: -scores[i])
    chosen = [i for i in ranked[:max(1, max_sentences)] if scores[i] >= 0.4 * best]
    chosen.sort(key=lambda i: (candidates[i][0], candidates[i][1]))  # passage order
    parts = [_cite(candidates[i][2], candidates[i][0] + 1) for i in chosen]
    return " ".join(parts), sorted({candidates[i][0] + 1 for i in chosen})
