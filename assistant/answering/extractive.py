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
import unicodedata
from typing import Any, Callable, Sequence
from assistant.answering.prompts import passage_field
from assistant.language import detect_language  # noqa: F401  (part of this API)

log = logging.getLogger(__name__)

NO_MATCH = {
    "fr": "Je n'ai pas trouvé la réponse à cette question dans les articles du blog.",
    "en": "I could not find the answer to this question in the blog's articles.",
}

# -- normalising -----------------------------------------------------------------------------

_LIGATURES = str.maketrans({"œ": "oe", "Œ": "oe", "æ": "ae", "Æ": "ae", "ß": "ss", "’": "'", "‘": "'"})
_TOKEN = re.compile(r"\d+(?:[.,]\d+)?|[a-z]+")


def fold(text: str) -> str:
    """Lower case, ligatures expanded, accents removed: "Égaliseur Œuvre" -> "egaliseur oeuvre"."""
    text = unicodedata.normalize("NFKD", text.translate(_LIGATURES).lower())
    return "".join(ch for ch in text if not unicodedata.combining(ch))


def tokens(text: str) -> list[str]:
    """Folded words and numbers ("3,5" and "3.5" both give "3.5"); apostrophes split words."""
    return [t.replace(",", ".") for t in _TOKEN.findall(fold(text))]


STOP_WORDS = frozenset("""
a au aux avec ce ceci cela ces cet cette ci c ca comme comment dans de des du d elle elles en
entre est et etre ete etes eu faire fais fait faites font faut il ils je j l la le les leur leurs lui ma mais me
meme mes m moi mon n ne nos notre nous on ont ou par pas peu peut peuvent plus pour pourquoi
quand que quel quelle quelles quels qui quoi qu sa sans se ses si son sont sous sur s ta te tes
toi ton tous tout toute toutes tres trop tu t un une vos votre vous y avoir ai as avons avez
suis sommes sera seront dois doit doivent devrait peux pouvez veux veut va vais vont aussi alors
ainsi donc car ni or deja encore ici la voici voila bien tres chaque autre autres apres avant
combien lequel laquelle lesquels dont cas fois etc ex env cf oui non explique expliquer
the a an and or but if of to in on at by for with without from into about as is are was were be
been being do does did done have has had having can could should would will shall may might must
i me my we our you your he she it its they them their this that these those there here what
which who whom whose why how when where whats hows not no yes so than then too very just also
more most some any each other such only own same both few all get got use using used explain
""".split())


def _stem(word: str) -> str:
    """A very light French/English stemmer: enough for plurals and common derivations
    (compresseur / compresseurs / compression / compressor -> "compress")."""
    if len(word) <= 3 or word[0].isdigit():
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith("ss"):
                continue
            return word[: -len(suffix)]
    return word


_SUFFIXES = sorted("""
issements issement ations ation ements ement ments ment atrices atrice ateurs ateur euses euse
eurs eur ions ion ings ing ables able ibles ible iques ique ismes isme istes iste ives ive ifs
if ees ee es er ez ed ors or ages age ies ly s x e
""".split(), key=len, reverse=True)


def content_terms(text: str) -> list[str]:
    """Stemmed content words of ``text``, stop words removed, in order, without repeats."""
    seen: dict[str, None] = {}
    for tok in tokens(text):
        if tok in STOP_WORDS or (len(tok) < 2 and not tok.isdigit()):
            continue
        seen.setdefault(_stem(tok), None)
    return list(seen)


# -- language: see assistant.language (re-exported here) ------------------------------


# -- sentences -------------------------------------------------------------------------------

# Words that a period does not end ("env. 10 ms", "ex. un de-esser", "cf. l'article").
ABBREVIATIONS = frozenset("""env ex cf p pp fig vol no n° m mme mlle mm dr pr st ste vs approx
av apr e.g i.e eg ie mr mrs resp réf ref nb n.b éd ed chap art""".split())

_BOUNDARY = re.compile(r"([.!?…]+)([\"'»”’)\]]*)(\s+)")
_STARTS_SENTENCE = re.compile(r"[A-ZÀ-ÖØ-Þ0-9«\"“(\-–—•*]")


def split_sentences(text: str) -> list[str]:
    """Split prose into sentences: French spacing before ? and !, abbreviations ("env.",
    "ex.", "cf."), initials and decimals ("3.5 kHz", "-14 LUFS.") are handled."""
    sentences: list[str] = []
    for block in re.split(r"\s*\n\s*", text or ""):
        start = 0
        for m in _BOUNDARY.finditer(block):
            end = m.end()
            if end >= len(block):
                break
            punct, nxt = m.group(1), block[end]
            if not ("!" in punct or "?" in punct):  # ".", "…": only before a capital, a digit…
                if not _STARTS_SENTENCE.match(nxt):
                    continue
                before = re.search(r"(\S+)$", block[start:m.start()])
                word = before.group(1).lstrip("([«\"“'") if before else ""
                if punct == "." and (word.lower() in ABBREVIATIONS or re.fullmatch(r"[A-ZÀ-Þ]", word)):
                    continue
            sentences.append(block[start:m.end(2)].strip())
            start = end
        sentences.append(block[start:].strip())
    # A fragment without letters ("1.", "2)") belongs to the sentence after it.
    merged: list[str] = []
    carry = ""
    for s in sentences:
        if not s:
            continue
        if not re.search(r"[^\W\d_]", s):
            carry = f"{carry} {s}".strip()
            continue
        merged.append(f"{carry} {s}".strip() if carry else s)
        carry = ""
    if carry:
        merged.append(carry)
    return merged


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
