"""Sources of the knowledge base: an articles JSON, a pre-chunked JSON, or a sitemap crawl.

Every record is checked: a malformed file, a missing or unknown field, a wrong type or an empty
corpus is a ``SourceError`` that names the file, the record and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from assistant.documents import Article, Chunk, stable_id
from assistant.errors import EmptyCorpusError, SourceError

ARTICLE_FIELDS = {"article_id", "title", "url", "category", "tags", "text"}
CHUNK_FIELDS = {"article_id", "url", "title", "category", "tags", "chunk_id", "chunk_text"}


def _text_field(record: dict, name: str, where: str, required: bool = False) -> str:
    value = record.get(name)
    if value is None:
        if required:
            raise SourceError(f"{where}: missing field {name!r}")
        return ""
    if name == "tags" and isinstance(value, list) and all(isinstance(t, str) for t in value):
        return ", ".join(t.strip() for t in value if t.strip())
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise SourceError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    value = str(value).strip()
    if required and not value:
        raise SourceError(f"{where}: field {name!r} is empty")
    return value


def _check_fields(record: object, allowed: set[str], where: str) -> dict:
    if not isinstance(record, dict):
        raise SourceError(f"{where}: expected an object, got {type(record).__name__}")
    unknown = sorted(set(record) - allowed)
    if unknown:
        raise SourceError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; "
                          f"expected only {', '.join(sorted(allowed))}")
    return record


def read_json_records(path: str | Path) -> list:
    """The list of records in a JSON file (a list, or an object with one list value)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(f"source file not found: {p}") from None
    except UnicodeDecodeError:
        raise SourceError(f"{p}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise SourceError(f"{p}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))
    if not isinstance(data, list):
        raise SourceError(f"{p}: expected a JSON list of articles or chunks")
    if not data:
        raise EmptyCorpusError(f"{p}: the file holds no article or chunk")
    return data


def articles_from_records(records: list, origin: str = "source") -> list[Article]:
    """Validated articles; ``article_id`` defaults to a stable hash of the url or title."""
    articles, seen = [], set()
    for i, record in enumerate(records):
        where = f"{origin}: article #{i + 1}"
        _check_fields(record, ARTICLE_FIELDS, where)
        title = _text_field(record, "title", where, required=True)
        url = _text_field(record, "url", where)
        article_id = _text_field(record, "article_id", where) or stable_id(url or title)
        if article_id in seen:
            raise SourceError(f"{where}: duplicate article_id {article_id!r}")
        seen.add(article_id)
        text = _text_field(record, "text", where, required=True)
        articles.append(Article(article_id=article_id, title=title, text=text, url=url,
                                category=_text_field(record, "category", where),
                                tags=_text_field(record, "tags", where)))
    return articles


def chunks_from_records(records: list, origin: str = "source") -> list[Chunk]:
    """Validated pre-made chunks, ids kept as given (so an existing answer key applies)."""
    chunks, seen = [], set()
    for i, record in enumerate(records):
        where = f"{origin}: chunk #{i + 1}"
        _check_fields(record, CHUNK_FIELDS, where)
        chunk_id = _text_field(record, "chunk_id", where, required=True)
        if chunk_id in seen:
            raise SourceError(f"{where}: duplicate chunk_id {chunk_id!r}")
        seen.add(chunk_id)
        chunks.append(Chunk(chunk_id=chunk_id,
                            article_id=_text_field(record, "article_id", where, required=True),
                            title=_text_field(record, "title", where, required=True),
                            text=_text_field(record, "chunk_text", where, required=True),
                            url=_text_field(record, "url", where),
                            category=_text_field(record, "category", where),
                            tags=_text_field(record, "tags", where)))
    return chunks


def is_chunk_records(records: list) -> bool:
    return isinstance(records[0], dict) and "chunk_text" in records[0]


@dataclass(frozen=True)
class Loaded:
    """A source's chunks; for a crawl, also the articles to keep as indexed (their page failed
    this time), the crawl's page outcomes and its failures."""

    chunks: list[Chunk]
    keep_articles: frozenset[str] = frozenset()
    pages: dict = field(default_factory=dict)
    failures: tuple[str, ...] = ()


def load_chunks(source: str | Path, *, size: int = 300, overlap: int = 50,
                crawl_cache: str | Path | None = None, progress: bool = True) -> list[Chunk]:
    """Chunks from any source: a chunks JSON (kept as is), an articles JSON or a sitemap URL
    (chunked with ``size``/``overlap``)."""
    return load_source(source, size=size, overlap=overlap, crawl_cache=crawl_cache,
                       progress=progress).chunks


def load_source(source: str | Path, *, size: int = 300, overlap: int = 50,
                crawl_cache: str | Path | None = None, progress: bool = True,
                crawl_options: dict | None = None) -> Loaded:
    """:func:`load_chunks` with what a crawl says besides (``crawl_options`` go to
    ``indexing.crawler.crawl_site``)."""
    from indexing.chunker import chunk_article

    source = str(source)
    if source.startswith(("http://", "https://")):
        from indexing.crawler import crawl_site

        found = crawl_site(source, cache_dir=crawl_cache, progress=progress,
                           **(crawl_options or {}))
        chunks = [c for a in found.articles for c in chunk_article(a, size, overlap)]
        return Loaded(_non_empty(chunks, source), found.keep, found.pages, found.failures)
    records = read_json_records(source)
    if is_chunk_records(records):
        return Loaded(_non_empty(chunks_from_records(records, source), source))
    articles = articles_from_records(records, source)
    return Loaded(_non_empty([c for a in articles for c in chunk_article(a, size, overlap)],
                             source))


def _non_empty(chunks: list[Chunk], source: str) -> list[Chunk]:
    if not chunks:
        raise EmptyCorpusError(f"{source}: no text to index")
    return chunks
