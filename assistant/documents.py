"""The records that flow from sources to engines: articles and the chunks cut from them."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

CATEGORIES = ("LE HOME STUDIO", "LE SOUND DESIGN", "LA POST-PROD")


@dataclass(frozen=True)
class Article:
    """One blog article, as every source (JSON, crawler) yields it."""

    article_id: str
    title: str
    text: str
    url: str = ""
    category: str = ""
    tags: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Chunk:
    """A passage of an article: the unit that engines index and retrieval returns."""

    chunk_id: str
    article_id: str
    title: str
    text: str
    url: str = ""
    category: str = ""
    tags: str = ""
    # Extra texts whose vectors also stand for this chunk (sentence windows); not indexed as text.
    windows: tuple[str, ...] = field(default=(), compare=False)

    @property
    def content_hash(self) -> str:
        """Changes whenever anything that is indexed for this chunk changes."""
        payload = "\x1f".join((self.title, self.url, self.category, self.tags, self.text,
                                "\x1e".join(self.windows)))
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("windows")
        return data


def stable_id(text: str, length: int = 8) -> str:
    """A short id that stays the same for the same input (URLs, titles)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:length]
