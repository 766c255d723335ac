"""Term shards and page weights read out of the tantivy index (on reader threads).

tantivy scores a query term as the sum over the searched fields of boost x idf_field x
tf-norm. A shard therefore carries, per field, the term's local document frequency, and for
each of its top-K pages the IDF-free part (boost x tf-norm) per field and the page's field
lengths; and the publisher's average field lengths (``shard_codec`` is its wire form, and
``bm25`` the arithmetic a querying node re-scores it with).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, NamedTuple

import tantivy

from .bm25 import FieldLengths, FieldWeights, bm25_idf, quantized_length
from .query import PROXIMITY_SLOP, Unit, near_key, unit_key
from .schema import FIELD_BOOSTS, SHARD_FIELDS, url_words
from .shard_codec import MAX_TERM_CHARS, PageWeights, Posting, TermShard

DEFAULT_TOP_K = 50
WEIGHT_DECIMALS = 4
AVGDL_PROBES = 8
_TOKEN = re.compile(r"[^\W_]+")  # what the simple tokenizer calls a token


def token_count(text: str) -> int:
    """Tokens in ``text`` as the simple tokenizer splits it."""
    return len(_TOKEN.findall(text))


def doc_lengths(doc: tantivy.Document) -> FieldLengths:
    """Each field's length as tantivy's BM25 sees it, from the stored document (the anchor
    text is not stored; its token count is)."""
    url = str(doc.get_first("url") or "")
    counts = {
        "title": token_count(str(doc.get_first("title") or "")),
        "body": token_count(str(doc.get_first("body") or "")),
        "description": token_count(str(doc.get_first("description") or "")),
        "url_words": token_count(url_words(url)),
        "anchor": int(doc.get_first("anchor_tokens") or 0),
    }
    return tuple(quantized_length(counts[f]) for f in SHARD_FIELDS)


LengthsOf = Callable[[tantivy.Document], FieldLengths]


def field_averages(searcher: tantivy.Searcher, schema: tantivy.Schema) -> tuple[float, ...]:
    """tantivy's own average length of each field (what its BM25 divides by), read from
    the explanation of one match per field."""
    out = []
    for field in SHARD_FIELDS:
        average = 0.0
        for tries, (term, _count) in enumerate(searcher.terms_with_prefix(field, "")):
            query = tantivy.Query.term_query(schema, field, term)
            hits = searcher.search(query, limit=1).hits
            if hits:  # (a term may live only in deleted documents)
                average = _find_avgdl(json.loads(query.explain(searcher, hits[0][1]).to_json()))
            if hits or tries >= AVGDL_PROBES:
                break
        out.append(average)
    return tuple(out)


def _find_avgdl(node: Any) -> float:
    if isinstance(node, dict):
        if str(node.get("description", "")).startswith("avgdl"):
            return float(node.get("value", 0.0))
        return _find_avgdl(node.get("details", []))
    if isinstance(node, list):
        for child in node:
            found = _find_avgdl(child)
            if found:
                return found
    return 0.0


def all_terms(searcher: tantivy.Searcher) -> set[str]:
    terms: set[str] = set()
    for field in SHARD_FIELDS:
        terms.update(t for t, _count in searcher.terms_with_prefix(field, ""))
    return {t for t in terms if 0 < len(t) <= MAX_TERM_CHARS}


def _field_hits(
    searcher: tantivy.Searcher,
    schema: tantivy.Schema,
    unit: Unit,
    n_docs: int,
    limit: int,
    restrict: tantivy.Query | None = None,
    slop: int = 0,
    digits: int | None = None,
    among: Collection[tuple[int, int]] | None = None,
    dfs_of: Callable[[str, str], int] | None = None,
) -> tuple[list[int], dict[tuple[int, int], list[float]], dict[tuple[int, int], Any], bool]:
    """Per field: df, and boost x tf-norm of the unit's best pages (within ``restrict``,
    whose pages' addresses are ``among`` when known); and whether those are all its pages.
    ``dfs_of(field, token)``: the searcher's doc_freq, or a memo of it.

    A unit is a term or a phrase; tantivy scores a phrase like a term whose IDF is the sum
    of its tokens' IDFs and whose frequency is the phrase's, so the same division by the
    IDF leaves the phrase's boost x tf-norm.
    """
    field_df: list[int] = []
    weights: dict[tuple[int, int], list[float]] = {}
    addresses: dict[tuple[int, int], Any] = {}
    complete = True  # every field's pages were all found (no list cut at ``limit``)
    df_of = dfs_of or searcher.doc_freq
    for i, field in enumerate(SHARD_FIELDS):
        dfs = [int(df_of(field, token)) for token in unit]
        field_df.append(min(dfs))
        if not min(dfs):
            continue
        idf = sum(bm25_idf(df, n_docs) for df in dfs) or 1e-6
        query = (
            tantivy.Query.term_query(schema, field, unit[0])
            if len(unit) == 1
            else tantivy.Query.phrase_query(schema, field, list(unit), slop)
        )
        keep = among if len(unit) == 1 and min(dfs) <= UNRESTRICTED_DF else None
        if keep is not None:
            # df counts deleted pages too, so every live page of the term is in reach.
            hits = searcher.search(query, limit=min(dfs), count=False).hits
        else:
            if restrict is not None:
                query = tantivy.Query.boolean_query(
                    [(tantivy.Occur.Must, query), (tantivy.Occur.Must, restrict)]
                )
            hits = searcher.search(query, limit=limit, count=False).hits
            if len(hits) >= limit:
                complete = False
        for score, address in hits:
            key = (address.segment_ord, address.doc)
            if keep is not None and key not in keep:
                continue
            w = weights.setdefault(key, [0.0] * len(SHARD_FIELDS))
            # Rounded (shards: four decimals are plenty for ranking, and shorter on the
            # wire) once here, where it is not 0: rounding every field of every posting
            # was a quarter of building a shard.
            weight = FIELD_BOOSTS[field] * float(score) / idf
            w[i] = weight if digits is None else round(weight, digits)
            addresses[key] = address
    return field_df, weights, addresses, complete


def build_shards(
    searcher: tantivy.Searcher,
    schema: tantivy.Schema,
    terms: Iterable[str],
    *,
    top_k: int = DEFAULT_TOP_K,
    lengths_of: LengthsOf = doc_lengths,
) -> list[TermShard]:
    """Shards for ``terms`` (already analysed). Runs on a thread: tantivy releases the GIL."""
    n_docs = searcher.num_docs
    if n_docs == 0:
        return []
    docs: dict[tuple[int, int], tuple[str, str, FieldLengths]] = {}
    shards: list[TermShard] = []
    avgdl = field_averages(searcher, schema)
    for term in terms:
        field_df, weights, addresses, complete = _field_hits(
            searcher, schema, (term,), n_docs, top_k, digits=WEIGHT_DECIMALS
        )
        if not weights:
            continue
        # Pages with the term in any field: those found, when no field's list was cut
        # (most terms are rare; a count query per term was a tenth of the build).
        df = len(weights) if complete else _any_field_count(searcher, schema, term)
        best = sorted(weights, key=lambda k: sum(weights[k]), reverse=True)[:top_k]
        postings = []
        for key in best:
            fields = docs.get(key)
            if fields is None:
                doc = searcher.doc(addresses[key])
                fields = docs[key] = (
                    str(doc.get_first("url") or ""),
                    str(doc.get_first("title") or ""),
                    lengths_of(doc),
                )
            postings.append(Posting(fields[0], fields[1], tuple(weights[key]), fields[2]))
        shards.append(
            TermShard(
                term=term,
                df=max(df, 1),
                n_docs=n_docs,
                field_df=tuple(field_df),
                postings=tuple(postings),
                avgdl=tuple(round(a, 3) for a in avgdl),
            )
        )
    return shards


class LoadedPage(NamedTuple):
    """A stored page a search already loaded, and where it is (for the same searcher)."""

    address: Any  # tantivy.DocAddress
    doc: tantivy.Document


# A term in at most this many of a field's pages is searched in the whole index and its
# hits kept by address: ~3-6 us for a rare term, against ~30 us for any search restricted
# to the candidates' URLs (a disjunction of their url terms, rebuilt per search); at df
# 124 the two cost the same (timed in session 13 over 300 tune queries on the large
# corpus' 12,743-page java site). Most of a query's (term, field) pairs are rare, and an
# owner searches ~35 of them an answer.
UNRESTRICTED_DF = 64


def term_weights(
    searcher: tantivy.Searcher,
    schema: tantivy.Schema,
    urls: list[str],
    units: list[Unit],
    averages: tuple[float, ...],
    lengths_of: LengthsOf = doc_lengths,
    near: Unit = (),
    loaded: Mapping[str, LoadedPage] | None = None,
) -> PageWeights:
    """Per-field weights of each unit in each of ``urls``, as in the shards, so a querying
    node can score this node's pages exactly with global statistics, phrases included;
    and of the query's proximity phrase ``near`` (a sloppy phrase, keyed ``near_key``).
    ``loaded``: pages of ``urls`` this ``searcher`` already loaded (not loaded again)."""
    n_docs = searcher.num_docs
    out: dict[str, dict[str, FieldWeights]] = {u: {} for u in urls}
    lengths: dict[str, FieldLengths] = {}
    if not urls or not n_docs:
        return PageWeights(out, lengths, averages)
    url_of: dict[tuple[int, int], str] = {}
    for url in out:
        page = loaded.get(url) if loaded is not None else None
        if page is None:
            found = searcher.search(tantivy.Query.term_query(schema, "url", url), limit=1).hits
            if not found:
                continue
            page = LoadedPage(found[0][1], searcher.doc(found[0][1]))
        url_of[(page.address.segment_ord, page.address.doc)] = url
        lengths[url] = lengths_of(page.doc)
    # A disjunction of url terms, not a term_set_query: that one scans the url field's
    # whole term dictionary on every search (0.3 ms each, 15 searches a query).
    only = tantivy.Query.const_score_query(
        tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(schema, "url", u)) for u in out]
        ),
        0.0,
    )
    wanted = [(unit, unit_key(unit), 0) for unit in units]
    if near:
        wanted.append((near, near_key(near), PROXIMITY_SLOP))
    # The proximity phrase and the query's phrases repeat its terms: each (field, token)'s
    # df asked of tantivy once (~110 asks an answer before, half of them repeats).
    dfs: dict[tuple[str, str], int] = {}

    def df_of(field: str, token: str) -> int:
        found = dfs.get((field, token))
        if found is None:
            found = dfs[(field, token)] = int(searcher.doc_freq(field, token))
        return found

    for unit, name, slop in wanted:
        _df, weights, _addresses, _all = _field_hits(
            searcher, schema, unit, n_docs, len(out), only, slop, among=url_of.keys(), dfs_of=df_of
        )
        for key, w in weights.items():
            owned = url_of.get(key)
            if owned is not None:
                out[owned][name] = tuple(w)
    return PageWeights(out, lengths, averages)


def _any_field_count(searcher: tantivy.Searcher, schema: tantivy.Schema, term: str) -> int:
    query = tantivy.Query.boolean_query(
        [(tantivy.Occur.Should, tantivy.Query.term_query(schema, f, term)) for f in SHARD_FIELDS]
    )
    return int(getattr(searcher.search(query, limit=1, count=True), "count", 0))
