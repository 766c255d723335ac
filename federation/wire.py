"""What nodes say to each other over HTTP: endpoint paths, record kinds, limits, codecs.

Shared by the peer client (``client.py`` and the modules that use it) and the peer routes
(``api/peer_routes.py``), so both sides name a path, a limit or a format in one place.
Everything that decodes a peer's bytes is here and bounded: a hostile peer's answer loses
only its own malformed parts, never the whole answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from dht import Identity, compress, decompress, sign_record, verify_record
from index import PageWeights, SearchPage, Snippet, TermShard
from index.shard_codec import MAX_TERM_CHARS

# --- endpoints -----------------------------------------------------------------------
PATH_SHARDS = "/api/peer/shards"  # POST a signed batch; GET ?terms=a,b: every copy of each
PATH_SEARCH = "/api/peer/search"  # an owner's results, weights and named snippets
PATH_SNIPPETS = "/api/peer/snippets"  # snippets of named pages only
PATH_URLS = "/api/peer/urls"  # URLs forwarded to the owner of their hosts

SHARD_KIND = "shards/3"  # /3: a term a line, stored as sent; older pushes are refused

# --- limits --------------------------------------------------------------------------
MAX_PUSH_BYTES = 16 * 1024 * 1024  # a signed, compressed batch as sent
MAX_PUSH_DECODED = 64 * 1024 * 1024  # the same batch decompressed
# 50 postings with long URLs and titles stay well under this; a larger line is refused.
MAX_SHARD_BYTES = 64 * 1024
MAX_LOOKUP_TERMS = 64  # terms one shard lookup may ask for
MAX_SNIPPET_URLS = 100  # pages named to an owner for snippets: a page's worth, with room
MAX_FORWARDED_URLS = 1_000  # URLs one forward request may carry

SnippetFields = dict[str, str]  # {"content": text, "content_html": marked-up text}


# --- shard batches ---------------------------------------------------------------------
def encode_lines(items: Iterable[tuple[str, object]]) -> bytes:
    """A batch of shards as pushed: one ``term<TAB>json`` line per term."""
    return "\n".join(f"{term}\t{orjson.dumps(value).decode()}" for term, value in items).encode()


def encode_batch(shards: Iterable[TermShard]) -> bytes:
    return encode_lines((s.term, s.to_json()) for s in shards)


def split_batch(data: bytes) -> list[tuple[str, str]]:
    """(term, shard JSON) of each well-formed line of a pushed batch. Lines with no term,
    an over-long term or body, or a body that is no JSON array are skipped, not parsed:
    readers parse (and bound) what they use. A batch with no usable line is refused."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("shard batch is not UTF-8") from None
    rows = []
    for line in text.split("\n"):
        term, tab, body = line.partition("\t")
        if (
            tab
            and 0 < len(term) <= MAX_TERM_CHARS
            and len(body) <= MAX_SHARD_BYTES
            and body.startswith("[")
            and body.endswith("]")
        ):
            rows.append((term, body))
    if not rows:
        raise ValueError("no shards in the batch")
    return rows


def sign_batch(identity: Identity, shards: list[TermShard], expires_at: float) -> bytes:
    """A publisher's batch as pushed: zstd-compressed lines in a signed record."""
    return sign_record(
        identity,
        kind=SHARD_KIND,
        key=b"batch",
        payload=compress(encode_batch(shards)),
        issued_at=time.time(),
        expires_at=expires_at,
    )


@dataclass(frozen=True, slots=True)
class PushedBatch:
    publisher: str  # hex node id, proven by the record's signature
    rows: list[tuple[str, str]]
    expires_at: float


def open_batch(body: bytes, *, max_ttl: float) -> PushedBatch:
    """A pushed batch verified and decoded within the limits; raises ``dht.DhtError`` for
    a bad record and ValueError for a wrong kind or no usable line."""
    record = verify_record(body, now=time.time(), max_size=MAX_PUSH_BYTES)
    if record.kind != SHARD_KIND:
        raise ValueError("not a shard batch")
    rows = split_batch(decompress(record.payload, MAX_PUSH_DECODED))
    expires_at = min(record.expires_at, time.time() + max_ttl)
    return PushedBatch(record.publisher_id.hex(), rows, expires_at)


