"""What nodes say to each other over HTTP: endpoint paths, record kinds, limits, codecs.

Shared by the peer client (``client.py`` and the modules that use it) and the peer routes
(``api/peer_routes.py``), so both sides name a path, a limit or a format in one place.
Everything that decodes a peer's bytes is here and bounded: a hostile peer's answer loses
only its own malformed parts, never the whole answer.

Longer than 400 lines because it is that one choke point: every decoder of a peer's bytes
(pushes, lookups, owner answers, snippets) sits beside the limits it enforces.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import struct
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from rhizome.dht import (
    DhtError,
    Identity,
    VerifiedRecords,
    compress,
    decompress,
    sign_record,
    verify_record,
)
from rhizome.dht.identity import SIGNATURE_BYTES
from rhizome.dht.record_groups import (
    PROOF_BYTES,
    decode_proven,
    is_proven,
    prove_group,
    sign_group,
    verify_proven,
)
from rhizome.dht.records import decode_body, record_body
from rhizome.index import PageWeights, SearchPage, Snippet, TermShard
from rhizome.index.shard_codec import MAX_TERM_CHARS

# --- endpoints -----------------------------------------------------------------------
PATH_SHARDS = "/api/peer/shards"  # POST a signed batch; GET ?terms=a,b: every copy of each
PATH_SEARCH = "/api/peer/search"  # an owner's results, weights and named snippets
PATH_SNIPPETS = "/api/peer/snippets"  # snippets of named pages only
PATH_URLS = "/api/peer/urls"  # URLs forwarded to the owner of their hosts
PATH_WHOAMI = "/api/peer/whoami"  # ?nonce=HEX&url=URL: proof that a URL serves a node id
PATH_BLOCKLIST = "/api/peer/blocklist"  # the node's own blocklist, signed (blocklists.py)

# --- limits --------------------------------------------------------------------------
MAX_PUSH_BYTES = 16 * 1024 * 1024  # a signed, compressed batch as sent
MAX_PUSH_DECODED = 64 * 1024 * 1024  # the same batch decompressed
# 50 postings with long URLs and titles stay well under this; a larger line is refused.
MAX_SHARD_BYTES = 64 * 1024
MAX_LOOKUP_TERMS = 64  # terms one shard lookup may ask for
MAX_SNIPPET_URLS = 100  # pages named to an owner for snippets: a page's worth, with room
MAX_FORWARDED_URLS = 1_000  # URLs one forward request may carry
# Bytes of a peer's answer read and decoded at most (a gzip bomb stops at the cap). A
# lookup of 8 terms from an 8-node network is ~100 KB; an owner's page of 10 results with
# weights and snippets ~20 KB, its deepest answer (100 results) ~300 KB.
MAX_LOOKUP_ANSWER_BYTES = 8 * 1024 * 1024
MAX_OWNER_ANSWER_BYTES = 2 * 1024 * 1024
# A published blocklist: 10,000 rules of ~30 bytes fit a signed record of 512 KiB; the
# answer carries it in base64 (4/3) inside a little JSON.
MAX_BLOCKLIST_BYTES = 512 * 1024
MAX_BLOCKLIST_ANSWER_BYTES = MAX_BLOCKLIST_BYTES * 4 // 3 + 1024

MAX_ANSWER_ROWS = 100  # results read from one owner's answer (an owner returns <= 100)

SnippetFields = dict[str, str]  # {"content": text, "content_html": marked-up text}


def host_key(host: str) -> bytes:
    """A host's place in the id space: its crawler is the member closest to it."""
    return hashlib.sha1(f"host:{host}".encode()).digest()


def speaks_for(publisher: str, other: str, url: str) -> bool:
    """Whether ``publisher`` (hex id) rather than ``other`` speaks for ``url`` (its title,
    snippet and weights) when both name it: the one closer to the URL's host key, as the
    host's crawler is; a stranger naming someone else's page cannot take it over."""
    host = url.split("/", 3)[2] if "://" in url else url
    key = int.from_bytes(host_key(host), "big")
    try:
        return int(publisher, 16) ^ key < int(other, 16) ^ key
    except ValueError:
        return False


