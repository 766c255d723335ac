"""The persistent frontier (crawler.frontier.Frontier) on a real SQLite file."""

from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rhizome.crawler.frontier import DONE, FAILED, LEASED, QUEUED, Frontier

A = "http://a.example"
B = "http://b.example:8080"


def past() -> float:
    """An insertion time a second ago: next_fetch grows by 1 ms per depth level, so a URL
    added "now" at depth 3 is only due 3 ms later."""
    return time.time() - 1.0


def new_frontier(path: Path, *, per_host: int = 1000, depth: int = 5) -> Frontier:
    return Frontier(path, max_urls_per_host=per_host, max_depth=depth)


@pytest.fixture
async def frontier(tmp_path: Path) -> AsyncIterator[Frontier]:
    f = new_frontier(tmp_path / "frontier.sqlite3")
    assert await f.open() == 0
    yield f
    await f.close()


async def test_add_then_lease_hands_out_each_url_once(frontier: Frontier) -> None:
    hosts = await frontier.add([(A + "/1", 0), (A + "/2", 1), (B + "/x", 0)], now=past())
    assert sorted(hosts) == ["a.example", "b.example:8080"]
    leases = await frontier.lease("a.example", 10)
    assert [(le.url, le.depth, le.attempts) for le in leases] == [
        (A + "/1", 0, 0),
        (A + "/2", 1, 0),
    ]
    assert await frontier.state_of(A + "/1") == (LEASED, 0)
    assert await frontier.lease("a.example", 10) == []  # leased URLs are not handed out twice
    assert [le.url for le in await frontier.lease("b.example:8080", 10)] == [B + "/x"]


async def test_lease_respects_n_and_shallow_first(frontier: Frontier) -> None:
    await frontier.add([(A + "/deep", 3), (A + "/shallow", 0), (A + "/mid", 1)], now=past())
    first = await frontier.lease("a.example", 2)
    assert [le.url for le in first] == [A + "/shallow", A + "/mid"]
    assert [le.url for le in await frontier.lease("a.example", 2)] == [A + "/deep"]


async def test_duplicates_ignored(frontier: Frontier) -> None:
    assert await frontier.add([(A + "/p", 0), (A + "/p", 0)], now=past()) == ["a.example"]
    assert await frontier.add([(A + "/p", 1)], now=past()) == []
    counts = await frontier.counts()
    assert counts.queued == 1
    assert len(await frontier.lease("a.example", 10)) == 1


