"""The node's recent past, for the status page's graphs: two small rings of points.

A sampler (a cleanup context) wakes every ``history_step`` seconds (60 by default) and
turns the node's counters into one point: pages fetched per minute, documents in the
index, searches per second with their p50 and p95, peers, and peer bytes in and out per
second. The hour ring keeps the last HOUR_POINTS points; every DAY_FACTOR of them make one
point of the day ring (DAY_POINTS: 24 h at the default step). Both rings are saved to
``<data_dir>/history.json`` at every day point and at stop, so a restart (an upgrade, a
reboot) does not blank the graphs; a gap where the node was down stays a gap.

The same tick counts what is dear to count — the frontier's rows by state (a GROUP BY over
the whole table), the shard copies held, the routing table — and keeps the result here, so
/metrics and /healthz read memory, never the tables (``SlowCounts``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

from aiohttp import web

from rhizome.crawler import FrontierCounts

from .keys import CONFIG, NODE
from .node import Node

log = logging.getLogger(__name__)

HOUR_POINTS = 60  # one an hour-step: the last hour at the default 60 s step
DAY_FACTOR = 5  # hour points per day point: 5-minute points at the default step
DAY_POINTS = 288  # 24 h of 5-minute points
# Search times kept per point to take its p50/p95 from: a uniform sample, so memory stays
# bounded however many searches a step sees (quantiles within a few % at this size).
RESERVOIR_SIZE = 1024
# A point further than this many steps after the one before starts a new line: the node
# was down (or its loop stalled) in between, and the graph shows the gap.
GAP_STEPS = 2.5
HISTORY_FILE = "history.json"
FILE_VERSION = 1


@dataclass(slots=True, frozen=True)
class Point:
    """One step of the node's life; rates are per step, gauges as sampled at its end."""

    t: float  # unix time at the end of the step
    pages_per_minute: float
    documents: float
    searches_per_second: float
    p50_ms: float | None  # None: no search in the step
    p95_ms: float | None
    peers: float
    bytes_in_per_second: float
    bytes_out_per_second: float


POINT_FIELDS = tuple(f.name for f in fields(Point))


@dataclass(slots=True, frozen=True)
class Reading:
    """The node's cumulative counters and gauges at one moment (what a point is made of)."""

    t: float
    fetched: int
    documents: int
    peers: int
    bytes_in: int
    bytes_out: int


@dataclass(slots=True, frozen=True)
class SlowCounts:
    """Counts that cost a table scan, taken once a step; None where there is nothing."""

    at: float  # unix time they were taken
    frontier: FrontierCounts | None
    shards_held: int | None
    peers: int


class Reservoir:
    """A uniform sample of at most ``size`` values (Vitter's algorithm R)."""

    def __init__(self, size: int = RESERVOIR_SIZE, rng: random.Random | None = None) -> None:
        self.size = size
        self.seen = 0
        self.values: list[float] = []
        self._rng = rng or random.Random()

    def add(self, value: float) -> None:
        self.seen += 1
        if len(self.values) < self.size:
            self.values.append(value)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.size:
            self.values[slot] = value

    def quantile(self, q: float) -> float | None:
        """The nearest-rank ``q`` quantile of the sample; None when it is empty."""
        if not self.values:
            return None
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]

    def clear(self) -> None:
        self.seen = 0
        self.values.clear()


def is_incoming(kind: str) -> bool:
    """Of the peer traffic kinds (``PeerClient.traffic``): ``*_received`` and ``*_in``
    came to us; the others (``*_sent``, ``*_served``) left."""
    return kind.endswith(("_received", "_in"))


def traffic_in_out(traffic: Mapping[str, int]) -> tuple[int, int]:
    """Peer traffic bytes by kind, as (in, out)."""
    incoming = sum(v for k, v in traffic.items() if is_incoming(k))
    return incoming, sum(traffic.values()) - incoming


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