# --- shard records and batches ----------------------------------------------------------
# Every term's shard is its own record (kind SHARD_RECORD_KIND, key = the term), signed by
# its publisher in a group with the other terms bound for the same holders
# (``dht.record_groups``: one signature over a hash tree, each record then provable alone)
# and stored and served by holders byte for byte: a querier checks the publisher's
# signature on each copy before it uses a byte of it, so a holder can withhold a copy but
# never forge, alter or garble one without being found out.
SHARD_RECORD_KIND = "shard/5"  # /5: grouped records; /4 (a signature each) is refused
# A push is a signed record of the publisher's too (proves whose quota it uses), carrying
# its groups zstd-compressed: per group the count of records (u8) and their signature,
# then each record's body prefixed by its length (u32, big-endian).
SHARD_KIND = "shards/5"
_LENGTH = struct.Struct(">I")
_GROUP = struct.Struct(f">B{SIGNATURE_BYTES}s")
# Records signed at once. The signature is 64 random bytes a group: shared by 16 terms it
# costs each 4 B on the wire (not 64), while the path a holder serves with each copy grows
# by 32 B a doubling (4 x 32 B at 16). Measured on one node's 47,477 terms (java + pandas,
# a holder's 3/8 share in batches of 5,000): 168 B a term, 99 B without its signature.
GROUP_TERMS = 16
# A term record: the shard's JSON, the term, and the record's fixed ~130 bytes and proof.
MAX_SHARD_RECORD_BYTES = MAX_SHARD_BYTES + 4 * MAX_TERM_CHARS + 256 + PROOF_BYTES
# Publishers of one term a holder keeps whole, serves and a querier verifies (~70 us each,
# then remembered): the strongest by the pages they claim to have with the term (df), so
# what a holder stores and a lookup carries for a word every node publishes stays bounded
# as publishers grow (issue #13). Where it binds it costs quality, as a cut publisher's
# pages lose their shard weights for that word: bench/publish_scale.py, 32 publishers of
# 1,000 pages, MRR@10 .624 every copy whole, .427 with 16 whole + summaries, .289 with 16
# alone. So the bound is a cap, not a tuning: at 64 no network measured so far loses a
# copy, and a lookup of a common word stays at 64 records however many publish it.
PUBLISHERS_PER_TERM = 64
MAX_COPIES_PER_TERM = PUBLISHERS_PER_TERM
# Beyond those, a holder keeps and serves each further publisher's summary of the term (df
# per field, N, averages: its shard without postings, ~60 B), the strongest this many, so
# the query's owner choice still sees a publisher that has every word moderately (CORI
# over summaries) and its statistics count the whole network. Unsigned (the holder cut
# the postings off): a querier takes one only where two holders agree (``peers``).
SUMMARIES_PER_TERM = 256
SUMMARIES_KEY = "~summaries"  # a lookup answer's key for them (never a term: terms are words)
_DF = re.compile(rb"\[(\d{1,12}),")
_HEX = re.compile(r"[0-9a-f]{40}")  # a shard payload's first item (TermShard.to_json)


@dataclass(frozen=True, slots=True)
class HeldRecord:
    term: str
    record: bytes  # as its publisher signed it (``dht.record_groups``' layout)
    expires_at: float
    # The df its publisher claims (its pages with the term): which publishers a holder keeps
    # of a popular term. Read, not verified: a publisher can only overstate its own.
    strength: int = 0


@dataclass(frozen=True, slots=True)
class ShardGroup:
    """Term records signed at once, as a push carries them: a holder proves each alone."""

    terms: tuple[str, ...]
    bodies: tuple[bytes, ...]  # ``dht.records.record_body`` of each term's shard
    signature: bytes
    strengths: tuple[int, ...]

    def held(self, expires_at: float) -> list[HeldRecord]:
        """The records as a holder keeps them (this node's own share)."""
        proven = prove_group(self.bodies, self.signature)
        return [
            HeldRecord(t, r, expires_at, df)
            for t, r, df in zip(self.terms, proven, self.strengths, strict=True)
        ]


def shard_body(
    identity: Identity, term: str, payload: bytes, issued_at: float, expires_at: float
) -> bytes:
    """One term's record body (``payload``: ``TermShard.to_json`` as JSON, or anything else
    for a test that pushes a bad shard)."""
    return record_body(
        kind=SHARD_RECORD_KIND,
        key=term.encode("utf-8"),
        publisher=identity.public_key,
        issued_at=issued_at,
        expires_at=expires_at,
        payload=payload,
    )


