"""Judged known-item query sets, written as descriptions, for the two shared corpora.

    python3 bench/judged/build_queries.py [--corpus small|large|both]
        [--small-dir /tmp/rhizome-corpus] [--large-dir /tmp/rhizome-large] [--workers 2]

Reads the corpus files on disk (``/work/shared/corpus/fetch.sh /tmp/rhizome-corpus`` and
``fetch-large.sh /tmp/rhizome-large`` make them) and writes ``bench/judged/small.jsonl`` and
``bench/judged/large.jsonl``, one JSON object a line::

    {"q": "define a new table", "url": "http://127.0.0.13:8080/sql-createtable.html",
     "split": "heldout", "site": "postgres", "source": "index:sql-commands.html"}

Where the queries come from (a query describes its answer page in other words than its title):

- ``index:<page>``: the one-line summaries that the docs give of their own pages in their index,
  TOC and summary pages: table rows (Python/Django module index, Qt class tables, cppreference
  ``t-dsc`` rows, pandas/SciPy/SQLAlchemy autosummary tables, GHC flag tables, Doxygen class
  lists), definition lists (Git's command list, PostgreSQL's reference "CREATE TABLE — define a
  new table"), list items with a separator (SQLite's docs.html "→ ..."), and Javadoc / rustdoc
  summary grids (name cell followed by a description cell). The answer is the page the entry
  links to (fragment dropped); the described item's name (the link text) is removed.
- ``first:<heading>``: where a page has no such summary, the first sentence of the first
  paragraph of the page or of one of its sections, with the page's / section's own name (its
  heading, and identifiers of it) removed; cut to 20 words at a clause boundary if longer.

Filters, in order: 3–20 words and at least 3 content words; the answer must be an existing
HTML file of the site that is reachable by links from the site's entry page (as a crawler
would find it); near-exact titles are dropped (more than half of the query's content words
appear in the answer page's title or the item's name, ignoring words found in the titles of
more than 20% of the site's pages, such as "Python" or "documentation"); a source sentence
that starts paragraphs on two or more pages is dropped (boilerplate, several plausible
answers); queries are deduplicated, and a query text that points at two or more different
pages is dropped altogether (several plausible answers). At most 3 queries per answer page
(index summaries first), and on the large corpus at most ``--per-site`` (500) queries a site,
so that no single site dominates.

Split: ``sha1(q + url)`` even → ``tune``, odd → ``heldout``. Deterministic: the same corpus
gives the same files. Never look at the held-out half while tuning a ranker.

URLs are the pages as served by ``serve.sh``: sites in name order on 127.0.0.11–15:8080
(small) or 127.0.1.1–12:8080 (large); a directory's ``index.html`` is written out in full.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import posixpath
import re
import sys
import urllib.parse
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from selectolax.lexbor import LexborHTMLParser, LexborNode

HERE = Path(__file__).resolve().parent
CORPORA = {
    "small": ("/tmp/rhizome-corpus", "127.0.0", 11),
    "large": ("/tmp/rhizome-large", "127.0.1", 1),
}
STOPWORDS = frozenset(
    """a an and are as at be been being by can for from has have if in into is it its of on or
    that the their them then there these this those to was were which while will with within
    you your it's not no but all any each how what when where who why do does one other such
    than so also may more most some only used use using new given""".split()
)
WORD = re.compile(r"[A-Za-z0-9_]+(?:['’][a-z]+)?")
SEPARATORS = " \t\n—–-:→|,;.·•"
SKIP_ANCESTOR_CLASSES = re.compile(
    r"admonition|note|warning|caution|important|tip|seealso|versionadded|versionchanged|"
    r"deprecated|navheader|navfooter|sidebar|sphinxsidebar|related|footer|header|toc|"
    r"breadcrumb|navigation|copyright|highlight|example|synopsis|docs-sidebar"
)
SKIP_SENTENCE = re.compile(
    r"^(new in|changed in|deprecated|see |see:|note|warning|this page|prev|next|copyright|"
    r"for example|e\.g\.|example|source code:|returns?:|parameters|\*|table of contents|"
    r"up$|home$|version|last updated)",
    re.I,
)
SECTION_NUMBER = re.compile(r"^\s*(?:[A-Z]\.|\d+\.|[IVX]+\.)(?:\d+\.)*\s*")
MAX_PER_PAGE = 3
FIRST_MIN = 150
# Not answers: change logs and release notes (they mention everything, so a description of a
# feature has several plausible pages), generated indexes, search pages, highlighted sources.
NOT_ANSWER = re.compile(
    r"(^|/)(whatsnew|releases?|releaselog|changes|changelog|news|_modules|_sources|"
    r"index-files)(/|\.|-|_)|(^|/)release-\d|genindex|bookindex|search\.html|"
    r"modindex|deprecated-list|constant-values|(^|/)(src|source)/",
    re.I,
)
# Not index pages: generated back-of-book indexes (entries are words, not descriptions).
NOT_INDEX = re.compile(r"genindex|bookindex|index-files/|(^|/)(whatsnew|releases?|changes)/")
SKIP_HEADING = re.compile(
    r"^(notes?|tip|warning|caution|important|see also|examples?|"
    r"footnotes|parameters|returns|raises|options|synopsis)$",
    re.I,
)


# ---------------------------------------------------------------------------------------------
# Parsing one page (runs in worker processes)


def _text(node: LexborNode | None) -> str:
    if node is None:
        return ""
    return " ".join(node.text(deep=True, separator=" ").split())


def _skipped(node: LexborNode) -> bool:
    """Is the node inside an admonition, navigation bar, code example or similar?"""
    cur: LexborNode | None = node
    depth = 0
    while cur is not None and depth < 12:
        if cur.tag in ("pre", "code", "nav", "header", "footer", "blockquote", "table", "aside"):
            return True
        cls = (cur.attributes.get("class") or "") + " " + (cur.attributes.get("id") or "")
        if cls.strip() and SKIP_ANCESTOR_CLASSES.search(cls.lower()):
            return True
        cur = cur.parent
        depth += 1
    return False


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    # A sentence ends at ". " followed by a capital, or at the end.
    m = re.search(r"(?<![A-Z]\.)(?<!\be\.g)(?<!\bi\.e)(?<!etc)[.!?](?=\s+[A-Z(\"'])", text)
    return text[: m.start()] if m else text.rstrip(".")


def _resolve(site_root: Path, page_rel: str, href: str) -> str | None:
    """The site-relative path of an existing HTML file ``href`` points at, or None."""
    href = href.strip()
    if not href or href.startswith(("#", "mailto:", "javascript:", "data:")):
        return None
    parts = urllib.parse.urlsplit(href)
    if parts.scheme or parts.netloc:
        return None
    path = urllib.parse.unquote(parts.path)
    if not path:
        return None
    if path.startswith("/"):
        joined = path.lstrip("/")
    else:
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(page_rel), path))
    if joined.startswith("..") or joined == ".":
        return None
    if path.endswith("/") or joined == "":
        joined = posixpath.join(joined, "index.html")
    if not joined.endswith((".html", ".htm")):
        cand = site_root / joined
        if cand.is_dir() and (cand / "index.html").is_file():
            return posixpath.join(joined, "index.html")
        return None
    return joined if (site_root / joined).is_file() else None


def _desc_cell_after(cells: list[LexborNode], link: LexborNode) -> str:
    found = False
    for cell in cells:
        if not found:
            if link.mem_id == cell.mem_id or _contains(cell, link):
                found = True
            continue
        t = _text(cell)
        if len(t.split()) >= 3:
            return t
    return ""


def _contains(ancestor: LexborNode, node: LexborNode) -> bool:
    cur: LexborNode | None = node
    while cur is not None:
        if cur.mem_id == ancestor.mem_id:
            return True
        cur = cur.parent
    return False


def _text_without_nested(node: LexborNode) -> str:
    html = node.html or ""
    cut = re.search(r"<(ul|ol|dl|table|div)\b", html[4:])
    if cut:
        html = html[: cut.start() + 4]
    return _text(LexborHTMLParser(html).body)


def _index_entries(tree: LexborHTMLParser, site_root: Path, rel: str) -> list[tuple[str, str, str]]:
    """(target, item name, description) of the summary entries on the page."""
    out: list[tuple[str, str, str]] = []
    seen_containers: set[int] = set()
    for a in tree.css("a[href]"):
        target = _resolve(site_root, rel, a.attributes.get("href") or "")
        if target is None or target == rel:
            continue
        name = _text(a)
        if not name:
            continue
        container = None
        cur = a.parent
        for _ in range(6):
            if cur is None:
                break
            if cur.tag in ("tr", "li", "dt"):
                container = cur
                break
            cls = cur.attributes.get("class") or ""
            if cur.tag == "div" and re.search(
                r"col-first|col-second|item-left|item-name|member-name|symbol", cls
            ):
                container = cur
                break
            cur = cur.parent
        if container is None or container.mem_id in seen_containers:
            continue
        seen_containers.add(container.mem_id)
        if container.tag == "dt" and (
            container.attributes.get("id") or "sig" in (container.attributes.get("class") or "")
        ):
            continue  # an API signature, not a summary entry
        own_text = _text(container)
        if not own_text.startswith(name[:20]):
            if container.tag != "tr":
                continue
        desc = ""
        if container.tag == "tr":
            cells = [c for c in container.iter() if c.tag in ("td", "th")]
            before = []
            for c in cells:
                if _contains(c, a):
                    break
                before.append(_text(c))
            if any(before):
                continue  # the name is not the row's first cell
            desc = _desc_cell_after(cells, a)
        elif container.tag == "dt":
            own = _text(container)
            rest = own[own.find(name) + len(name) :] if name in own else ""
            desc = rest.strip(SEPARATORS)
            if len(desc.split()) < 3:
                sib = container.next
                while sib is not None and sib.tag not in ("dd", "dt"):
                    sib = sib.next
                if sib is not None and sib.tag == "dd":
                    p = sib.css_first("p")
                    desc = _text(p) if p is not None else _text(sib)
                else:
                    desc = ""
        elif container.tag == "li":
            own = _text_without_nested(container)
            if name in own:
                rest = own[own.find(name) + len(name) :]
                # A separator must follow the name: a plain TOC entry is not a description.
                if rest.strip()[:1] in ("—", "–", "-", ":", "→", "|") or rest.startswith(" - "):
                    desc = rest.strip(SEPARATORS)
        else:  # rustdoc / javadoc grids: the description is a following sibling block
            sib = container.next
            for _ in range(4):
                if sib is None:
                    break
                cls = sib.attributes.get("class") or "" if sib.tag == "div" else ""
                if re.search(r"col-last|item-right|desc|docblock", cls):
                    desc = _text(sib)
                    break
                sib = sib.next
        if desc and " — " not in desc and name != "[source]":
            out.append((target, name, desc))
    return out


def _first_sentences(tree: LexborHTMLParser) -> list[tuple[str, str]]:
    """(heading, first sentence of the first paragraph after it) for the page's headings."""
    body = tree.body
    if body is None:
        return []
    out: list[tuple[str, str]] = []
    heading: str | None = None
    taken = True
    for node in body.traverse(include_text=False):
        tag = node.tag
        if tag in ("h1", "h2", "h3"):
            heading = _text(node).rstrip("¶#").strip()
            taken = bool(SKIP_HEADING.match(SECTION_NUMBER.sub("", heading)))
        elif tag == "p" and not taken and heading:
            if _skipped(node):
                continue
            text = _text(node)
            if len(text.split()) < 5:
                continue
            sentence = _first_sentence(text)
            taken = True
            if SKIP_SENTENCE.match(sentence) or sentence.endswith(":"):
                continue
            out.append((heading, sentence))
    return out[:12]


