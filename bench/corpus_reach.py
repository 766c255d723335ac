"""Which pages of a corpus are reachable from its entry pages: a BFS over the files on disk.

    python3 bench/corpus_reach.py small|large [--out FILE.json]

Independent of the crawler: links are resolved with ``urllib.parse.urljoin`` and mapped to
files the way the corpus' nginx serves them (``serve.sh``: one root per site, ``index.html``
for a directory, a directory without its slash redirected to it, the MIME type from the
extension, the query string ignored). A page is a file nginx serves as HTML; it is reachable
when a chain of ``<a href>`` and ``<meta http-equiv=refresh>`` within its site leads to it
from the site's entry page. ``<base href>`` is honoured; rel=nofollow and robots meta are
not (the counts of pages only reachable through them, and of pages robots.txt disallows, are
reported apart). A page whose meta refresh has no delay is a redirect, not a page (a browser
replaces it at once; the crawler indexes its target instead): such stubs are followed and
counted apart (``stubs``), not among the pages; so are pages whose robots meta says
noindex (``noindex``: rustdoc's print.html). The result is cached beside the corpus
(``DEST/reachable.json``), keyed by the number of sites and their newest mtime.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.parse
import urllib.robotparser
from collections import deque
from pathlib import Path
from typing import Any

from selectolax.lexbor import LexborHTMLParser

CORPORA: dict[str, dict[str, Any]] = {
    "small": {"dir": "/tmp/rhizome-corpus", "net": "127.0.0", "first": 11},
    "large": {"dir": "/tmp/rhizome-large", "net": "127.0.1", "first": 1},
}
PORT = 8080
# nginx's mime.types: the extensions it serves as text/html or application/xhtml+xml.
HTML_EXTENSIONS = frozenset({".html", ".htm", ".shtml", ".xhtml"})
REFRESH_URL = re.compile(r"""^\s*\d*(?:\.\d*)?\s*[;,]?\s*(?:url\s*=\s*)?['"]?([^'"]*)""", re.I)
REFRESH_DELAY = re.compile(r"\s*(\d*(?:\.\d+)?)")
CACHE_VERSION = 4
REDIRECT_DELAY = 1.0  # a refresh sooner than this is a redirect (crawler/parse.py too)


def sites_and_entries(corpus: str) -> list[tuple[str, str, str]]:
    """(site, origin, entry URL) per site, in serve.sh's order (by name)."""
    c = CORPORA[corpus]
    base = Path(c["dir"])
    sites = sorted(p.name for p in (base / "sites").iterdir() if p.is_dir())
    entries = dict.fromkeys(sites, "/index.html")
    if (base / "entries.txt").is_file():
        for line in (base / "entries.txt").read_text().splitlines():
            if line.strip():
                name, path = line.split()
                entries[name] = path
    out = []
    for i, site in enumerate(sites):
        origin = f"http://{c['net']}.{c['first'] + i}:{PORT}"
        out.append((site, origin, origin + entries[site]))
    return out


def resolve_file(root: Path, url_path: str) -> str | None:
    """The file (relative to the site root) nginx serves as HTML for ``url_path``, or None."""
    path = urllib.parse.unquote(url_path)
    rel = os.path.normpath("/" + path).lstrip("/")
    if path.endswith("/") or rel in ("", "."):
        rel = os.path.join(rel, "index.html") if rel not in ("", ".") else "index.html"
    full = root / rel
    if full.is_dir():  # nginx: 301 to the slash, then the index
        rel = os.path.join(rel, "index.html")
        full = root / rel
    if not full.is_file() or os.path.splitext(rel)[1].lower() not in HTML_EXTENSIONS:
        return None
    return rel


def page_links(data: bytes, url: str) -> tuple[list[str], list[str], bool, bool]:
    """(followed, nofollow) absolute link targets of one page (<a href> and meta refresh),
    whether the page is a redirect stub (a refresh without delay), and whether its robots
    meta says noindex."""
    tree = LexborHTMLParser(data)
    base = url
    base_el = tree.css_first("base[href]")
    if base_el is not None:
        base = urllib.parse.urljoin(url, (base_el.attributes.get("href") or "").strip())
    nofollow_page = noindex = False
    for meta in tree.css("meta[name]"):
        if (meta.attributes.get("name") or "").lower() == "robots":
            content = (meta.attributes.get("content") or "").lower()
            nofollow_page |= "nofollow" in content or "none" in content
            noindex |= "noindex" in content or "none" in content
    followed: list[str] = []
    nofollow: list[str] = []
    stub = False
    for a in tree.css("a[href]"):
        href = (a.attributes.get("href") or "").strip()
        if not href or href.startswith(("#", "javascript:", "mailto:")):
            continue
        target = urllib.parse.urljoin(base, href)
        rel = (a.attributes.get("rel") or "").lower()
        (nofollow if nofollow_page or "nofollow" in rel else followed).append(target)
    for meta in tree.css("meta[http-equiv]"):
        if (meta.attributes.get("http-equiv") or "").lower() == "refresh":
            content = meta.attributes.get("content") or ""
            m = REFRESH_URL.match(content)
            if m and m.group(1).strip():
                followed.append(urllib.parse.urljoin(base, m.group(1).strip()))
                delay = REFRESH_DELAY.match(content)
                if delay is not None and float(delay.group(1) or 0) < REDIRECT_DELAY:
                    stub = True
    return followed, nofollow, stub, noindex