def group_bodies(
    identity: Identity, terms: Sequence[str], bodies: Sequence[bytes], strengths: Sequence[int]
) -> list[ShardGroup]:
    """Bodies signed ``GROUP_TERMS`` at a time, in order."""
    return [
        ShardGroup(
            tuple(terms[i : i + GROUP_TERMS]),
            tuple(bodies[i : i + GROUP_TERMS]),
            sign_group(identity, bodies[i : i + GROUP_TERMS]),
            tuple(strengths[i : i + GROUP_TERMS]),
        )
        for i in range(0, len(bodies), GROUP_TERMS)
    ]


def sign_groups(
    identity: Identity, shards: Sequence[TermShard], expires_at: float
) -> list[ShardGroup]:
    """Shards bound for the same holders, signed in groups (once for all those holders)."""
    now = time.time()
    bodies = [
        shard_body(identity, s.term, orjson.dumps(s.to_json()), now, expires_at) for s in shards
    ]
    return group_bodies(identity, [s.term for s in shards], bodies, [s.df for s in shards])


def sign_held(
    identity: Identity, shards: Sequence[TermShard], expires_at: float
) -> list[HeldRecord]:
    """Shards signed as a holder keeps them (for tests and tools)."""
    return [h for g in sign_groups(identity, shards, expires_at) for h in g.held(expires_at)]


def sign_shard(
    identity: Identity, term: str, shard_json: object, issued_at: float, expires_at: float
) -> bytes:
    """One term's shard as a holder serves it, signed alone (for tests and tools)."""
    body = shard_body(identity, term, orjson.dumps(shard_json), issued_at, expires_at)
    return prove_group([body], sign_group(identity, [body]))[0]


# A push's envelope is made once per holder and batch and read once: a slower level is
# worth it. Small corpus, every term of 3,399 pages in batches of 5,000: level 3 7.09 MB
# (0.23 s), 9 5.89 MB (0.76 s), 19 5.07 MB (37 s), when its records' signatures were 2.8 MB.
BATCH_COMPRESSION_LEVEL = 9


def sign_batch(identity: Identity, groups: Sequence[ShardGroup], expires_at: float) -> bytes:
    """A push: the publisher's signed groups in one signed, compressed envelope."""
    packed = b"".join(
        _GROUP.pack(len(g.bodies), g.signature)
        + b"".join(_LENGTH.pack(len(b)) + b for b in g.bodies)
        for g in groups
    )
    return sign_record(
        identity,
        kind=SHARD_KIND,
        key=b"batch",
        payload=compress(packed, BATCH_COMPRESSION_LEVEL),
        issued_at=time.time(),
        expires_at=expires_at,
    )


def sign_push(identity: Identity, items: Iterable[tuple[str, object]], expires_at: float) -> bytes:
    """A push of (term, shard JSON) pairs, grouped and enveloped (for tests and tools)."""
    now = time.time()
    terms, bodies = [], []
    for term, value in items:
        terms.append(term)
        bodies.append(shard_body(identity, term, orjson.dumps(value), now, expires_at))
    groups = group_bodies(identity, terms, bodies, [0] * len(terms))
    return sign_batch(identity, groups, expires_at)


def shard_summary(raw: bytes) -> bytes | None:
    """A held record's shard without its postings (what a holder serves for a publisher
    beyond ``PUBLISHERS_PER_TERM``), or None if its payload is not a shard's shape. The
    record is not verified here: only a copy two holders agree on is used."""
    try:
        df, n_docs, field_df, _postings, avgdl = orjson.loads(decode_proven(raw).payload)
    except (DhtError, ValueError, TypeError):
        return None
    return orjson.dumps([df, n_docs, field_df, [], avgdl])


