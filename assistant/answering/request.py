"""What a reader asks, checked once: the question, the conversation it continues, a category.

    ask = Ask.parse("Qu'est-ce qu'un VCO ?", conversation_id=None, category="le sound design")

The API and the CLI build an :class:`Ask` from what they receive; the answering flow takes it
as valid and checks nothing again. Every refusal is an :class:`~assistant.errors.InvalidQuestion`
whose message names what is wrong (the API answers it with a 400).
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass

from assistant.documents import CATEGORIES
from assistant.errors import InvalidQuestion

MAX_QUESTION_CHARS = 2000
_CONVERSATION_ID = re.compile(r"^[0-9a-f]{32}$")


def validate_question(question: object, max_chars: int = MAX_QUESTION_CHARS) -> str:
    """The question, stripped; ``InvalidQuestion`` when it cannot be searched."""
    if not isinstance(question, str):
        raise InvalidQuestion("the question must be a string")
    question = question.strip()
    if not question:
        raise InvalidQuestion("the question is empty")
    if len(question) > max_chars:
        raise InvalidQuestion(
            f"the question is too long ({len(question)} characters, at most {max_chars})")
    if not any(unicodedata.category(ch)[0] in "LN" for ch in question):
        raise InvalidQuestion("the question has no words, only punctuation or symbols")
    return question


def normalise_id(value: object, name: str = "conversation_id") -> str:
    """The 32-hex form of an id (a dashed UUID is accepted); InvalidQuestion else."""
    if not isinstance(value, str):
        raise InvalidQuestion(f"{name} must be a string")
    text = value.strip().lower()
    if len(text) == 36 and text.count("-") == 4:
        try:
            text = uuid.UUID(text).hex
        except ValueError:
            pass
    if not _CONVERSATION_ID.match(text):
        raise InvalidQuestion(f"{name} must be 32 hexadecimal characters (a UUID)")
    return text


def normalise_category(value: object) -> str | None:
    """One of :data:`CATEGORIES` (case and spacing forgiven), or None; InvalidQuestion else."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidQuestion("category must be a string")
    wanted = " ".join(value.split()).upper()
    if not wanted:
        return None
    if wanted in CATEGORIES:
        return wanted
    raise InvalidQuestion(
        f"unknown category {value!r}; expected one of: {', '.join(CATEGORIES)}")


@dataclass(frozen=True)
class Ask:
    """A valid request for an answer. Build it with :meth:`parse`."""

    question: str
    conversation_id: str | None = None  # a follow-up in this conversation
    category: str | None = None  # only passages of this category

    @classmethod
    def parse(cls, question: object, conversation_id: object = None,
              category: object = None) -> "Ask":
        """Check and normalise what a reader sent. :raises InvalidQuestion: saying what."""
        return cls(
            question=validate_question(question),
            conversation_id=(None if conversation_id is None
                             else normalise_id(conversation_id)),
            category=normalise_category(category))
