"""The English→French bridge of the lexical leg: one glossary file of audio terms
(``assistant/glossary_en_fr.json``), applied to English questions as query-time synonyms.

``expand`` adds the French terms of every glossary entry found in the question (longest match
first, on the standard tokenizer's lower-cased words), so the French BM25 index sees
"compresseur" in "how do I set a compressor". The same rules are written for Elasticsearch's
``synonym_graph`` filter (``synonym_rules`` / ``synonym_filter``); the test compares the two
term by term with ``_analyze``. Both engines receive the expanded query text (see
``Retriever.rank``) so that they score it with the same BM25 sum of terms: a synonym_graph
search analyzer would make Elasticsearch score same-position synonyms as one blended term
(SynonymQuery) and multi-word ones as phrases, which the embedded engine does not mirror.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from assistant.engines.analysis import tokenize
from assistant.errors import ConfigError

GLOSSARY_FILE = Path(__file__).with_name("glossary_en_fr.json")


def _words(text: str) -> tuple[str, ...]:
    return tuple(t.lower() for t in tokenize(text))


@lru_cache(maxsize=4)
def load_glossary(path: str | Path = GLOSSARY_FILE) -> dict[tuple[str, ...], tuple[str, ...]]:
    """English term (as words) -> its French terms."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        terms = data["terms"]
        glossary = {_words(en): tuple(str(fr) for fr in frs) for en, frs in terms.items()}
    except FileNotFoundError:
        raise ConfigError(f"glossary not found: {path}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(f"glossary {path}: expected {{\"terms\": {{english: [french...]}}}} ({e})") from None
    glossary.pop((), None)
    return glossary


def french_terms(question: str, glossary: dict | None = None) -> list[str]:
    """The French terms of the glossary entries in ``question``, in order of appearance;
    overlapping entries: the longest wins."""
    glossary = load_glossary() if glossary is None else glossary
    longest = max((len(k) for k in glossary), default=0)
    words = _words(question)
    found: list[str] = []
    i = 0
    while i < len(words):
        for size in range(min(longest, len(words) - i), 0, -1):
            french = glossary.get(words[i:i + size])
            if french:
                found.extend(f for f in french if f not in found)
                i += size
                break
        else:
            i += 1
    return found


def expand(question: str, glossary: dict | None = None) -> str:
    """The question followed by the French terms of its glossary entries."""
    extra = french_terms(question, glossary)
    return question + ("\n" + " ; ".join(extra) if extra else "")


def synonym_rules(glossary: dict | None = None) -> list[str]:
    """The glossary as Solr-format rules for ``synonym_graph``: ``en => en, fr1, fr2``."""
    glossary = load_glossary() if glossary is None else glossary

    def clean(term: str) -> str:  # commas and arrows are rule syntax
        return " ".join(_words(term))

    return [f"{' '.join(en)} => {', '.join([' '.join(en)] + [clean(f) for f in fr])}"
            for en, fr in sorted(glossary.items())]


def synonym_filter(glossary: dict | None = None) -> dict:
    """The ``synonym_graph`` token filter definition (placed after ``lowercase``)."""
    return {"type": "synonym_graph", "synonyms": synonym_rules(glossary)}