def decode_summaries(raw: Any, wanted: Collection[str]) -> dict[str, dict[str, TermShard]]:
    """A lookup answer's summaries (term -> publisher -> shard without postings), parsed
    within bounds by ``TermShard.from_json``; anything malformed is dropped alone."""
    found: dict[str, dict[str, TermShard]] = {}
    if not isinstance(raw, dict) or not isinstance(raw.get(SUMMARIES_KEY), dict):
        return found
    for term, by_publisher in raw[SUMMARIES_KEY].items():
        if term not in wanted or not isinstance(by_publisher, dict):
            continue
        kept = found[term] = {}
        for publisher, data in itertools.islice(by_publisher.items(), SUMMARIES_PER_TERM):
            if not (
                isinstance(publisher, str) and len(publisher) == 40 and _HEX.fullmatch(publisher)
            ):
                continue
            try:
                shard = TermShard.from_json(term, data)
            except (TypeError, ValueError):
                continue
            kept[publisher] = replace(shard, postings=())
    return found


def claimed_df(payload: bytes) -> int:
    """The df a shard payload starts with (``TermShard.to_json``), 0 if it does not: read
    without parsing the shard, as holders never parse what they hold."""
    found = _DF.match(payload)
    return int(found.group(1)) if found else 0


@dataclass(frozen=True, slots=True)
class PushedBatch:
    publisher: str  # hex node id, proven by the envelope's signature
    records: list[HeldRecord]
    expires_at: float


def _term_records(packed: bytes, publisher: bytes, max_expiry: float) -> list[HeldRecord]:
    """The well-formed term records of a batch, each proven alone from its group. Not
    verified here (queriers verify every copy they use; a bad signature hurts only the
    publisher that made it), but a record must be laid out right, name a usable term, be
    the envelope signer's and fit the limits; anything else is skipped (its group's other
    records still prove: the tree is over the bytes sent). A batch with no usable record
    is refused."""
    records: list[HeldRecord] = []
    offset = 0
    while offset + _GROUP.size <= len(packed):
        count, signature = _GROUP.unpack_from(packed, offset)
        offset += _GROUP.size
        bodies = []
        for _ in range(count):
            if offset + _LENGTH.size > len(packed):
                break
            (size,) = _LENGTH.unpack_from(packed, offset)
            offset += _LENGTH.size
            bodies.append(packed[offset : offset + size])
            offset += size
        if len(bodies) != count or not count or len(bodies[-1]) != size:
            break  # truncated: nothing after it can be framed
        for body, proven in zip(bodies, prove_group(bodies, signature), strict=True):
            if len(proven) > MAX_SHARD_RECORD_BYTES:
                continue
            try:
                record = decode_body(body, signature)
                term = record.key.decode("utf-8")
            except (DhtError, UnicodeDecodeError):
                continue
            if (
                record.kind == SHARD_RECORD_KIND
                and record.publisher == publisher
                and 0 < len(term) <= MAX_TERM_CHARS
                and "," not in term
            ):
                records.append(
                    HeldRecord(
                        term,
                        proven,
                        min(record.expires_at, max_expiry),
                        claimed_df(record.payload),
                    )
                )
    if not records:
        raise ValueError("no shard records in the batch")
    return records


def open_batch(body: bytes, *, max_ttl: float) -> PushedBatch:
    """A pushed batch verified and decoded within the limits; raises ``dht.DhtError`` for
    a bad envelope and ValueError for a wrong kind or no usable record."""
    now = time.time()
    envelope = verify_record(body, now=now, max_size=MAX_PUSH_BYTES)
    if envelope.kind != SHARD_KIND:
        raise ValueError(f"not a {SHARD_KIND} batch")
    expires_at = min(envelope.expires_at, now + max_ttl)
    packed = decompress(envelope.payload, MAX_PUSH_DECODED)
    records = _term_records(packed, envelope.publisher, expires_at)
    return PushedBatch(envelope.publisher_id.hex(), records, expires_at)


def encode_lookup(
    found: Mapping[str, Sequence[bytes]],
    summaries: Mapping[str, Mapping[str, bytes]] | None = None,
) -> bytes:
    """A holder's answer to a lookup: ``{term: [base64 record, ...]}``, records as signed,
    and under ``SUMMARIES_KEY`` the further publishers' summaries (``shard_summary``)."""
    answer: dict[str, Any] = {
        term: [base64.b64encode(r).decode("ascii") for r in records[:MAX_COPIES_PER_TERM]]
        for term, records in found.items()
    }
    if summaries:
        answer[SUMMARIES_KEY] = {
            term: {p: orjson.loads(s) for p, s in by_publisher.items()}
            for term, by_publisher in summaries.items()
            if by_publisher
        }
    return orjson.dumps(answer)


