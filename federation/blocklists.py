"""Blocklists nodes publish and subscribe to: signed, fetched through the peer client, bounded.

A node publishes its own rules (never those it subscribes to: a list is its maker's word
alone, and lists cannot feed each other in a loop) as one signed record (``dht.records``,
kind ``blocklist/1``, payload ``{"name": ..., "rules": [...]}``) at ``GET
/api/peer/blocklist``. Another node's operator subscribes to it by node id, URL or both:
with a URL alone the node id is learnt once from the URL's whoami proof and kept, so later
answers must be signed by that key. Each list is fetched at once, then every
``REFRESH_EVERY`` (``RETRY_EVERY`` after a failure), through ``PeerClient`` (SSRF guard,
URL proof, bounded reads).

A list is taken only whole and only if it verifies: the record's signature, its kind, its
signer being the subscribed node, its size (``MAX_BLOCKLIST_BYTES``, ``MAX_LIST_RULES``),
and an ``issued_at`` not older than the list held (a replayed old list cannot unblock
anything). Otherwise it is refused with a log line naming why, and the list held before
stays applied. Rules in a good list that do not parse are skipped and counted. Lists
received are kept in ``<data_dir>/subscriptions.json`` and applied again at start.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from rhizome.crawler import BadRule, Blocklist, parse_rule
from rhizome.dht import DhtError, Identity, Peer, sign_record, verify_record

from .client import PeerClient
from .errors import ListRefused, PeerError
from .membership import Membership
from .wire import MAX_BLOCKLIST_BYTES, PATH_BLOCKLIST

log = logging.getLogger(__name__)

BLOCKLIST_KIND = "blocklist/1"
MAX_LIST_RULES = 10_000  # rules one list may carry; a longer list is refused whole
MAX_NAME_CHARS = 64
# A list is signed for this long; a copy past it is refused (the maker re-signs its list
# every RESIGN_AFTER while it serves it, so a live maker's list never expires).
LIST_TTL = 7 * 86400.0
RESIGN_AFTER = LIST_TTL / 2
MAX_SUBSCRIPTIONS = 32
REFRESH_EVERY = 6 * 3600.0
RETRY_EVERY = 600.0
FETCH_TIMEOUT = 10.0
SUBSCRIPTIONS_FILE = "subscriptions.json"

Applied = Callable[[Sequence[str]], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class SignedList:
    """A list as verified: its maker (hex node id), name, rules, and when it was signed."""

    publisher: str
    name: str
    rules: tuple[str, ...]
    issued_at: float
    skipped: int = 0  # rules in it that do not parse here


def sign_list(identity: Identity, name: str, rules: Sequence[str], now: float) -> bytes:
    payload = orjson.dumps({"name": name[:MAX_NAME_CHARS], "rules": list(rules)})
    return sign_record(
        identity,
        kind=BLOCKLIST_KIND,
        key=b"",
        payload=payload,
        issued_at=now,
        expires_at=now + LIST_TTL,
    )


def read_list(raw: bytes, node_id: str, now: float, *, newer_than: float = 0.0) -> SignedList:
    """``raw`` as ``node_id``'s list, or ListRefused saying why (see the module docstring)."""
    try:
        record = verify_record(raw, now=now, max_size=MAX_BLOCKLIST_BYTES)
    except DhtError as exc:
        raise ListRefused(f"not a valid signed list ({exc})") from None
    if record.kind != BLOCKLIST_KIND:
        raise ListRefused(f"a signed {record.kind!r} record, not a blocklist")
    signer = record.publisher_id.hex()
    if signer != node_id:
        raise ListRefused(f"signed by {signer[:12]}, not by the subscribed node {node_id[:12]}")
    if record.issued_at < newer_than:
        raise ListRefused("older than the list already held (a replay?)")
    try:
        payload = orjson.loads(record.payload)
        name, rules = payload["name"], payload["rules"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        raise ListRefused('its payload is not {"name": ..., "rules": [...]}') from None
    if not isinstance(name, str) or not isinstance(rules, list):
        raise ListRefused('its payload is not {"name": ..., "rules": [...]}')
    if len(rules) > MAX_LIST_RULES:
        raise ListRefused(f"{len(rules)} rules, more than the {MAX_LIST_RULES} taken")
    parsed: list[str] = []
    for rule in rules:
        with contextlib.suppress(BadRule, TypeError, AttributeError):
            parsed.append(parse_rule(rule))
    return SignedList(
        signer,
        name[:MAX_NAME_CHARS],
        tuple(dict.fromkeys(parsed)),
        record.issued_at,
        len(rules) - len(parsed),
    )


def encode_answer(record: bytes) -> dict[str, str]:
    return {"list": base64.b64encode(record).decode("ascii")}


def decode_answer(data: Any) -> bytes:
    try:
        return base64.b64decode(data["list"], validate=True)
    except (TypeError, KeyError, ValueError, binascii.Error):
        raise ListRefused('the answer is not {"list": base64}') from None


class OwnList:
    """This node's list as it serves it: signed once, again when its rules change or it is
    half-way to expiring."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self._signed: tuple[str, tuple[str, ...], float, bytes] | None = None

    def record(self, name: str, rules: Sequence[str]) -> bytes:
        now = time.time()
        key = tuple(rules)
        if self._signed is not None:
            old_name, old_rules, signed_at, raw = self._signed
            if (old_name, old_rules) == (name, key) and now - signed_at < RESIGN_AFTER:
                return raw
        raw = sign_list(self.identity, name, key, now)
        self._signed = (name, key, now, raw)
        return raw


@dataclass(slots=True)
class Subscription:
    node_id: str  # hex
    url: str = ""  # where to fetch it; empty: found through the DHT
    added_at: float = 0.0
    name: str = ""
    rules: tuple[str, ...] = ()
    issued_at: float = 0.0  # of the list held; 0: none yet
    fetched_at: float = 0.0
    error: str = ""  # why the last fetch failed ("" when it did not)
    skipped: int = 0
    next_at: float = field(default=0.0, repr=False)  # monotonic: the next fetch

    @property
    def source(self) -> str:
        return f"list:{self.node_id}"

    @property
    def label(self) -> str:
        return f"list {self.name or '(not fetched yet)'} ({self.node_id[:12]})"


class Subscriptions:
    """The lists this node follows, applied to its ``Blocklist`` as one source each."""

    def __init__(
        self,
        data_dir: Path,
        blocklist: Blocklist,
        client: PeerClient,
        *,
        membership: Membership | None,
        applied: Applied,
    ) -> None:
        self.path = data_dir / SUBSCRIPTIONS_FILE
        self.blocklist = blocklist
        self.client = client
        self.membership = membership
        self._applied = applied  # told the rules a list added (to purge their pages)
        self._subs: dict[str, Subscription] = {}
        self._lock = asyncio.Lock()

    def all(self) -> list[Subscription]:
        return sorted(self._subs.values(), key=lambda s: s.added_at)

    # --- persistence -------------------------------------------------------------------
    def load(self) -> None:
        """Subscriptions and the lists last taken, applied again (file thread: at start)."""
        try:
            data = json.loads(self.path.read_text())
            entries = list(data["subscriptions"])[:MAX_SUBSCRIPTIONS]
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError) as exc:
            aside = self.path.with_name(f"{SUBSCRIPTIONS_FILE}.unreadable-{int(time.time())}")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)  # kept for the operator, not overwritten
            log.error("unreadable %s (%s): moved to %s; no subscriptions", self.path, exc, aside)
            return
        for entry in entries:
            try:
                sub = Subscription(
                    node_id=str(entry["node_id"]),
                    url=str(entry.get("url", "")),
                    added_at=float(entry.get("added_at", 0.0)),
                    name=str(entry.get("name", ""))[:MAX_NAME_CHARS],
                    rules=tuple(_parsed(entry.get("rules", [])))[:MAX_LIST_RULES],
                    issued_at=float(entry.get("issued_at", 0.0)),
                    fetched_at=float(entry.get("fetched_at", 0.0)),
                    error=str(entry.get("error", "")),
                )
            except (TypeError, ValueError, KeyError, AttributeError):
                continue
            self._subs[sub.node_id] = sub
            self.blocklist.set_rules(sub.source, sub.label, sub.rules)

    def _save(self) -> None:
        entries = [
            {k: v for k, v in asdict(s).items() if k not in ("next_at", "skipped")}
            for s in self.all()
        ]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps({"subscriptions": entries}, indent=1))
        os.replace(tmp, self.path)

    async def _saved(self) -> None:
        await asyncio.to_thread(self._save)

    # --- the operator's ----------------------------------------------------------------
    async def subscribe(self, node_id: str = "", url: str = "") -> Subscription:
        """Follow a node's list (by id, URL or both) and fetch it now. ListRefused if the
        node cannot be named or reached to learn its id; a list that fails to verify is
        kept as an error on the subscription (and tried again later)."""
        node_id, url = node_id.strip().lower(), url.strip().rstrip("/")
        if node_id and (len(node_id) != 40 or not _is_hex(node_id)):
            raise ListRefused("a node id is 40 hexadecimal characters")
        if url and not url.startswith(("http://", "https://")):
            raise ListRefused("the node's URL starts with http:// or https://")
        if not node_id and not url:
            raise ListRefused("name the node: its id, its URL, or both")
        if not node_id:
            try:
                node_id = (await self.client.identify(url, within=FETCH_TIMEOUT)).hex()
            except PeerError as exc:
                raise ListRefused(f"{url} did not say which node it is: {exc.reason}") from None
        if node_id not in self._subs and len(self._subs) >= MAX_SUBSCRIPTIONS:
            raise ListRefused(f"at most {MAX_SUBSCRIPTIONS} subscriptions")
        sub = self._subs.get(node_id) or Subscription(node_id, url, added_at=time.time())
        sub.url = url or sub.url
        self._subs[node_id] = sub
        self.blocklist.set_rules(sub.source, sub.label, sub.rules)
        return await self.refresh(node_id)

    async def unsubscribe(self, node_id: str) -> bool:
        sub = self._subs.pop(node_id, None)
        if sub is None:
            return False
        self.blocklist.drop_source(sub.source)
        await self._saved()
        log.info("unsubscribed from the blocklist of %s", node_id[:12])
        return True

    async def refresh(self, node_id: str) -> Subscription:
        """Fetch one list now; on any failure the list held stays (see the docstring)."""
        sub = self._subs[node_id]
        async with self._lock:
            added: list[str] = []
            try:
                got = await self._fetch(sub)
            except (ListRefused, PeerError) as exc:
                sub.error = str(exc)
                sub.next_at = time.monotonic() + RETRY_EVERY
                log.warning(
                    "blocklist of %s%s refused: %s; keeping the %d rules held",
                    node_id[:12],
                    f" at {sub.url}" if sub.url else "",
                    exc,
                    len(sub.rules),
                )
            else:
                sub.name, sub.rules, sub.issued_at = got.name, got.rules, got.issued_at
                sub.skipped, sub.error = got.skipped, ""
                sub.fetched_at = time.time()
                sub.next_at = time.monotonic() + REFRESH_EVERY
                added = self.blocklist.set_rules(sub.source, sub.label, sub.rules)
                log.info(
                    "blocklist %r of %s: %d rules (%d new, %d skipped)",
                    sub.name,
                    node_id[:12],
                    len(sub.rules),
                    len(added),
                    got.skipped,
                )
            if node_id in self._subs:
                await self._saved()
        if added:
            await self._applied(added)
        return sub

    async def _fetch(self, sub: Subscription) -> SignedList:
        node = bytes.fromhex(sub.node_id)
        peer = Peer(node, "", 0, sub.url) if sub.url else await self._locate(node)
        if peer is None:
            raise ListRefused("the node is not known to the network, and no URL was given")
        answer = await self.client.get_json(peer, PATH_BLOCKLIST, {}, within=FETCH_TIMEOUT)
        raw = await asyncio.to_thread(decode_answer, answer)  # up to ~680 KB of base64
        return await asyncio.to_thread(
            read_list, raw, sub.node_id, time.time(), newer_than=sub.issued_at
        )

    async def _locate(self, node_id: bytes) -> Peer | None:
        if self.membership is None:
            return None
        known = self.membership.contact_of(node_id)
        return known or await self.membership.endpoint_of(node_id, FETCH_TIMEOUT / 2)

    # --- the background task -----------------------------------------------------------
    async def run(self) -> None:
        """Refresh each list when it is due, for as long as the node runs."""
        while True:
            now = time.monotonic()
            for sub in self.all():
                if sub.next_at <= now and sub.node_id in self._subs:
                    try:
                        await self.refresh(sub.node_id)
                    except Exception:  # one list's trouble must not end the others' refresh
                        log.exception("refreshing the blocklist of %s failed", sub.node_id)
            await asyncio.sleep(_sleep_until(self.all()))


def _sleep_until(subs: Sequence[Subscription]) -> float:
    if not subs:
        return RETRY_EVERY
    return min(RETRY_EVERY, max(1.0, min(s.next_at for s in subs) - time.monotonic()))


def _parsed(rules: Any) -> list[str]:
    out: list[str] = []
    for rule in rules if isinstance(rules, list) else []:
        with contextlib.suppress(BadRule, TypeError, AttributeError):
            out.append(parse_rule(rule))
    return out


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True
