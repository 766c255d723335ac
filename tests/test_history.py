"""The status page's history (api/history.py) and its drawing (api/charts.py): counters
become rates, searches become p50/p95, the rings stay bounded, and a saved history comes
back after a restart with the gap where the node was down."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from rhizome.api import charts
from rhizome.api.history import (
    DAY_FACTOR,
    DAY_POINTS,
    HOUR_POINTS,
    RESERVOIR_SIZE,
    History,
    Reading,
    Reservoir,
    traffic_in_out,
)

STEP = 60.0
T0 = 1_800_000_000.0


def reading(t: float, *, fetched: int = 0, documents: int = 0, peers: int = 0) -> Reading:
    return Reading(t=t, fetched=fetched, documents=documents, peers=peers, bytes_in=0, bytes_out=0)


def test_counters_become_rates_and_searches_become_quantiles() -> None:
    history = History(STEP)
    assert history.record(reading(T0)) is None  # a rate needs two readings
    for ms in range(1, 101):  # 1 ms … 100 ms
        history.searched(ms / 1000)
    point = history.record(
        Reading(t=T0 + 60, fetched=30, documents=25, peers=4, bytes_in=6000, bytes_out=1200)
    )
    assert point is not None
    assert point.pages_per_minute == 30
    assert point.documents == 25 and point.peers == 4
    assert point.searches_per_second == pytest.approx(100 / 60, abs=0.001)
    assert point.p50_ms == 50 and point.p95_ms == 95
    assert point.bytes_in_per_second == 100 and point.bytes_out_per_second == 20
    # The next step had no search: no quantile, not the last step's again.
    quiet = history.record(reading(T0 + 120, fetched=30, documents=25))
    assert quiet is not None and quiet.p50_ms is None and quiet.searches_per_second == 0
    assert quiet.pages_per_minute == 0


def test_every_fifth_point_makes_a_day_point_of_the_whole_span() -> None:
    history = History(STEP)
    history.record(reading(T0))
    for i in range(1, DAY_FACTOR + 1):
        history.searched(i / 1000)  # one search a step: 1 … 5 ms
        history.record(reading(T0 + i * STEP, fetched=10 * i, documents=i))
    assert len(history.hour) == DAY_FACTOR and len(history.day) == 1
    day = history.day[0]
    assert day.pages_per_minute == 10  # 50 pages in 5 minutes
    assert day.documents == DAY_FACTOR  # a gauge: as last sampled
    assert day.p50_ms == 3 and day.p95_ms == 5  # of all five steps' searches


def test_the_rings_and_the_search_sample_stay_bounded() -> None:
    history = History(1.0)
    for i in range((DAY_POINTS + 10) * DAY_FACTOR):
        history.record(reading(T0 + i, fetched=i))
    assert len(history.hour) == HOUR_POINTS and len(history.day) == DAY_POINTS
    sample = Reservoir(rng=random.Random(7))
    for i in range(100_000):
        sample.add(float(i))
    assert len(sample.values) == RESERVOIR_SIZE and sample.seen == 100_000
    median = sample.quantile(0.5)
    assert median is not None and 40_000 < median < 60_000  # uniform: a fair sample


def test_peer_traffic_kinds_are_told_apart_by_direction() -> None:
    traffic = {"lookup_received": 5, "other_in": 1, "push_sent": 7, "search_served": 2}
    assert traffic_in_out(traffic) == (6, 9)


def test_a_saved_history_comes_back_after_a_restart_with_its_gap(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    before = History(STEP, path)
    before.record(reading(T0))
    for i in range(1, 11):
        before.record(reading(T0 + i * STEP, fetched=i * 6, documents=i))
    before.save()
    # Down for ten minutes, then started again: the old points are still in the hour.
    restart = T0 + 20 * STEP
    after = History(STEP, path)
    after.load(now=restart)
    assert list(after.hour) == list(before.hour) and list(after.day) == list(before.day)
    after.record(reading(restart))
    after.record(reading(restart + STEP, fetched=12, documents=11))
    after.record(reading(restart + 2 * STEP, fetched=24, documents=12))
    html = charts.history_html(after, restart + 2 * STEP)
    documents = re.search(r'id="chart-hour-documents".*?</figure>', html)
    assert documents is not None
    lines = re.findall(r'<polyline class="series s1" points="([^"]+)"', documents.group(0))
    assert [len(pts.split()) for pts in lines] == [10, 2], "the gap is not a line"
    # Points older than their window are not loaded.
    late = History(STEP, path)
    late.load(now=T0 + 10 * STEP + HOUR_POINTS * STEP + 1)
    assert not late.hour and len(late.day) == 2


@pytest.mark.parametrize(
    "content",
    [
        "not json {",
        json.dumps({"version": 99, "step": STEP}),
        json.dumps(["a list"]),
    ],
)
def test_a_damaged_history_file_is_set_aside_and_the_graphs_start_empty(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "history.json"
    path.write_text(content)
    history = History(STEP, path)
    history.load(now=T0)
    assert not history.hour and not history.day
    assert "the graphs start empty" in caplog.text


def test_hostile_rows_in_a_history_file_are_skipped(tmp_path: Path) -> None:
    good = [T0, 1.0, 2.0, 0.5, 10.0, 20.0, 3.0, 4.0, 5.0]
    rows = [good, [T0, "x", *good[2:]], [T0, float("nan"), *good[2:]], [T0, -1.0, *good[2:]], [1]]
    history = History(STEP, tmp_path / "history.json")
    text = History(STEP).to_json().replace('"hour": []', f'"hour": {json.dumps(rows)}')
    (tmp_path / "history.json").write_text(text)
    history.load(now=T0)
    assert len(history.hour) == 1 and history.hour[0].documents == 2.0


def test_an_empty_history_draws_no_line_but_says_it_is_collecting() -> None:
    html = charts.history_html(History(STEP), T0)
    assert html.count("collecting…") == 2 * len(charts.CHARTS)
    assert "<polyline" not in html
    assert "The last hour" in html and "The last day" in html