async def test_duplicates_ignored_across_restart(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite3"
    f = new_frontier(path)
    await f.open()
    await f.add([(A + "/p", 0)], now=past())
    await f.close()
    g = new_frontier(path)
    await g.open()
    try:
        assert (
            await g.add([(A + "/p", 0)], now=past()) == []
        )  # the in-memory set is empty; SQLite knows
        assert (await g.counts()).queued == 1
    finally:
        await g.close()


async def test_force_requeues_known_url(frontier: Frontier) -> None:
    await frontier.add([(A + "/p", 0)], now=past())
    [lease] = await frontier.lease("a.example", 1)
    await frontier.mark_done([(lease.url, 0)], recrawl_after=3600)
    assert await frontier.lease("a.example", 1) == []
    assert await frontier.add([(A + "/p", 0)], now=past(), force=True) == ["a.example"]
    assert [le.url for le in await frontier.lease("a.example", 1)] == [A + "/p"]


async def test_per_host_cap(tmp_path: Path) -> None:
    f = new_frontier(tmp_path / "f.sqlite3", per_host=3)
    await f.open()
    try:
        await f.add([(f"{A}/{i}", 1) for i in range(5)], now=past())
        await f.add([(f"{A}/later{i}", 1) for i in range(5)], now=past())
        await f.add([(B + "/ok", 1)], now=past())
        assert len(await f.lease("a.example", 100)) == 3
        assert len(await f.lease("b.example:8080", 100)) == 1
        assert (await f.counts()).hosts == 2
    finally:
        await f.close()


async def test_per_host_cap_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "f.sqlite3"
    f = new_frontier(path, per_host=3)
    await f.open()
    await f.add([(f"{A}/{i}", 1) for i in range(3)], now=past())
    await f.close()
    g = new_frontier(path, per_host=3)
    await g.open()
    try:
        assert await g.add([(A + "/more", 1)], now=past()) == []
        assert len(await g.lease("a.example", 100)) == 3
    finally:
        await g.close()


async def test_depth_cap(frontier: Frontier) -> None:
    assert frontier.max_depth == 5
    await frontier.add([(A + "/ok", 5), (A + "/too-deep", 6)], now=past())
    assert [le.url for le in await frontier.lease("a.example", 10)] == [A + "/ok"]
    assert await frontier.state_of(A + "/too-deep") is None


async def test_url_first_seen_too_deep_can_still_be_added_shallower(frontier: Frontier) -> None:
    # A page reached first through a long chain, later linked from the home page.
    await frontier.add([(A + "/page", 9)], now=past())
    assert await frontier.add([(A + "/page", 1)], now=past()) == ["a.example"]
    [lease] = await frontier.lease("a.example", 10)
    assert (lease.url, lease.depth) == (A + "/page", 1)


async def test_trap_urls_not_added(frontier: Frontier) -> None:
    await frontier.add([(A + "/a/b" * 5, 1), (A + "/logo.png", 1), (A + "/fine", 1)], now=past())
    assert [le.url for le in await frontier.lease("a.example", 10)] == [A + "/fine"]


async def test_mark_failed_retry_time_and_attempts(frontier: Frontier) -> None:
    await frontier.add([(A + "/flaky", 0), (A + "/gone", 0)], now=past())
    await frontier.lease("a.example", 10)
    await frontier.mark_failed(A + "/flaky", "HTTP 503", time.time() - 1)  # due again now
    await frontier.mark_failed(A + "/gone", "HTTP 404", time.time() + 3600)
    assert await frontier.state_of(A + "/flaky") == (FAILED, 1)
    assert await frontier.state_of(A + "/gone") == (FAILED, 1)
    [retry] = await frontier.lease("a.example", 10)
    assert (retry.url, retry.attempts) == (A + "/flaky", 1)
    await frontier.mark_failed(A + "/flaky", "HTTP 503", None)  # None: give up for now
    assert await frontier.state_of(A + "/flaky") == (FAILED, 2)
    assert await frontier.lease("a.example", 10) == []
    counts = await frontier.counts()
    assert (counts.queued, counts.leased, counts.failed) == (0, 0, 2)


async def test_done_not_handed_out_until_recrawl_time(frontier: Frontier) -> None:
    await frontier.add([(A + "/stable", 0), (A + "/news", 0)], now=past())
    leases = await frontier.lease("a.example", 10)
    assert len(leases) == 2
    await frontier.mark_done([(A + "/stable", 0)], recrawl_after=3600)
    await frontier.mark_done([(A + "/news", 0)], recrawl_after=-1)  # recrawl time has passed
    assert await frontier.state_of(A + "/stable") == (DONE, 0)
    assert (
        await frontier.add([(A + "/stable", 0)], now=past()) == []
    )  # re-discovery does not re-queue
    again = await frontier.lease("a.example", 10)
    assert [le.url for le in again] == [A + "/news"]
    assert again[0].indexed_before is True
    assert await frontier.lease("a.example", 10) == []
    assert not await frontier.has_due()


async def test_mark_done_inserts_unknown_redirect_targets(frontier: Frontier) -> None:
    await frontier.mark_done([(A + "/target", 1)], recrawl_after=3600)
    assert await frontier.state_of(A + "/target") == (DONE, 0)
    assert await frontier.add([(A + "/target", 1)], now=past()) == []
    assert await frontier.lease("a.example", 10) == []


async def test_release_and_hosts_with_work(frontier: Frontier) -> None:
    await frontier.add([(A + "/1", 0), (B + "/1", 0)], now=past())
    assert sorted(await frontier.hosts_with_work(10, set())) == ["a.example", "b.example:8080"]
    assert await frontier.hosts_with_work(10, {"a.example"}) == ["b.example:8080"]
    [lease] = await frontier.lease("a.example", 10)
    assert await frontier.hosts_with_work(10, set()) == ["b.example:8080"]
    await frontier.release([lease.url])
    assert await frontier.state_of(lease.url) == (QUEUED, 0)
    assert [le.url for le in await frontier.lease("a.example", 10)] == [A + "/1"]


async def test_hosts_with_work_skips_hosts_whose_urls_are_all_done_or_leased(
    frontier: Frontier,
) -> None:
    hosts = [f"h{i:02}.example" for i in range(12)]
    await frontier.add([(f"http://{h}/{n}", 0) for h in hosts for n in range(5)], now=past())
    for h in hosts[:4]:  # crawled: due again only after the recrawl interval
        leases = await frontier.lease(h, 10)
        await frontier.mark_done([(le.url, 1) for le in leases], recrawl_after=3600)
    await frontier.lease(hosts[4], 10)  # being crawled: nothing of it is due
    await frontier.defer_host(hosts[5], time.time() + 600)
    assert await frontier.hosts_with_work(100, set()) == hosts[6:]
    assert await frontier.hosts_with_work(3, {hosts[7]}) == [hosts[6], *hosts[8:10]]


async def test_defer_host(frontier: Frontier) -> None:
    await frontier.add([(A + "/1", 0), (A + "/2", 0), (B + "/1", 0)], now=past())
    await frontier.defer_host("a.example", time.time() + 600)
    assert await frontier.lease("a.example", 10) == []
    assert len(await frontier.lease("b.example:8080", 10)) == 1


async def test_leases_requeued_after_crash(tmp_path: Path) -> None:
    path = tmp_path / "frontier.sqlite3"
    crashed = new_frontier(path)
    await crashed.open()
    await crashed.add([(f"{A}/{i}", 0) for i in range(5)], now=past())
    leased = await crashed.lease("a.example", 3)
    assert len(leased) == 3
    await crashed.mark_done([(leased[0].url, 0)], recrawl_after=3600)
    # Crash: no close(), no release(); the object is simply dropped.
    del crashed
    gc.collect()

    reopened = new_frontier(path)
    try:
        assert await reopened.open() == 2  # the two leases never committed
        assert await reopened.state_of(leased[0].url) == (DONE, 0)
        again = await reopened.lease("a.example", 10)
        assert sorted(le.url for le in again) == sorted(
            [leased[1].url, leased[2].url, f"{A}/3", f"{A}/4"]
        )
    finally:
        await reopened.close()


async def test_clean_close_and_reopen_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "frontier.sqlite3"
    f = new_frontier(path)
    await f.open()
    await f.add([(A + "/q", 0), (A + "/d", 0)], now=past())
    [lease] = await f.lease("a.example", 1)
    await f.mark_done([(lease.url, 0)], recrawl_after=3600)
    await f.close()
    g = new_frontier(path)
    assert await g.open() == 0
    try:
        counts = await g.counts()
        assert (counts.queued, counts.done, counts.hosts) == (1, 1, 1)
    finally:
        await g.close()


async def test_links_added_now_are_due_now(frontier: Frontier) -> None:
    # No back-dating here: URLs at any allowed depth can be leased right after add().
    await frontier.add([(A + "/d0", 0), (A + "/d3", 3), (A + "/d5", 5)])
    assert await frontier.has_due()
    leases = await frontier.lease("a.example", 10)
    assert [le.url for le in leases] == [A + "/d0", A + "/d3", A + "/d5"]


# --- anchors ---------------------------------------------------------------------------


async def test_anchor_texts_are_kept_for_a_queued_url_until_it_is_crawled(
    frontier: Frontier,
) -> None:
    await frontier.add([(A + "/p", 1)], now=past(), anchors={A + "/p": "Page"})
    await frontier.add([(A + "/p", 1)], now=past(), anchors={A + "/p": "The page"})
    (lease,) = await frontier.lease("a.example", 10)
    assert lease.anchor == "Page"  # the first one is in the row, for restarts
    assert frontier.take_anchors(lease.url, lease.anchor) == ["Page", "The page"]


async def test_links_to_crawled_trapped_or_failed_urls_leave_no_anchors_in_memory(
    frontier: Frontier,
) -> None:
    """On the large corpus every page links pages already crawled (home, the index)
    and external hosts; their anchors were kept, up to 16 each, and never taken."""
    await frontier.add([(A + "/done", 1)], now=past())
    (lease,) = await frontier.lease("a.example", 10)
    frontier.take_anchors(lease.url, lease.anchor)
    await frontier.mark_done([(lease.url, 1)], 3600)
    trap = A + "/a/a/a/a/a"
    await frontier.add([(A + "/404", 1)], now=past(), anchors={A + "/404": "Gone"})
    await frontier.mark_failed(A + "/404", "HTTP 404", None)
    await frontier.add(
        [(lease.url, 2), (trap, 1), (A + "/404", 2)],
        now=past(),
        anchors={lease.url: "Home", trap: "Again", A + "/404": "Gone again"},
    )
    assert frontier._anchors == {}


async def test_anchor_memory_is_bounded_by_max_anchor_urls(tmp_path: Path) -> None:
    f = Frontier(tmp_path / "f.sqlite3", max_urls_per_host=1000, max_depth=5, max_anchor_urls=3)
    await f.open()
    try:
        urls = [f"{A}/{i}" for i in range(10)]
        await f.add([(u, 1) for u in urls], now=past(), anchors={u: "x" for u in urls})
        assert list(f._anchors) == urls[-3:]  # the oldest dropped first
    finally:
        await f.close()


async def test_seen_cache_is_bounded_and_duplicates_still_ignored(tmp_path: Path) -> None:
    f = Frontier(tmp_path / "f.sqlite3", max_urls_per_host=1000, max_depth=5, max_seen=4)
    await f.open()
    try:
        for i in range(10):
            await f.add([(f"{A}/{i}", 1)], now=past())
            assert len(f._seen) <= 4
        assert await f.add([(f"{A}/0", 1)], now=past()) == []  # SQLite's key de-duplicates
        assert (await f.counts()).queued == 10
    finally:
        await f.close()