def bfs_site(root: Path, origin: str, entry: str) -> dict[str, Any]:
    """Reachable files of one site (redirect stubs among them apart); also those reachable
    only through nofollow links, and those robots.txt disallows."""
    robots = urllib.robotparser.RobotFileParser()
    robots_file = root / "robots.txt"
    robots.parse(robots_file.read_text().splitlines() if robots_file.is_file() else [])
    entry_file = resolve_file(root, urllib.parse.urlsplit(entry).path)
    reached: dict[str, str] = {}  # file -> the first URL that reached it
    via_nofollow: set[str] = set()
    todo: deque[tuple[str, str]] = deque()
    if entry_file:
        reached[entry_file] = entry
        todo.append((entry_file, entry))
    pending_nofollow: list[str] = []
    stubs: list[str] = []
    noindex: list[str] = []
    while todo:
        rel, url = todo.popleft()
        followed, nofollow, stub, unindexed = page_links((root / rel).read_bytes(), url)
        pending_nofollow += nofollow
        if stub:
            stubs.append(rel)
        elif unindexed:
            noindex.append(rel)
        for target in followed:
            parts = urllib.parse.urlsplit(target)
            if f"{parts.scheme}://{parts.netloc}" != origin:
                continue
            found = resolve_file(root, parts.path)
            if found is not None and found not in reached:
                reached[found] = urllib.parse.urldefrag(target)[0]
                todo.append((found, reached[found]))
    for target in pending_nofollow:
        parts = urllib.parse.urlsplit(target)
        if f"{parts.scheme}://{parts.netloc}" == origin:
            found = resolve_file(root, parts.path)
            if found is not None and found not in reached:
                via_nofollow.add(found)
    disallowed = sorted(f for f, u in reached.items() if not robots.can_fetch("RhizomeBot", u))
    for rel in stubs + noindex:
        del reached[rel]
    return {
        "files": reached,
        "stubs": sorted(stubs),
        "noindex": sorted(noindex),
        "nofollow_only": sorted(via_nofollow),
        "disallowed": disallowed,
    }


def _fingerprint(sites_dir: Path) -> list[int]:
    count, newest = 0, 0
    for site in sites_dir.iterdir():
        st = site.stat()
        count += 1
        newest = max(newest, int(st.st_mtime))
    return [CACHE_VERSION, count, newest]


def reachable(corpus: str) -> dict[str, dict[str, Any]]:
    """Per site: origin, entry, reachable files (file -> URL), nofollow-only, disallowed."""
    base = Path(CORPORA[corpus]["dir"])
    cache = base / "reachable.json"
    key = _fingerprint(base / "sites")
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return dict(saved["sites"])
    out: dict[str, dict[str, Any]] = {}
    for site, origin, entry in sites_and_entries(corpus):
        started = time.monotonic()
        result = bfs_site(base / "sites" / site, origin, entry)
        out[site] = {"origin": origin, "entry": entry, **result}
        print(
            f"{site}: {len(result['files'])} reachable ({time.monotonic() - started:.1f} s)",
            file=sys.stderr,
        )
    cache.write_text(json.dumps({"key": key, "sites": out}))
    return out


def url_to_file(sites: dict[str, dict[str, Any]], corpus: str, url: str) -> tuple[str, str] | None:
    """(site, file) that a crawled URL names, or None when it is outside the corpus."""
    parts = urllib.parse.urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    for site, info in sites.items():
        if info["origin"] == origin:
            found = resolve_file(Path(CORPORA[corpus]["dir"]) / "sites" / site, parts.path)
            return (site, found) if found else None
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", choices=sorted(CORPORA))
    args = parser.parse_args()
    sites = reachable(args.corpus)
    total = sum(len(s["files"]) for s in sites.values())
    for site, info in sites.items():
        print(
            f"{site:14} {len(info['files']):6} reachable pages, {len(info['stubs'])} redirect "
            f"stubs, {len(info['noindex'])} noindex, {len(info['nofollow_only'])} only via "
            f"nofollow, {len(info['disallowed'])} disallowed by robots.txt"
        )
    print(f"total {total}")


if __name__ == "__main__":
    main()
