"""Answer writing: the LLM client, its prompts and prices, and the extractive fallback used
when no LLM is configured. Importing this package does not import ``openai``."""

from assistant.answering.extractive import detect_language, extractive_answer
from assistant.answering.llm import (Completion, LLMClient, LLMError, LLMUnavailable, Usage,
                                     llm_from_settings)
from assistant.answering.prices import cost
from assistant.answering.prompts import (available_variants, build_answer_messages, build_judge_messages,
                                         build_rewrite_messages, cited_numbers, parse_judge,
                                         strip_invalid_citations)

__all__ = [
    "Completion", "LLMClient", "LLMError", "LLMUnavailable", "Usage", "llm_from_settings", "cost",
    "available_variants", "build_answer_messages", "build_judge_messages", "build_rewrite_messages",
    "cited_numbers", "parse_judge", "strip_invalid_citations", "detect_language", "extractive_answer",
]
