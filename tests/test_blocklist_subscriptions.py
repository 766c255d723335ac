"""Subscribed blocklists (``federation/blocklists.py``) against a real HTTP publisher on
loopback: the list is fetched through the real ``PeerClient`` (URL proof, bounded reads),
verified, applied with its provenance, kept across restarts; a forged, foreign, oversized
or replayed list is refused with a log line naming why, and the list held before stays.

The publisher is a small aiohttp app that answers whoami with its own key (as a node does,
``federation.proof.answer_whoami``) and serves whatever list the test puts up."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from rhizome.crawler import Blocklist
from rhizome.dht import Identity, sign_record
from rhizome.federation import DEFAULT_SETTINGS
from rhizome.federation.blocklists import (
    BLOCKLIST_KIND,
    LIST_TTL,
    MAX_LIST_RULES,
    Subscriptions,
    encode_answer,
    sign_list,
)
from rhizome.federation.client import PeerClient
from rhizome.federation.proof import answer_whoami
from rhizome.federation.wire import MAX_BLOCKLIST_BYTES, PATH_BLOCKLIST, PATH_WHOAMI


@dataclass
class Publisher:
    identity: Identity
    url: str = ""
    record: bytes = b""
    requests: int = 0

    def put(self, name: str, rules: list[str], *, at: float | None = None) -> bytes:
        self.record = sign_list(self.identity, name, rules, time.time() if at is None else at)
        return self.record


@pytest.fixture
async def publisher() -> AsyncIterator[Publisher]:
    pub = Publisher(Identity.generate())

    async def whoami(request: web.Request) -> web.Response:
        return web.json_response(
            answer_whoami(pub.identity, request.query["nonce"], request.query["url"])
        )

    async def blocklist(request: web.Request) -> web.Response:
        pub.requests += 1
        return web.json_response(encode_answer(pub.record))

    app = web.Application()
    app.router.add_get(PATH_WHOAMI, whoami)
    app.router.add_get(PATH_BLOCKLIST, blocklist)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    pub.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield pub
    await runner.cleanup()


@dataclass
class Subscriber:
    subs: Subscriptions
    blocklist: Blocklist
    client: PeerClient
    applied: list[list[str]] = field(default_factory=list)


async def _subscriber(data_dir: Path) -> Subscriber:
    blocklist = Blocklist()
    client = PeerClient(DEFAULT_SETTINGS, allow_private=True, distrusted=lambda: ())
    await client.open()
    made = Subscriber(None, blocklist, client)  # type: ignore[arg-type]

    async def applied(rules: object) -> None:
        made.applied.append(list(rules))  # type: ignore[call-overload]

    made.subs = Subscriptions(data_dir, blocklist, client, membership=None, applied=applied)
    made.subs.load()
    return made


@pytest.fixture
async def subscriber(tmp_path: Path) -> AsyncIterator[Subscriber]:
    made = await _subscriber(tmp_path)
    yield made
    await made.client.close()


def _blocked_by(bl: Blocklist, host: str) -> str | None:
    block = bl.match_host(host)
    return None if block is None else block.describe()


async def test_a_list_subscribed_by_url_is_verified_applied_with_its_name_and_kept(
    publisher: Publisher, subscriber: Subscriber, tmp_path: Path
) -> None:
    publisher.put("friends", ["spam.test", "*.ads.example", "not a rule"])
    sub = await subscriber.subs.subscribe(url=publisher.url)
    node_id = publisher.identity.node_id.hex()
    assert sub.node_id == node_id  # learnt from the URL's whoami proof
    assert sub.error == "" and sub.rules == ("spam.test", "*.ads.example") and sub.skipped == 1
    assert _blocked_by(subscriber.blocklist, "www.spam.test") == (
        f"blocked by list friends ({node_id[:12]}) (rule spam.test)"
    )
    assert subscriber.applied == [["spam.test", "*.ads.example"]]  # to purge their pages

    # A restart: the list held is applied again from the data dir, before any fetch.
    again = await _subscriber(tmp_path)
    try:
        assert [s.node_id for s in again.subs.all()] == [node_id]
        assert _blocked_by(again.blocklist, "x.ads.example") == (
            f"blocked by list friends ({node_id[:12]}) (rule *.ads.example)"
        )
    finally:
        await again.client.close()


async def test_a_forged_list_is_refused_with_a_log_line_and_the_old_list_kept(
    publisher: Publisher, subscriber: Subscriber, caplog: pytest.LogCaptureFixture
) -> None:
    publisher.put("friends", ["spam.test"])
    sub = await subscriber.subs.subscribe(publisher.identity.node_id.hex(), publisher.url)
    assert sub.rules == ("spam.test",)
    good = publisher.put("friends", ["other.test"])  # a newer list, then garbled in transit
    publisher.record = good[:-1] + bytes([good[-1] ^ 1])
    with caplog.at_level(logging.WARNING, logger="rhizome.federation.blocklists"):
        sub = await subscriber.subs.refresh(sub.node_id)
    assert "bad record signature" in sub.error
    assert sub.rules == ("spam.test",)
    assert subscriber.blocklist.blocks_url("http://spam.test/")
    assert not subscriber.blocklist.blocks_url("http://other.test/")
    assert any(
        "refused" in r.getMessage() and "keeping the 1 rules held" in r.getMessage()
        for r in caplog.records
    ), caplog.text


async def test_a_list_signed_by_another_node_is_refused(
    publisher: Publisher, subscriber: Subscriber
) -> None:
    publisher.put("friends", ["spam.test"])
    sub = await subscriber.subs.subscribe(publisher.identity.node_id.hex(), publisher.url)
    # The same server now serves someone else's (validly signed) list.
    publisher.record = sign_list(Identity.generate(), "impostor", ["example.com"], time.time())
    sub = await subscriber.subs.refresh(sub.node_id)
    assert "not by the subscribed node" in sub.error
    assert sub.name == "friends" and sub.rules == ("spam.test",)
    assert not subscriber.blocklist.blocks_url("http://example.com/")


async def test_oversized_lists_are_refused_whole(
    publisher: Publisher, subscriber: Subscriber
) -> None:
    publisher.put("friends", ["spam.test"])
    sub = await subscriber.subs.subscribe(publisher.identity.node_id.hex(), publisher.url)
    publisher.put("long", [f"d{i}.test" for i in range(MAX_LIST_RULES + 1)])
    assert len(publisher.record) < MAX_BLOCKLIST_BYTES  # too many rules, not too many bytes
    sub = await subscriber.subs.refresh(sub.node_id)
    assert f"more than the {MAX_LIST_RULES} taken" in sub.error
    publisher.put("big", [f"{'x' * 60}{i}.test" for i in range(9_000)])
    assert len(publisher.record) > MAX_BLOCKLIST_BYTES
    sub = await subscriber.subs.refresh(sub.node_id)
    assert "over" in sub.error or "exceeds" in sub.error
    assert sub.name == "friends" and sub.rules == ("spam.test",)
    assert subscriber.blocklist.rule_count == 1


async def test_an_older_list_or_one_of_another_kind_cannot_replace_the_one_held(
    publisher: Publisher, subscriber: Subscriber
) -> None:
    old = publisher.put("friends", ["a.test", "b.test"], at=time.time() - 3600)
    publisher.put("friends", ["a.test"])
    sub = await subscriber.subs.subscribe(publisher.identity.node_id.hex(), publisher.url)
    assert sub.rules == ("a.test",)
    publisher.record = old  # replayed: it would block b.test again
    sub = await subscriber.subs.refresh(sub.node_id)
    assert "older than the list already held" in sub.error
    assert sub.rules == ("a.test",)
    now = time.time()
    publisher.record = sign_record(
        publisher.identity,
        kind=BLOCKLIST_KIND.replace("blocklist", "allowlist"),
        key=b"",
        payload=orjson.dumps({"name": "x", "rules": []}),
        issued_at=now,
        expires_at=now + LIST_TTL,
    )
    sub = await subscriber.subs.refresh(sub.node_id)
    assert "not a blocklist" in sub.error and sub.rules == ("a.test",)


async def test_unsubscribing_lifts_the_lists_blocks(
    publisher: Publisher, subscriber: Subscriber, tmp_path: Path
) -> None:
    publisher.put("friends", ["spam.test"])
    sub = await subscriber.subs.subscribe(publisher.identity.node_id.hex(), publisher.url)
    assert await subscriber.subs.unsubscribe(sub.node_id)
    assert not subscriber.blocklist.blocks_url("http://spam.test/")
    again = await _subscriber(tmp_path)
    try:
        assert again.subs.all() == []
    finally:
        await again.client.close()


async def test_a_damaged_subscriptions_file_is_kept_aside_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "subscriptions.json").write_text("{not json")
    made = await _subscriber(tmp_path)
    try:
        assert made.subs.all() == [] and made.blocklist.rule_count == 0
        kept = sorted(p.name for p in tmp_path.iterdir())  # noqa: ASYNC240 (a test's listing)
        assert kept[0].startswith("subscriptions.json.unreadable-") and len(kept) == 1
    finally:
        await made.client.close()