def parse_lookup(raw: Any, wanted: Mapping[str, object]) -> dict[str, list[tuple[str, TermShard]]]:
    """A holder's answer to a lookup; copies that do not parse (a hostile or older holder)
    are dropped one by one, never the whole answer."""
    found: dict[str, list[tuple[str, TermShard]]] = {}
    if not isinstance(raw, dict):
        return found
    for term, copies in raw.items():
        if term not in wanted or not isinstance(copies, list):
            continue
        for copy in copies:
            try:
                publisher, body = copy
                found.setdefault(term, []).append((str(publisher), TermShard.from_json(term, body)))
            except (TypeError, ValueError):
                continue
    return found


# --- owner answers ---------------------------------------------------------------------
@dataclass(slots=True)
class ResultRow:
    """One federated result, typed: what an owner returned or the shards named. The API
    turns rows into its SearXNG-shaped dicts; nothing here knows that shape."""

    url: str
    title: str
    content: str = ""
    content_html: str = ""
    host: str = ""
    score: float = 0.0
    peers: list[str] = field(default_factory=list)
    language: str | None = None
    fetched: float = 0.0  # seconds since the epoch; 0 = not known


@dataclass(slots=True)
class PeerAnswer:
    """An owner's answer to a federated query."""

    peer: str
    results: list[ResultRow]
    weights: PageWeights = field(default_factory=lambda: PageWeights.from_json({}))
    # Snippets of pages the querier named that are not among ``results``.
    snippets: dict[str, SnippetFields] = field(default_factory=dict)


def snippet_fields(found: Mapping[str, Snippet]) -> dict[str, SnippetFields]:
    """Snippets as a result's fields (and a peer answer's ``snippets``): {url: fields}."""
    return {url: {"content": s.text, "content_html": s.to_html()} for url, s in found.items()}


def page_rows(page: SearchPage, peer: str) -> list[ResultRow]:
    return [
        ResultRow(
            url=h.url,
            title=h.title or h.url,
            content=h.snippet.text,
            content_html=h.snippet.to_html(),
            host=h.host,
            score=round(h.score, 4),
            peers=[peer],
            language=h.language or None,
            fetched=h.fetched,
        )
        for h in page.hits
    ]


def encode_owner_answer(
    q: str, page: SearchPage, weights: PageWeights, snippets: Mapping[str, Snippet]
) -> dict[str, Any]:
    """The body of a ``PATH_SEARCH`` answer."""
    return {
        "query": q,
        "number_of_results": page.total,
        "results": [
            {
                "url": r.url,
                "title": r.title,
                "content": r.content,
                "content_html": r.content_html,
                "host": r.host,
                "score": r.score,
                "language": r.language,
                "fetched": r.fetched,
            }
            for r in page_rows(page, "local")
        ],
        **weights.to_json(),
        "snippets": snippet_fields(snippets),
    }


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def parse_rows(raw: object, peer: str) -> list[ResultRow]:
    """An owner's results as rows; entries that are not objects with a URL are dropped."""
    rows: list[ResultRow] = []
    for r in raw if isinstance(raw, list) else []:
        if not isinstance(r, dict) or not isinstance(r.get("url"), str):
            continue
        fetched = r.get("fetched")
        language = r.get("language")
        rows.append(
            ResultRow(
                url=r["url"],
                title=_text(r.get("title")) or r["url"],
                content=_text(r.get("content")),
                content_html=_text(r.get("content_html")),
                host=_text(r.get("host")),
                peers=[peer],
                language=language if isinstance(language, str) and language else None,
                fetched=float(fetched) if isinstance(fetched, int | float) else 0.0,
            )
        )
    return rows


def parse_snippets(raw: Any, asked: Sequence[str]) -> dict[str, SnippetFields]:
    """An owner's snippets of the pages we named, as strings (peer input)."""
    found: dict[str, SnippetFields] = {}
    items = raw.get("snippets") if isinstance(raw, dict) else None
    if not isinstance(items, dict):
        return found
    wanted = set(asked)
    for url, fields in items.items():
        if url in wanted and isinstance(fields, dict):
            content, html = fields.get("content"), fields.get("content_html")
            if isinstance(content, str) and isinstance(html, str):
                found[url] = {"content": content, "content_html": html}
    return found


def parse_owner_answer(raw: dict[str, Any], peer: str, named: Sequence[str]) -> PeerAnswer:
    return PeerAnswer(
        peer,
        parse_rows(raw.get("results"), peer),
        PageWeights.from_json(raw),
        parse_snippets(raw, named),
    )