def parse_page(args: tuple[str, str]) -> dict[str, Any]:
    site_root_s, rel = args
    site_root = Path(site_root_s)
    try:
        data = (site_root / rel).read_bytes()
    except OSError:
        return {"rel": rel, "title": "", "links": [], "entries": [], "firsts": []}
    tree = LexborHTMLParser(data)
    title = _text(tree.css_first("title"))
    links = set()
    for a in tree.css("a[href]"):
        t = _resolve(site_root, rel, a.attributes.get("href") or "")
        if t is not None:
            links.add(t)
    for meta in tree.css("meta[http-equiv]"):  # LilyPond's entry page is a meta refresh
        if (meta.attributes.get("http-equiv") or "").lower() == "refresh":
            m = re.search(
                r"url\s*=\s*['\"]?([^'\"\s>]+)", meta.attributes.get("content") or "", re.I
            )
            t = _resolve(site_root, rel, m.group(1)) if m else None
            if t is not None:
                links.add(t)
    for fr in tree.css("frame[src], iframe[src]"):
        t = _resolve(site_root, rel, fr.attributes.get("src") or "")
        if t is not None:
            links.add(t)
    return {
        "rel": rel,
        "title": title,
        "links": sorted(links),
        "entries": _index_entries(tree, site_root, rel),
        "firsts": _first_sentences(tree),
    }


