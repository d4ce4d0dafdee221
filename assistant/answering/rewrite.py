"""Follow-up questions made stand-alone before searching ("et le VCF ?" after a VCO question).

With an LLM, the model rewrites the follow-up from the conversation; without one, the previous
stand-alone question's content words are put in front of it, which keeps the search on topic.
"""

from __future__ import annotations

import logging
import re
from typing import Sequence

from assistant.text import STOP_WORDS, fold
from assistant.answering.llm import Completion, LLMClient
from assistant.answering.prompts import build_rewrite_messages
from assistant.answering.request import validate_question
from assistant.errors import InvalidQuestion

log = logging.getLogger(__name__)

MAX_REWRITE_CHARS = 2000
_WORD = re.compile(r"[^\W_]+(?:-[^\W_]+)*")


def simple_rewrite(previous_question: str, question: str, max_terms: int = 6) -> str:
    """The follow-up with the previous question's content words in front ("VCO — et le
    filtre ?"): enough for the search engine to stay on topic; no attempt at grammar."""
    have = {fold(w) for w in _WORD.findall(question)}
    terms: list[str] = []
    seen: set[str] = set()
    for word in _WORD.findall(previous_question or ""):
        key = fold(word)
        parts = key.split("-")
        if all(p in STOP_WORDS or (len(p) < 2 and not p.isdigit()) for p in parts):
            continue
        if key in have or key in seen:
            continue
        seen.add(key)
        terms.append(word)
        if len(terms) >= max_terms:
            break
    return f"{' '.join(terms)} — {question}" if terms else question


def clean_rewrite(text: str) -> str:
    """The first meaningful line of a rewrite, without quotes or a "Question:" prefix."""
    for line in (text or "").splitlines():
        line = line.strip().strip("\"'«»“”`").strip()
        line = re.sub(r"^(?:stand-alone question|question|reformulation)\s*:\s*", "", line,
                      flags=re.IGNORECASE).strip().strip("\"'«»“”`").strip()
        if line:
            return line[:MAX_REWRITE_CHARS]
    return ""


def llm_rewrite(llm: LLMClient, history: Sequence[tuple[str, str]],
                question: str) -> tuple[str, Completion]:
    """The model's stand-alone version of ``question`` (the follow-up itself when the model's
    reply is unusable), and the completion (for its cost). :raises LLMError:"""
    completion = llm.complete(build_rewrite_messages(history, question), temperature=0.0,
                              max_tokens=200)
    try:
        return validate_question(clean_rewrite(completion.text)), completion
    except InvalidQuestion:
        log.warning("unusable rewrite %r: searching the follow-up as asked", completion.text)
        return question, completion
