"""The one rule for text that comes from outside (a request body, a command-line argument):
it must be valid Unicode that every part downstream can take.

Two things break them: a lone surrogate (``"\\ud800"`` in JSON, or an undecodable byte of a
command-line argument, which Python keeps as ``\\udcXX``) cannot be encoded as UTF-8, so the
embedder, the engines and the database fail on it; a NUL character is refused by PostgreSQL
text columns. Both are refused where the text enters (``json_body``, the CLI), never deeper.
"""

from __future__ import annotations

from assistant.errors import InvalidInput


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be used, or None when it is fine."""
    if "\x00" in text:
        return "contains a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"is not valid Unicode (a lone surrogate U+{ord(text[e.start]):04X})"
    return None


def check_text(text: str, name: str) -> str:
    """``text`` itself; :class:`InvalidInput` naming ``name`` when it cannot be used."""
    problem = text_problem(text)
    if problem:
        raise InvalidInput(f"{name} {problem}")
    return text


def check_strings(value: object, name: str = "the body") -> None:
    """Check every string (object keys included) inside a decoded JSON value, iteratively
    (a deep value must not exhaust the stack here either)."""
    pending: list[tuple[object, str]] = [(value, name)]
    while pending:
        item, where = pending.pop()
        if isinstance(item, str):
            check_text(item, where)
        elif isinstance(item, dict):
            for key, child in item.items():
                check_text(key, f"a field name in {where}")
                pending.append((child, repr(key) if where == name else f"{where}.{key}"))
        elif isinstance(item, list):
            pending.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