# ---------------------------------------------------------------------------------------------
# Turning descriptions into queries


def _stem(word: str) -> str:
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    for suffix in ("ies", "es", "s"):
        if w.endswith(suffix) and len(w) > len(suffix) + 2:
            return w[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return w


def content_words(text: str) -> list[str]:
    return [_stem(w) for w in WORD.findall(text) if w.lower() not in STOPWORDS]


def _name_variants(name: str) -> list[str]:
    """The item's name and the identifier-like parts of it (``pandas.DataFrame.abs`` →
    also ``DataFrame.abs``, ``abs``; ``std::sort`` → ``sort``; ``git-add(1)`` → ``git-add``)."""
    name = SECTION_NUMBER.sub("", " ".join(name.split())).strip(" ¶#")
    out = {name}
    bare = re.sub(r"\(.*?\)|<.*?>", "", name).strip()
    out.add(bare)
    for sep in (".", "::", "/"):
        if sep in bare and " " not in bare:
            parts = bare.split(sep)
            for i in range(1, len(parts)):
                out.add(sep.join(parts[i:]))
    for token in bare.split():
        # identifier-like tokens of a multi-word name (CamelCase, snake_case, dotted, ::)
        if re.search(r"[a-z][A-Z]|_|::|\.\w|\(\)", token):
            out.add(token.strip("(),"))
    for heading_part in re.split(r"\s+[—–|]\s+|:\s+", name):
        out.add(heading_part.strip())
    return sorted((v for v in out if len(v) >= 2), key=len, reverse=True)


def remove_name(text: str, name: str) -> str:
    for variant in _name_variants(name):
        text = re.sub(r"(?<![\w.:])" + re.escape(variant) + r"(?![\w])", " ", text, flags=re.I)
    return " ".join(text.split())


def clean_query(desc: str, name: str) -> str | None:
    text = _first_sentence(desc)
    text = re.sub(r"\s*\((?:[^()]*)\)\s*$", "", text)  # "(function template)", "(class)"
    text = remove_name(text, name)
    text = re.sub(r"\(\s*\)", " ", text)
    text = re.sub(r"\s+([,;.:)])", r"\1", " ".join(text.split()))
    text = re.sub(r"([(])\s+", r"\1", text).strip(SEPARATORS + "'\"")
    words = text.split()
    if len(words) > 20:
        cut = " ".join(words[:20])
        m = list(re.finditer(r"[,;:]", cut))
        text = cut[: m[-1].start()] if m and len(cut[: m[-1].start()].split()) >= 8 else cut
        words = text.split()
    if not 3 <= len(words) <= 20:
        return None
    if len(content_words(text)) < 3:
        return None
    if not re.search(r"[A-Za-z]{3}", text):
        return None
    return text


def _sentence_key(text: str) -> str:
    return " ".join(WORD.findall(text.lower()))


def build_site(
    site: str, site_root: Path, host: str, entry: str, pool: ProcessPoolExecutor
) -> list[dict[str, str]]:
    rels = sorted(
        str(p.relative_to(site_root))
        for p in site_root.rglob("*")
        if p.suffix in (".html", ".htm") and p.is_file()
    )
    pages: dict[str, dict[str, Any]] = {}
    for res in pool.map(parse_page, [(str(site_root), r) for r in rels], chunksize=64):
        pages[res["rel"]] = res
    # Reachable from the entry page, as a crawler that follows links would find them.
    reach: set[str] = set()
    stack = [entry.lstrip("/")]
    while stack:
        rel = stack.pop()
        if rel in reach or rel not in pages:
            continue
        reach.add(rel)
        stack.extend(t for t in pages[rel]["links"] if t not in reach)
    title_counts: Counter[str] = Counter()
    for rel in reach:
        title_counts.update(set(content_words(pages[rel]["title"])))
    common = {w for w, c in title_counts.items() if c > 0.2 * max(1, len(reach))}
    # Paragraph-first sentences seen on several pages are boilerplate.
    sentence_pages: dict[str, set[str]] = defaultdict(set)
    for rel in reach:
        for _, sentence in pages[rel]["firsts"]:
            sentence_pages[_sentence_key(sentence)].add(rel)

    def near_title(q: str, rel: str, name: str) -> bool:
        words = content_words(q)
        title = set(content_words(pages[rel]["title"])) | set(content_words(name))
        title -= common
        hits = sum(1 for w in words if w in title)
        return hits * 2 > len(words)

    cands: list[tuple[int, str, str, str]] = []  # (priority, q, rel, source)
    for rel in sorted(reach):
        if NOT_INDEX.search(rel):
            continue
        for target, name, desc in pages[rel]["entries"]:
            if target not in reach or NOT_ANSWER.search(target):
                continue
            q = clean_query(desc, name)
            if q is None or near_title(q, target, name):
                continue
            if any(p != target for p in sentence_pages.get(_sentence_key(desc), ())):
                continue
            cands.append((0, q, target, f"index:{rel}"))
    for rel in sorted(reach):
        if NOT_ANSWER.search(rel):
            continue
        for i, (heading, sentence) in enumerate(pages[rel]["firsts"]):
            if len(sentence_pages[_sentence_key(sentence)]) > 1:
                continue
            title_name = re.split(r"\s+[—–|]\s+", pages[rel]["title"])[0]
            q = clean_query(sentence, heading)
            if q is not None and title_name != heading:
                q = clean_query(q, title_name)
            if q is None or near_title(q, rel, heading):
                continue
            cands.append((1 if i == 0 else 2, q, rel, f"first:{heading[:60]}"))
    # A query text that names two different pages has several plausible answers.
    by_text: dict[str, set[str]] = defaultdict(set)
    for _, q, rel, _ in cands:
        by_text[q.lower()].add(rel)
    cands.sort(key=lambda c: (c[0], c[2], c[1]))
    per_page: Counter[str] = Counter()
    seen: set[str] = set()
    kept: list[tuple[int, str, str, str]] = []
    for prio, q, rel, source in cands:
        key = q.lower()
        if len(by_text[key]) > 1 or key in seen or per_page[rel] >= MAX_PER_PAGE:
            continue
        seen.add(key)
        per_page[rel] += 1
        kept.append((prio, q, rel, source))
    # First sentences are the page's own words, verbatim (easier for a phrase matcher than a
    # summary written elsewhere): at most as many as the site's index summaries (or FIRST_MIN).
    n_index = sum(1 for c in kept if c[0] == 0)
    firsts = sorted(
        (c for c in kept if c[0] > 0),
        key=lambda c: (c[0], hashlib.sha1((c[1] + c[2]).encode()).hexdigest()),
    )[: max(n_index, FIRST_MIN)]
    out = []
    for _, q, rel, source in [c for c in kept if c[0] == 0] + firsts:
        url = f"http://{host}:8080/" + urllib.parse.quote(rel)
        digest = hashlib.sha1((q + url).encode()).hexdigest()
        split = "tune" if int(digest, 16) % 2 == 0 else "heldout"
        out.append({"q": q, "url": url, "split": split, "site": site, "source": source})
    print(
        f"  {site}: {len(rels)} html files, {len(reach)} reachable, {len(out)} queries "
        f"({sum(1 for o in out if o['source'].startswith('index:'))} from index pages)",
        file=sys.stderr,
    )
    return out


def entries_for(corpus_dir: Path, sites: list[str]) -> dict[str, str]:
    entries = {s: "/index.html" for s in sites}
    listing = corpus_dir / "entries.txt"
    if listing.is_file():
        for line in listing.read_text().splitlines():
            if line.strip():
                name, path = line.split()
                entries[name] = path
    return entries


def build(corpus: str, corpus_dir: Path, workers: int, per_site: int | None) -> list[dict]:
    _, net, first = CORPORA[corpus]
    sites = sorted(p.name for p in (corpus_dir / "sites").iterdir() if p.is_dir())
    entries = entries_for(corpus_dir, sites)
    rows: list[dict[str, str]] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, site in enumerate(sites):
            got = build_site(
                site, corpus_dir / "sites" / site, f"{net}.{first + i}", entries[site], pool
            )
            if per_site is not None and len(got) > per_site:
                got.sort(key=lambda r: hashlib.sha1((r["q"] + r["url"]).encode()).hexdigest())
                got = sorted(got[:per_site], key=lambda r: (r["url"], r["q"]))
            rows.extend(got)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=["small", "large", "both"], default="both")
    parser.add_argument("--small-dir", default=CORPORA["small"][0])
    parser.add_argument("--large-dir", default=CORPORA["large"][0])
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--per-site", type=int, default=500, help="cap per site (large corpus)")
    parser.add_argument("--out-dir", default=str(HERE))
    args = parser.parse_args()
    for corpus in ("small", "large") if args.corpus == "both" else (args.corpus,):
        corpus_dir = Path(args.small_dir if corpus == "small" else args.large_dir)
        print(f"{corpus}: {corpus_dir}", file=sys.stderr)
        rows = build(corpus, corpus_dir, args.workers, args.per_site if corpus == "large" else None)
        out = Path(args.out_dir) / f"{corpus}.jsonl"
        with out.open("w") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        per_site = Counter(r["site"] for r in rows)
        splits = Counter(r["split"] for r in rows)
        print(f"{corpus}: {len(rows)} queries -> {out}  {dict(splits)}")
        for site, n in sorted(per_site.items()):
            src = Counter(r["source"].split(":")[0] for r in rows if r["site"] == site)
            print(f"  {site:12s} {n:5d}  {dict(src)}")


if __name__ == "__main__":
    main()
