"""Prompt building and parsing around the LLM.

Templates live in ``assistant/answering/prompts/*.txt`` and use ``string.Template``
placeholders (``$question``, ``$passages``…; a literal dollar is ``$$``):

* ``answer_system.txt`` + ``answer_user.txt``: answering from numbered passages;
  a variant ``<name>`` uses ``answer_system.<name>.txt`` / ``answer_user.<name>.txt`` when
  present (the default file for the other part): the RAG evaluation compares variants;
  a variant with neither file is an error (a typo must not silently test the default);
* ``rewrite.txt``: a follow-up question -> one stand-alone question;
* ``judge.txt``: LLM-as-judge relevance of an answer, as JSON.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from string import Template
from typing import Any, Iterable, Sequence

from assistant.language import detect_language

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"

LANGUAGE_NAMES = {"fr": "French", "en": "English"}
LANGUAGE_INSTRUCTIONS = {
    "fr": "The question is in French: answer in French, citing the passages as [1], [2]…",
    "en": "The question is in English: answer in English, citing the passages as [1], [2]…",
}
RELEVANCE_LABELS = ("RELEVANT", "PARTLY_RELEVANT", "NON_RELEVANT")
# What the answer prompts tell the model to reply when the passages do not answer the question.
NOT_COVERED_MARKER = "NOT_COVERED"
_NOT_COVERED = re.compile(r"^\W*NOT[_ ]COVERED\b", re.IGNORECASE)

MAX_HISTORY_TURNS = 3
MAX_HISTORY_QUESTION = 300
MAX_HISTORY_ANSWER = 400


# -- templates -------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def load_template(name: str) -> Template:
    """The template ``prompts/<name>`` (cached)."""
    path = PROMPTS_DIR / name
    try:
        return Template(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"prompt template not found: {path}") from None


def available_variants() -> list[str]:
    """Answer prompt variants: "default" and every ``answer_(system|user).<name>.txt``."""
    names = {"default"}
    for path in PROMPTS_DIR.glob("answer_*.*.txt"):
        names.add(path.name.split(".")[1])
    return sorted(names, key=lambda n: (n != "default", n))


def _answer_template(part: str, variant: str) -> Template:
    variant = variant or "default"
    if variant not in available_variants():
        raise ValueError(f"unknown prompt variant {variant!r}; available: {', '.join(available_variants())}")
    if variant != "default" and (PROMPTS_DIR / f"answer_{part}.{variant}.txt").is_file():
        return load_template(f"answer_{part}.{variant}.txt")
    return load_template(f"answer_{part}.txt")


def _render(template: Template, **values: str) -> str:
    return template.substitute(**values).strip()


# -- helpers ---------------------------------------------------------------------------------

def is_not_covered(reply: str) -> bool:
    """Whether the model replied the "not covered" marker (possibly with stray punctuation,
    quotes or a trailing explanation)."""
    return bool(_NOT_COVERED.match(reply or ""))


def passage_field(item: Any, *names: str) -> str:
    """The first non-empty of ``names`` on a passage given as a dict or an object."""
    for name in names:
        value = item.get(name) if isinstance(item, dict) else getattr(item, name, None)
        if value:
            return str(value)
    return ""


def _shorten(text: str, limit: int) -> str:
    text = " ".join(str(text or "").split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] if " " in text[:limit] else text[:limit]
    return cut.rstrip(",;:") + " …"


def _turns(history: Iterable[Any] | None) -> list[tuple[str, str]]:
    """(question, answer) pairs from tuples or dicts ({"question", "answer"})."""
    turns = []
    for turn in history or ():
        if isinstance(turn, dict):
            q, a = passage_field(turn, "question", "q"), passage_field(turn, "answer", "a")
        else:
            q, a = (list(turn) + ["", ""])[:2]
        if q or a:
            turns.append((str(q or ""), str(a or "")))
    return turns[-MAX_HISTORY_TURNS:]


def format_history(history: Iterable[Any] | None) -> str:
    """Previous turns, shortened, citations removed: "Q: …" / "A: …" lines."""
    lines = []
    for q, a in _turns(history):
        lines.append(f"Q: {_shorten(q, MAX_HISTORY_QUESTION)}")
        if a:
            lines.append(f"A: {_shorten(strip_invalid_citations(a, 0), MAX_HISTORY_ANSWER)}")
    return "\n".join(lines)


# Each passage is fenced: ⟦passage n⟧ … ⟦/passage n⟧. The system prompt says the fenced text is
# quoted data, never instructions. The fence characters are replaced by plain brackets in
# whatever goes inside, so no passage (a page anyone can edit upstream) can close its fence
# early and write outside it.
FENCE_OPEN, FENCE_CLOSE = "\u27e6", "\u27e7"  # ⟦ ⟧: never in the blog's text


def _fenced_text(text: str) -> str:
    return text.replace(FENCE_OPEN, "[").replace(FENCE_CLOSE, "]")


def format_passages(passages: Sequence[Any]) -> str:
    """Passages numbered from 1, each fenced: "⟦passage n⟧", "[n] Title — url", the text,
    "⟦/passage n⟧"."""
    blocks = []
    for number, p in enumerate(passages, 1):
        title = passage_field(p, "title") or "(untitled)"
        url = passage_field(p, "url")
        text = " ".join(passage_field(p, "text", "chunk", "content").split())
        quoted = _fenced_text(f"[{number}] {title}" + (f" — {url}" if url else "") + f"\n{text}")
        blocks.append(f"{FENCE_OPEN}passage {number}{FENCE_CLOSE}\n{quoted}\n"
                      f"{FENCE_OPEN}/passage {number}{FENCE_CLOSE}")
    return "\n\n".join(blocks) if blocks else "(no passage found)"


# -- builders --------------------------------------------------------------------------------

def build_answer_messages(question: str, passages: Sequence[Any], history: Iterable[Any] | None = None,
                          variant: str = "default") -> list[dict]:
    """System + user messages asking for an answer from ``passages`` (dicts with title, text,
    url), numbered from 1. ``history`` (previous (question, answer) pairs) is given as context."""
    language = detect_language(question)
    past = format_history(history)
    history_block = (f"\nEarlier in this conversation (context only; answer from the passages):\n{past}\n"
                     if past else "")
    system = _render(_answer_template("system", variant))
    user = _render(_answer_template("user", variant), passages=format_passages(passages),
                   history=history_block, question=question.strip(),
                   language=LANGUAGE_NAMES[language], language_instruction=LANGUAGE_INSTRUCTIONS[language])
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def build_rewrite_messages(history: Iterable[Any], question: str) -> list[dict]:
    """Messages asking for ONE stand-alone version of the follow-up ``question``."""
    past = format_history(history) or "(no previous messages)"
    return [{"role": "user", "content": _render(load_template("rewrite.txt"), history=past,
                                                 question=question.strip())}]


def build_judge_messages(question: str, answer: str) -> list[dict]:
    """Messages asking an LLM to rate the relevance of ``answer`` to ``question`` as JSON."""
    return [{"role": "user", "content": _render(load_template("judge.txt"), question=question.strip(),
                                                 answer=(answer or "").strip())}]


# -- parsing ---------------------------------------------------------------------------------

_LABEL_ALIASES = {
    "RELEVANT": "RELEVANT", "FULLY_RELEVANT": "RELEVANT",
    "PARTLY_RELEVANT": "PARTLY_RELEVANT", "PARTIALLY_RELEVANT": "PARTLY_RELEVANT",
    "PARTLY": "PARTLY_RELEVANT", "PARTIAL": "PARTLY_RELEVANT", "PARTIALLY": "PARTLY_RELEVANT",
    "NON_RELEVANT": "NON_RELEVANT", "NOT_RELEVANT": "NON_RELEVANT", "NONRELEVANT": "NON_RELEVANT",
    "IRRELEVANT": "NON_RELEVANT",
}


def _label(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    key = re.sub(r"[\s\-]+", "_", value.strip().strip("\"'`*.").upper())
    return _LABEL_ALIASES.get(key)


def _find_verdict(obj: Any) -> tuple[str, str] | None:
    if isinstance(obj, dict):
        lowered = {str(k).lower(): v for k, v in obj.items()}
        label = _label(lowered.get("relevance"))
        if label:
            explanation = lowered.get("explanation") or lowered.get("reason") or ""
            return label, str(explanation).strip()
        for value in obj.values():
            found = _find_verdict(value)
            if found:
                return found
    elif isinstance(obj, list):
        for value in obj:
            found = _find_verdict(value)
            if found:
                return found
    return None


def parse_judge(text: str) -> tuple[str, str]:
    """(relevance, explanation) from a judge's reply: JSON, possibly in a code fence or among
    other text. Raises ValueError when no known relevance label can be read."""
    if not text or not text.strip():
        raise ValueError("empty judge output")
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        found = _find_verdict(obj)
        if found:
            return found
    # Almost JSON (single quotes, trailing commas, no quotes…): read the fields loosely.
    m = re.search(r"relevance[\"'`*]*\s*[:=]\s*[\"'`*]*([A-Za-z][A-Za-z_ \-]*[A-Za-z])", text, re.IGNORECASE)
    label = _label(m.group(1)) if m else None
    if label is None:  # the bare label alone ("PARTLY_RELEVANT")
        label = _label(re.sub(r"^```\w*|```$", "", text.strip()).strip())
    if label is None:
        raise ValueError(f"no relevance label in judge output: {_shorten(text, 200)!r}")
    e = (re.search(r"explanation[\"'`*]*\s*[:=]\s*([\"'])(.*?)(?<!\\)\1", text, re.IGNORECASE | re.DOTALL)
         or re.search(r"explanation[\"'`*]*\s*[:=]\s*()([^\n]*)", text, re.IGNORECASE))
    return label, (e.group(2).strip().rstrip(",}").strip() if e else "")


_CITATION = re.compile(r"\[(\s*\d+(?:\s*(?:[,;]|[-–])\s*\d+)*\s*)\]")


def _numbers(body: str) -> list[int]:
    numbers: list[int] = []
    for part in re.split(r"[,;]", body):
        bounds = [int(x) for x in re.findall(r"\d+", part)]
        if len(bounds) == 2 and bounds[0] <= bounds[1] and bounds[1] - bounds[0] <= 50:  # [1-3]
            numbers.extend(range(bounds[0], bounds[1] + 1))
        else:
            numbers.extend(bounds)
    return numbers


def cited_numbers(answer_text: str) -> list[int]:
    """Passage numbers cited in an answer ([1], [2, 3], [1][3], [2-4]), in order of first
    citation, without repeats."""
    seen: dict[int, None] = {}
    for m in _CITATION.finditer(answer_text or ""):
        for n in _numbers(m.group(1)):
            seen.setdefault(n, None)
    return list(seen)


def strip_invalid_citations(answer: str, n_passages: int) -> str:
    """Drop citations to passages outside 1..n_passages ([7] with 5 passages); "[2, 7]"
    becomes "[2]". Spacing around removed citations is tidied."""

    def keep(m: re.Match) -> str:
        valid: dict[int, None] = {}
        for n in _numbers(m.group(1)):
            if 1 <= n <= n_passages:
                valid.setdefault(n, None)
        return f"[{', '.join(map(str, valid))}]" if valid else _DROPPED

    def tidy(m: re.Match) -> str:
        before = m.string[m.start() - 1:m.start()] if m.start() else ""
        after = m.string[m.end():m.end() + 1]
        if before in ("", "\n") or after in ("", "\n") or after in ".,;:!?)»]":
            return ""
        return " " if re.search(r"[ \t]", m.group(0)) else ""

    marked = _CITATION.sub(keep, answer or "")
    return re.sub(rf"[ \t]*(?:{_DROPPED}[ \t]*)+", tidy, marked)


_DROPPED = "\x00"
