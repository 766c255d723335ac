"""A full disk: the node says so, keeps serving, loses nothing and recovers by itself.

The node's data directory lives on a small tmpfs. Mid-crawl a filler file takes every
free byte, so tantivy's commits and SQLite's writes fail with ENOSPC; the crawl and a
new seed keep coming. Then the filler goes and the node must finish on its own.

What it catches:
* a node that dies, or stops answering searches, when writes fail;
* a full disk that /api/status does not name (``storage.disk_full``), or a log flooded
  with tracebacks (one per refused write, as the crawler's slots used to);
* a URL marked DONE whose page never reached the index;
* pages fetched while the disk was full and then dropped (the old frontier lost their
  leases: the crawl reported idle with pages missing), or a commit that never succeeds
  again once space is back (a writer left dead after the failure);
* a node started on a full disk that dies in a traceback instead of one clear line;
* anything missing after a restart on the same data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, NodeFactory, NodeHandle, serve_site
from crash_site import (
    HTML,
    frontier_done,
    generated_pages,
    index_of,
    index_urls,
    integrity_problems,
    path_of,
    word_of,
)

from rhizome.crawler import frontier as frontier_module
from rhizome.crawler.frontier import DONE, QUEUED, Frontier

pytestmark = pytest.mark.timeout(90)

PAGES = 200
DISK_MB = 16
FULL_SECONDS = 7.0  # longer than the index's commit retry (5 s) and the frontier's (2 s)
FILL_CHUNKS = (1 << 20, 1 << 16, 1 << 12)  # write big chunks, then smaller, until ENOSPC
MAX_STORAGE_LOG_LINES = 8  # over the whole episode: first failures plus recoveries
WORDS_PER_QUERY = 36
START = (sys.executable, "-m", "rhizome", "node", "--http", "127.0.0.1:0", "--data-dir")


@contextlib.contextmanager
def small_disk(base: Path, size_mb: int) -> Iterator[Path]:
    """A ``size_mb`` tmpfs, as root (``mount``) or else in a user namespace (``unshare``).

    In the namespace case the mount is reached through ``/proc/<pid>/root`` of the process
    holding the namespace, so the node and this test both see it.
    """
    target = base / "disk"
    target.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(target)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode == 0:
        try:
            yield target
        finally:
            subprocess.run(["umount", "-l", str(target)], check=False)
        return
    holder = None
    if shutil.which("unshare"):
        holder = subprocess.Popen(
            [
                "unshare",
                "-Urm",
                "sh",
                "-c",
                f"mount -t tmpfs -o size={size_mb}m tmpfs {target} && echo mounted "
                "&& exec sleep 600",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert holder.stdout is not None
        line = holder.stdout.readline()
        if "mounted" not in line:
            holder.kill()
            holder.wait(5)
            pytest.skip(
                "cannot mount a small tmpfs: `mount` failed "
                f"({mounted.stderr.strip()}) and `unshare -Urm` failed ({line.strip()})"
            )
    else:
        pytest.skip(f"cannot mount a small tmpfs ({mounted.stderr.strip()}) and no unshare")
    try:
        yield Path(f"/proc/{holder.pid}/root") / target.relative_to("/")
    finally:
        holder.kill()
        holder.wait(5)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk`` with one file; returns its path."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in FILL_CHUNKS:
            block = bytes(chunk)
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    assert shutil.disk_usage(disk).free < FILL_CHUNKS[-1], shutil.disk_usage(disk)
    return filler


def start_on_full_disk(data_dir: Path, query: str) -> tuple[str, str, int]:
    """Start a node on ``data_dir``; stop it again. Returns ("exited", output, 0), or
    (its URL, output, how many results ``query`` found) when it came up."""
    proc = subprocess.Popen(
        [*START, str(data_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:  # ends when the process exits
            lines.append(line)
            if m := re.search(r"listening on (http://\S+?)/?$", line.strip()):
                url = m.group(1)
                params = urllib.parse.urlencode({"q": query, "scope": "local"})
                with urllib.request.urlopen(f"{url}/api/search?{params}", timeout=10) as resp:
                    found = len(json.load(resp)["results"])
                return url, "".join(lines), found
        proc.wait(10)
        return "exited", "".join(lines), 0
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()


def generated(urls: set[str]) -> set[str]:
    return {u for u in urls if index_of(path_of(u)) is not None}


def searchable(node: NodeHandle, urls: set[str]) -> set[str]:
    want = sorted(generated(urls))
    found: set[str] = set()
    for start in range(0, len(want), WORDS_PER_QUERY):
        chunk = want[start : start + WORDS_PER_QUERY]
        q = " ".join(word_of(index_of(path_of(u)) or 0) for u in chunk)
        found |= {r["url"] for r in node.search(q, limit=100)["results"]}
    return found


def storage_lines(node: NodeHandle) -> list[str]:
    return [
        line
        for line in node.lines
        if "index.store" in line or "crawler.frontier" in line or "Traceback" in line
    ]


def test_full_disk_is_reported_survived_and_recovered(node_factory: NodeFactory) -> None:
    pages = generated_pages(PAGES)
    # Linked from nowhere: only the seed given while the disk is full brings it in.
    orphan = f"/p/{PAGES}.html"
    pages[orphan] = (f"<title>Orphan</title><p>{word_of(PAGES)}</p>".encode(), HTML)
    with (
        small_disk(node_factory.tmp, DISK_MB) as disk,
        serve_site(pages, delay=0.005) as site,
    ):
        every_url = {site + p for p in pages}
        data_dir = disk / "data"
        node = node_factory.start(
            data_dir=data_dir, seeds=[f"{site}/index.html"], site=site, crawl_delay=0.03
        )
        deadline = time.monotonic() + 30
        while node.status()["documents"] < 30:
            assert time.monotonic() < deadline, node.output()
            time.sleep(0.05)

        filler = fill(disk)
        full_at = time.monotonic()
        # Wait until a write has actually failed (the next commit, the next lease).
        deadline = full_at + 10
        while not (status := node.status())["storage"]["disk_full"]:
            assert time.monotonic() < deadline, (status, node.output())
            time.sleep(0.05)
        assert status["storage"]["ok"] is False
        assert status["storage"]["free_bytes"] < FILL_CHUNKS[-1]
        committed = status["documents"]
        # An operator's seed while the disk is full is accepted, not an error.
        extra = site + orphan
        assert node.seed(extra)["accepted"] == [extra]
        while time.monotonic() < full_at + FULL_SECONDS:
            node.assert_alive()
            status = node.status()
            assert status["storage"]["disk_full"], status
            assert status["documents"] >= committed, status
            time.sleep(0.2)
        # Everything marked DONE is in the index and served; nothing committed was lost.
        done = frontier_done(data_dir)
        assert len(done) >= 30
        missing = generated(done) - searchable(node, done)
        assert not missing, missing
        assert node.status()["documents"] >= committed
        lines = storage_lines(node)
        assert any("disk full" in line for line in lines), lines
        assert not any("Traceback" in line for line in node.lines), node.output()
        assert len(lines) <= MAX_STORAGE_LOG_LINES, lines

        # Space comes back: no restart, the node commits what it held and finishes.
        filler.unlink()
        freed_at = time.monotonic()
        status = node.wait_idle(40, min_documents=len(pages))
        print(
            f"disk full for {freed_at - full_at:.1f} s; all {len(pages)} pages committed "
            f"{time.monotonic() - freed_at:.1f} s after space came back; "
            f"{len(storage_lines(node))} storage log lines"
        )
        assert status["documents"] == len(pages), status
        assert status["storage"]["disk_full"] is False and status["storage"]["ok"], status
        assert searchable(node, every_url) == generated(every_url)
        output = node.output()
        assert "index commit succeeded after" in output, output
        lines = storage_lines(node)
        assert len(lines) <= MAX_STORAGE_LOG_LINES, lines
        assert not any("Traceback" in line for line in node.lines), node.output()
        node.stop()
        fetched = site.requests

        urls = index_urls(data_dir)
        assert sorted(urls) == sorted(every_url), Counter(urls).most_common(3)
        assert frontier_done(data_dir) <= set(urls)
        assert not integrity_problems([data_dir / "frontier.sqlite3"])

        # Starting on a full disk: the node either runs (opening the index may free
        # space: tantivy deletes merged segments) or exits with one clear line.
        filler = fill(disk)
        outcome, text, found = start_on_full_disk(data_dir, word_of(0))
        print(f"start on a full disk: {outcome}")
        assert "Traceback" not in text, text
        if outcome == "exited":
            assert "rhizome: cannot start:" in text and "is full" in text, text
        else:
            assert found == 1, (outcome, text)  # it serves what it has
        # A new data directory on a full disk cannot even create its index: it must exit.
        outcome, text, _ = start_on_full_disk(disk / "fresh", word_of(0))
        assert outcome == "exited", text
        assert "rhizome: cannot start:" in text and "is full" in text, text
        assert "Traceback" not in text, text
        filler.unlink()

        # A restart on that data directory has everything and fetches nothing again.
        again = node_factory.start(data_dir=data_dir, seeds=[f"{site}/index.html"], site=site)
        status = again.wait_idle(20, min_documents=len(pages))
        assert status["documents"] == len(pages), status
        assert searchable(again, every_url) == generated(every_url)
        time.sleep(0.3)
        after = site.requests
        assert {p: n for p, n in after.items() if p != "/robots.txt"} == {
            p: n for p, n in fetched.items() if p != "/robots.txt"
        }
        again.stop()


async def test_frontier_keeps_refused_writes_and_replays_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frontier alone on a full tmpfs, with real SQLite.

    Catches: a refused write raising into the crawler (its slots died in a traceback
    loop), a lease recorded for nobody, outcomes and new links lost, a frontier that
    reports idle while changes wait in memory, and one that never notices space is back.
    """
    monkeypatch.setattr(frontier_module, "STORAGE_RETRY", 0.2)  # the test need not wait 2 s
    host = "a.example"
    with small_disk(tmp_path, 2) as disk:
        frontier = Frontier(disk / "frontier.sqlite3", max_urls_per_host=10_000, max_depth=5)
        await frontier.open()
        await frontier.add([(f"http://{host}/seed", 0)], now=time.time() - 1)
        [lease] = await frontier.lease(host, 1)
        filler = fill(disk)
        # Links found on the page (enough rows that SQLite must grow its files), then the
        # page's outcome: neither may raise, both must wait in memory.
        links = [(f"http://{host}/{'x' * 200}/{i}", 1) for i in range(2_000)]
        assert await frontier.add(links, now=time.time() - 1) == []
        await frontier.mark_done([(lease.url, 0)], recrawl_after=3600)
        assert frontier.disk_full and frontier.storage_error, frontier.storage_error
        assert await frontier.lease(host, 5) == []  # nothing leased that cannot be recorded
        assert await frontier.hosts_with_work(5, set()) == []
        assert await frontier.has_due()  # not idle: changes are waiting
        assert await frontier.state_of(lease.url) == (1, 0)  # still LEASED on disk

        filler.unlink()
        await asyncio.sleep(0.3)
        assert await frontier.hosts_with_work(5, set()) == [host]  # replayed, then found
        assert frontier.storage_error is None and not frontier.disk_full
        assert (await frontier.state_of(lease.url) or (None,))[0] == DONE
        assert await frontier.state_of(links[0][0]) == (QUEUED, 0)
        assert await frontier.state_of(links[-1][0]) == (QUEUED, 0)
        assert (await frontier.counts()).queued == len(links)
        await frontier.close()
        assert not integrity_problems([disk / "frontier.sqlite3"])