class History:
    """The two rings and what feeds them. ``record`` is the whole arithmetic (no I/O)."""

    def __init__(self, step: float, path: Path | None = None) -> None:
        self.step = step
        self.path = path
        self.hour: deque[Point] = deque(maxlen=HOUR_POINTS)
        self.day: deque[Point] = deque(maxlen=DAY_POINTS)
        self.counts: SlowCounts | None = None
        self.searches = 0  # since start
        self._step_times = Reservoir()
        self._day_times = Reservoir()
        self._last: tuple[Reading, int] | None = None  # the previous reading, searches then
        self._since_day_point = 0

    @property
    def day_step(self) -> float:
        return self.step * DAY_FACTOR

    def searched(self, seconds: float) -> None:
        """One search answered in ``seconds`` (any scope, API or web page)."""
        self.searches += 1
        self._step_times.add(seconds)
        self._day_times.add(seconds)

    def record(self, reading: Reading) -> Point | None:
        """Turn ``reading`` into the hour ring's next point (None for the first reading:
        rates need two). Every DAY_FACTOR points also make a day point."""
        last, self._last = self._last, (reading, self.searches)
        if last is None:
            self._step_times.clear()
            return None
        before, searches_before = last
        span = max(reading.t - before.t, 1e-6)
        point = Point(
            t=reading.t,
            pages_per_minute=round(max(0, reading.fetched - before.fetched) * 60 / span, 2),
            documents=reading.documents,
            searches_per_second=round(max(0, self.searches - searches_before) / span, 3),
            p50_ms=_ms(self._step_times.quantile(0.5)),
            p95_ms=_ms(self._step_times.quantile(0.95)),
            peers=reading.peers,
            bytes_in_per_second=round(max(0, reading.bytes_in - before.bytes_in) / span, 1),
            bytes_out_per_second=round(max(0, reading.bytes_out - before.bytes_out) / span, 1),
        )
        self._step_times.clear()
        self.hour.append(point)
        self._since_day_point += 1
        if self._since_day_point >= DAY_FACTOR:
            self._since_day_point = 0
            self.day.append(self._day_point(list(self.hour)[-DAY_FACTOR:]))
            self._day_times.clear()
        return point

    def _day_point(self, points: list[Point]) -> Point:
        """Rates averaged over the steps (equal steps: the rate over the whole span),
        gauges as last sampled, quantiles of every search in the span."""

        def mean(name: str) -> float:
            total: float = sum(getattr(p, name) for p in points)
            return round(total / len(points), 3)

        last = points[-1]
        return Point(
            t=last.t,
            pages_per_minute=mean("pages_per_minute"),
            documents=last.documents,
            searches_per_second=mean("searches_per_second"),
            p50_ms=_ms(self._day_times.quantile(0.5)),
            p95_ms=_ms(self._day_times.quantile(0.95)),
            peers=last.peers,
            bytes_in_per_second=mean("bytes_in_per_second"),
            bytes_out_per_second=mean("bytes_out_per_second"),
        )

    # --- persistence (our own file, still read as untrusted: a bad one starts empty) ---
    def to_json(self) -> str:
        return json.dumps(
            {
                "version": FILE_VERSION,
                "step": self.step,
                "fields": POINT_FIELDS,
                "hour": [astuple(p) for p in self.hour],
                "day": [astuple(p) for p in self.day],
            }
        )

    def load_json(self, text: str, *, now: float) -> None:
        """Points of a saved history still inside their window (none if the file is from
        another version or step: its points would not line up)."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != FILE_VERSION:
            raise ValueError("not a history file of this version")
        if data.get("step") != self.step or data.get("fields") != list(POINT_FIELDS):
            return
        for name, ring, window in (
            ("hour", self.hour, self.step * HOUR_POINTS),
            ("day", self.day, self.day_step * DAY_POINTS),
        ):
            rows = data.get(name)
            for row in rows if isinstance(rows, list) else []:
                point = _point(row)
                if point is not None and now - window <= point.t <= now + self.step:
                    ring.append(point)

    def save(self) -> None:
        """Write the rings atomically (a kill mid-write leaves the previous file)."""
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        os.replace(tmp, self.path)

    def load(self, *, now: float) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            self.load_json(self.path.read_text(encoding="utf-8"), now=now)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            log.warning("history %s not read (%s); the graphs start empty", self.path, exc)


def _point(row: Any) -> Point | None:
    if not isinstance(row, list) or len(row) != len(POINT_FIELDS):
        return None
    values: list[float | None] = []
    for name, value in zip(POINT_FIELDS, row, strict=True):
        if value is None and name in ("p50_ms", "p95_ms"):
            values.append(None)
        elif (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value >= 0
        ):
            values.append(float(value))
        else:
            return None
    return Point(*values)  # type: ignore[arg-type]


async def read_node(
    node: Node, clock: Callable[[], float] = time.time
) -> tuple[Reading, SlowCounts]:
    """What one tick reads of the node: cheap counters, and the counts that scan tables."""
    frontier = await node.crawler.frontier.counts()
    network = node.network
    shards_held: int | None = None
    peers = bytes_in = bytes_out = 0
    if network is not None and network.started and network.dht.running:
        shards_held = await network.shards.count()
        peers = len(await network.dht.peers())
        bytes_in, bytes_out = traffic_in_out(network.client.traffic)
    now = clock()
    reading = Reading(
        t=now,
        fetched=node.crawler.fetched,
        documents=node.store.num_docs,
        peers=peers,
        bytes_in=bytes_in,
        bytes_out=bytes_out,
    )
    return reading, SlowCounts(at=now, frontier=frontier, shards_held=shards_held, peers=peers)


async def _sample_forever(history: History, node: Node) -> None:
    while True:
        try:
            reading, history.counts = await read_node(node)
            history.record(reading)
            if history.day and history.day[-1].t == reading.t:  # a day point: keep it
                await asyncio.to_thread(history.save)
        except OSError as exc:  # a full disk: the node says so elsewhere; the rings go on
            log.warning("history not saved: %s", exc)
        except Exception:
            log.exception("could not sample the node's history")
        await asyncio.sleep(history.step)


HISTORY = web.AppKey("history", History)


async def history_ctx(app: web.Application) -> AsyncIterator[None]:
    """The sampler, after the node is built; the rings are saved once more at stop."""
    history = app[HISTORY]
    await asyncio.to_thread(history.load, now=time.time())
    task = asyncio.create_task(_sample_forever(history, app[NODE]), name="history-sampler")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    try:
        await asyncio.to_thread(history.save)
    except OSError as exc:  # a full disk: the graphs are not worth failing a stop over
        log.warning("history not saved: %s", exc)


def setup(app: web.Application) -> None:
    config = app[CONFIG]
    app[HISTORY] = History(config.history_step, config.data_dir / HISTORY_FILE)