@dataclass(frozen=True, slots=True)
class ShardCopy:
    """One verified copy of a publisher's shard of a term."""

    publisher: str  # hex node id, proven by the record's signature
    shard: TermShard
    issued_at: float


def verify_shard(
    term: str, raw: bytes, now: float, verifier: VerifiedRecords | None = None
) -> ShardCopy:
    """A term record checked before use: its signature (once per ``verifier``), validity
    window, kind and term, then its shard parsed within bounds. Raises ``dht.DhtError`` or
    ValueError."""
    if not is_proven(raw):
        raise ValueError("a term record signed alone (shard/4), not in a group")
    if verifier is None:
        record = verify_proven(raw, now=now, max_size=MAX_SHARD_RECORD_BYTES)
    else:
        record = verifier.verify(raw, now=now, max_size=MAX_SHARD_RECORD_BYTES)
    if record.kind != SHARD_RECORD_KIND or record.key != term.encode("utf-8"):
        raise ValueError("a record of another kind or term")
    shard = TermShard.from_json(term, orjson.loads(record.payload))
    return ShardCopy(record.publisher_id.hex(), shard, record.issued_at)


def verify_copies(
    term: str, records: Iterable[bytes], now: float, verifier: VerifiedRecords | None = None
) -> list[ShardCopy]:
    """The copies that verify, one per publisher (the newest); the others are dropped one
    by one, never the whole answer."""
    return _newest(
        _checked(term, raw, now, verifier) for raw in itertools.islice(records, MAX_COPIES_PER_TERM)
    )


def _checked(
    term: str, raw: bytes, now: float, verifier: VerifiedRecords | None
) -> ShardCopy | None:
    try:
        return verify_shard(term, raw, now, verifier)
    except (DhtError, TypeError, ValueError):
        return None


def _newest(copies: Iterable[ShardCopy | None]) -> list[ShardCopy]:
    newest: dict[str, ShardCopy] = {}
    for copy in copies:
        if copy is None:
            continue
        known = newest.get(copy.publisher)
        if known is None or copy.issued_at > known.issued_at:
            newest[copy.publisher] = copy
    return list(newest.values())


def decode_lookup(raw: Any, wanted: Collection[str]) -> dict[str, list[bytes]]:
    """A holder's answer to a lookup as records, not yet verified: terms not asked and
    copies that are not base64 of a record's size are dropped."""
    found: dict[str, list[bytes]] = {}
    if not isinstance(raw, dict):
        return found
    for term, copies in raw.items():
        if term not in wanted or not isinstance(copies, list):
            continue
        records = found[term] = []
        for copy in copies[:MAX_COPIES_PER_TERM]:
            if isinstance(copy, str) and len(copy) <= 2 * MAX_SHARD_RECORD_BYTES:
                try:
                    records.append(base64.b64decode(copy, validate=True))
                except ValueError:
                    continue
    return found


def verify_lookups(
    answers: Mapping[str, Mapping[str, Sequence[bytes]]],
    now: float,
    verifier: VerifiedRecords | None = None,
    seen: dict[tuple[str, bytes], ShardCopy | None] | None = None,
) -> dict[str, dict[str, list[ShardCopy]]]:
    """Several holders' answers (holder -> term -> records) verified together: a record
    two holders served byte for byte is verified and parsed once, and both get the copy
    (across calls too, given the same ``seen``: one query's answers as they arrive)."""
    done: dict[tuple[str, bytes], ShardCopy | None] = {} if seen is None else seen

    def once(term: str, raw: bytes) -> ShardCopy | None:
        key = (term, raw)
        if key not in done:
            done[key] = _checked(term, raw, now, verifier)
        return done[key]

    return {
        holder: {
            term: _newest(once(term, raw) for raw in itertools.islice(records, MAX_COPIES_PER_TERM))
            for term, records in found.items()
        }
        for holder, found in answers.items()
    }


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
    """The body of a ``PATH_SEARCH`` answer (without a count of the owner's matches: a
    querier counts from the shards, and counting cost an owner up to 0.4 ms an answer)."""
    return {
        "query": q,
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
    for r in raw[:MAX_ANSWER_ROWS] if isinstance(raw, list) else []:
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
