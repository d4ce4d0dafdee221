"""What an answer gives back (:class:`AnswerResult`) and what it cost (:class:`Spend`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from assistant.answering.llm import Completion
from assistant.retrieval import Passage


def source_of(passage: Passage) -> dict:
    """A passage as the reply and the log cite it."""
    c = passage.chunk
    return {"article_id": c.article_id, "title": c.title, "url": c.url, "chunk_id": c.chunk_id,
            "score": round(float(passage.score), 6)}


EXCERPT_CHARS = 200


def _excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return (cut or text[:limit]) + "…"


def grouped_sources(passages: list[Passage]) -> list[dict]:
    """The reply's sources: one entry per article, in order of first appearance, its passages
    under it with their citation number ``n`` (the passage's place in the prompt / answer)."""
    articles: dict[str, dict] = {}
    for n, passage in enumerate(passages, start=1):
        c = passage.chunk
        entry = articles.get(c.article_id)
        if entry is None:
            entry = articles[c.article_id] = {"article_id": c.article_id, "title": c.title,
                                              "url": c.url, "passages": []}
        entry["passages"].append({"n": n, "chunk_id": c.chunk_id,
                                  "score": round(float(passage.score), 6),
                                  "excerpt": _excerpt(c.text)})
    return list(articles.values())


@dataclass
class Spend:
    """Tokens, cost and time of the LLM calls made for one exchange (rewrite, LLM rerank and
    answer)."""

    prompt: int = 0
    completion: int = 0
    total: int = 0
    cost: float | None = 0.0  # None once any call's cost is unknown
    llm_time: float = 0.0
    calls: int = 0

    def add(self, completion: Completion) -> None:
        u = completion.usage
        self.prompt += u.prompt_tokens
        self.completion += u.completion_tokens
        self.total += u.total_tokens or (u.prompt_tokens + u.completion_tokens)
        c = completion.cost
        self.cost = None if c is None or self.cost is None else self.cost + c
        self.llm_time += completion.elapsed
        self.calls += 1

    def tokens(self) -> dict:
        return {"prompt": self.prompt, "completion": self.completion, "total": self.total}


@dataclass
class AnswerResult:
    """One answered question, as the API returns it (:meth:`to_dict`)."""

    conversation_id: str
    exchange_id: str  # what POST /feedback names to rate this answer
    turn: int
    question: str
    rewritten_question: str | None
    answer: str
    sources: list[dict]  # grouped by article (:func:`grouped_sources`)
    mode: str
    model: str | None
    response_time: float
    tokens: dict
    cost: float | None
    category: str | None = None
    language: str | None = None
    logged: bool = True  # False: the log was down, the exchange waits in the spool
    notices: list[dict] = field(default_factory=list)  # {code, message} in the reader's language
    covered: bool = True  # False: the blog does not cover the question (no sources)
    related: list[dict] = field(default_factory=list)  # {title, url}: close articles when not covered

    def to_dict(self) -> dict:
        return {
            "conversation_id": self.conversation_id,
            "exchange_id": self.exchange_id,
            "turn": self.turn,
            "question": self.question,
            "rewritten_question": self.rewritten_question,
            "answer": self.answer,
            "covered": self.covered,
            "sources": self.sources,
            "related": self.related,
            "mode": self.mode,
            "model": self.model,
            "category": self.category,
            "language": self.language,
            "notices": self.notices,
            "response_time": round(self.response_time, 4),
            "tokens": self.tokens,
            "cost": self.cost,
        }
