"""Which language a reader wrote in: French or English, from function words and accents.

Retrieval uses it to trust French BM25 less for English questions, answering to reply in the
reader's language."""

from __future__ import annotations

import re

from assistant.text import tokens

_FR_MARKERS = frozenset("""le la les des du de un une et est sont que qui quoi comment pourquoi quel
quelle quels quelles pour dans avec sur ce cette ces je tu il nous vous mon ma mes son sa ses au aux
ou pas faut peut qu l d j c ne entre sans quand combien faire""".split())
_EN_MARKERS = frozenset("""the an and is are what how why which who do does did should can could
would i my you your to of in for with it this that from when there best get be""".split())
_FR_ACCENTS = re.compile(r"[éèêëàâùûüîïôçœ]", re.IGNORECASE)


def detect_language(text: str) -> str:
    """ "fr" or "en"; French when undecided (the blog is French)."""
    words = tokens(text)
    fr = sum(w in _FR_MARKERS for w in words) + min(2, len(_FR_ACCENTS.findall(text)))
    en = sum(w in _EN_MARKERS for w in words)
    return "en" if en > fr else "fr"
