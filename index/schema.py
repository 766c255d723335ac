"""The tantivy schema and the one text analyzer shared by documents, queries and shards."""

from __future__ import annotations

import tantivy
from yarl import URL

ANALYZER = "rhizome_en"
MAX_TOKEN_CHARS = 40

# Fields searched when the query names none, with their BM25 boosts. Title and inbound
# anchor text are what other people call the page: strong evidence for known-item queries.
FIELD_BOOSTS: dict[str, float] = {
    "title": 3.0,
    "anchor": 2.0,
    "description": 1.5,
    "body": 1.0,
    "url_words": 1.0,
}
TEXT_FIELDS = tuple(FIELD_BOOSTS)
# The fields a term shard and an owner's weights describe, in their wire order.
SHARD_FIELDS = ("title", "body", "anchor", "description", "url_words")


def build_analyzer() -> tantivy.TextAnalyzer:
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
        .filter(tantivy.Filter.remove_long(MAX_TOKEN_CHARS))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def build_schema() -> tantivy.Schema:
    b = tantivy.SchemaBuilder()
    b.add_text_field("url", stored=True, tokenizer_name="raw")
    b.add_text_field("canonical", stored=True, tokenizer_name="raw")
    b.add_text_field("host", stored=True, tokenizer_name="raw")
    b.add_text_field("site", stored=False, tokenizer_name="raw")  # host and parent domains
    b.add_text_field("title", stored=True, tokenizer_name=ANALYZER)
    b.add_text_field("description", stored=True, tokenizer_name=ANALYZER)
    b.add_text_field("body", stored=True, tokenizer_name=ANALYZER)
    b.add_text_field("anchor", stored=False, tokenizer_name=ANALYZER)
    # The anchor text is not kept, but its length is: federated BM25 normalises by it.
    b.add_unsigned_field("anchor_tokens", stored=True, indexed=False)
    b.add_text_field("url_words", stored=False, tokenizer_name=ANALYZER)
    b.add_text_field("language", stored=True, tokenizer_name="raw")
    b.add_integer_field("fetched", stored=True, indexed=True, fast=True)
    # The page's static-embedding vector (float16), for the semantic re-rank (semantic.py).
    b.add_bytes_field("embedding", stored=True)
    return b.build()


def site_terms(host: str) -> list[str]:
    """``docs.python.org:443`` → host, host without port, and each parent domain."""
    terms = [host]
    bare = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if bare != host:
        terms.append(bare)
    parts = bare.split(".")
    if not bare.replace(".", "").isdigit():
        for i in range(1, len(parts) - 1):
            terms.append(".".join(parts[i:]))
    return terms


def url_words(url: str) -> str:
    """The words of a URL's host and path, indexed so that a URL's parts are searchable."""
    try:
        u = URL(url)
    except ValueError:
        return ""
    return f"{u.host or ''} {u.path.replace('/', ' ').replace('.', ' ').replace('_', ' ')}"
