"""What a chat completion costs: OpenAI list prices in USD per million tokens.

Unknown models (local Ollama models, other providers, models newer than this table) cost
``None``: no cost is better than a wrong one. Dated snapshots ("gpt-4o-mini-2024-07-18")
cost what their base model costs, unless the table names the snapshot itself.
"""

from __future__ import annotations

import re
from typing import Any

PRICES_AS_OF = "2025-08"

# model -> (input, output) in USD per 1M tokens (standard tier, uncached input).
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-2024-05-13": (5.00, 15.00),  # the first gpt-4o snapshot kept its launch price
    "chatgpt-4o-latest": (5.00, 15.00),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-5-chat-latest": (1.25, 10.00),
    "o1": (15.00, 60.00),
    "o1-mini": (1.10, 4.40),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-4": (30.00, 60.00),
    "gpt-3.5-turbo": (0.50, 1.50),
}

_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})$")  # -2024-07-18, -0125


def price(model: str | None) -> tuple[float, float] | None:
    """``(input, output)`` USD per 1M tokens for ``model``, or None when it is not known."""
    if not model:
        return None
    name = model.strip().lower()
    if name.startswith("openai/"):  # router-style names ("openai/gpt-4o-mini")
        name = name[len("openai/"):]
    if name in PRICES:
        return PRICES[name]
    base = _SNAPSHOT.sub("", name)
    return PRICES.get(base)


def _tokens(usage: Any, name: str) -> int:
    value = usage.get(name) if isinstance(usage, dict) else getattr(usage, name, 0)
    return int(value or 0)


def cost(model: str | None, usage: Any) -> float | None:
    """USD cost of one completion; ``usage`` is a :class:`~assistant.answering.llm.Usage`
    (or a dict with ``prompt_tokens`` / ``completion_tokens``). None for an unknown model or
    when the server reported no usage."""
    rates = price(model)
    if rates is None or usage is None:
        return None
    known = usage.get("known", True) if isinstance(usage, dict) else getattr(usage, "known", True)
    if not known:
        return None
    prompt, completion = _tokens(usage, "prompt_tokens"), _tokens(usage, "completion_tokens")
    return (prompt * rates[0] + completion * rates[1]) / 1_000_000
