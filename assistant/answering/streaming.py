"""Answers sent piece by piece: LLM deltas with invalid citations held back, and extractive
answers cut into a few token events."""

from __future__ import annotations

import re

from assistant.answering.prompts import strip_invalid_citations

_TRAILING = re.compile(r"(?:\s|\[[\d\s,;\-–]*\])*$")


class CitationFilter:
    """Streams an LLM answer with invalid citations removed: text is held back while it ends
    in an unfinished or trailing citation (whose fate depends on what follows)."""

    def __init__(self, n_passages: int):
        self.n = n_passages
        self.raw = ""
        self.emitted = ""

    def _emit(self, cleaned: str) -> str:
        if not cleaned.startswith(self.emitted):
            return ""  # an earlier cut proved unstable: the final answer corrects it
        delta, self.emitted = cleaned[len(self.emitted):], cleaned
        return delta

    def feed(self, delta: str) -> str:
        self.raw += delta
        cut = len(self.raw)
        opening = self.raw.rfind("[")
        if opening != -1 and "]" not in self.raw[opening:]:
            cut = opening
        cut = _TRAILING.search(self.raw[:cut]).start()
        return self._emit(strip_invalid_citations(self.raw[:cut], self.n))

    def flush(self) -> str:
        return self._emit(strip_invalid_citations(self.raw, self.n))


def pieces(text: str, words: int = 6) -> list[str]:
    """An extractive answer cut into a few token events (about ``words`` words each)."""
    tokens = re.findall(r"\s*\S+", text)
    return ["".join(tokens[i:i + words]) for i in range(0, len(tokens), words)] or [text]
