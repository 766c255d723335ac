"""The status page's graphs in a real browser (Debian's chromium through Playwright), at a
phone's width and a desktop's, after a node crawled the fixture site and was searched.

The node samples every 0.3 s (``--history-step``) so its hour and day rings fill in
seconds. Each graph must have a drawn series (a polyline of at least two points), and the
screenshot of the charts must show the series' colour, not only the card's background.
"""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import SITE_INDEXABLE, TIMEOUT_MS, NodeFactory, NodeHandle, serve_site
from PIL import Image
from playwright.sync_api import Browser, expect

from rhizome.api.charts import CHARTS

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

HISTORY_STEP = 0.3
ACCENT = (0x2F, 0x6F, 0x4F)  # --accent in the light scheme (api/web_ui.py)
CARD = (0xFF, 0xFF, 0xFF)  # --card: a chart's background
WIDTHS = {"phone": 390, "desktop": 1280}
# Pixels of the series' colour a chart of ours draws at least (a 2 px line across a
# good part of a ~300 px wide chart); a blank or background-only image has none.
MIN_SERIES_PIXELS = 150
# Points every hour chart has before the screenshots: its x axis spans the ring's 60 steps,
# so a line of 2 points is ~6 px long on a desktop chart; 20 points span a third of it.
# (Waiting for 2 only, the pages chart drew 146 such pixels now and then.)
MIN_HOUR_POINTS = 20


def _polylines(html: str, section: str, slug: str) -> list[int]:
    """Point counts of each polyline in one chart of the page's HTML."""
    figure = re.search(rf'id="chart-{section}-{slug}".*?</figure>', html, re.S)
    assert figure is not None, f"no chart {section}-{slug}"
    return [len(p.split()) for p in re.findall(r'<polyline[^>]*points="([^"]*)"', figure[0])]


def _searching(node: NodeHandle, stop: threading.Event) -> None:
    while not stop.is_set():
        node.search("telescope")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def graphed_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeHandle]:
    factory = NodeFactory(tmp_path_factory.mktemp("graphed"))
    with serve_site() as site:
        try:
            node = factory.start(
                "--search-rate",
                "1000",
                "--history-step",
                str(HISTORY_STEP),
                seeds=[f"{site}/index.html"],
                site=site,
            )
            node.wait_idle(60, min_documents=len(SITE_INDEXABLE))
            stop = threading.Event()
            searcher = threading.Thread(target=_searching, args=(node, stop), daemon=True)
            searcher.start()
            try:
                _wait_for_drawn_series(node)
            finally:
                stop.set()
                searcher.join(10)
            yield node
        finally:
            factory.close()


def _wait_for_drawn_series(node: NodeHandle, timeout: float = 30.0) -> None:
    """Until every hour chart has a line of ``MIN_HOUR_POINTS`` and every day chart one
    of at least two."""
    deadline = time.monotonic() + timeout
    missing: list[str] = []
    while time.monotonic() < deadline:
        html = node.get("/status").text
        missing = [
            f"{section}-{chart.slug}"
            for section in ("hour", "day")
            for chart in CHARTS
            if max(_polylines(html, section, chart.slug), default=0)
            < (MIN_HOUR_POINTS if section == "hour" else 2)
        ]
        if not missing:
            return
        time.sleep(HISTORY_STEP)
    raise AssertionError(f"charts without a drawn series after {timeout:.0f} s: {missing}")


def _series_pixels(png: bytes) -> int:
    """Pixels within a small distance of the first series' colour."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int32)
    distance = np.abs(pixels - np.array(ACCENT, dtype=np.int32)).sum(axis=2)
    return int((distance < 60).sum())


@pytest.mark.parametrize("device", list(WIDTHS))
def test_status_graphs_draw_the_crawl_and_the_searches(
    graphed_node: NodeHandle, browser: Browser, device: str, tmp_path: Path
) -> None:
    width = WIDTHS[device]
    phone = device == "phone"
    context = browser.new_context(
        viewport={"width": width, "height": 900}, is_mobile=phone, has_touch=phone
    )
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(graphed_node.url + "/status")
        expect(page.locator("#history-hour h2")).to_have_text(re.compile(r"^The last "))
        assert page.evaluate("document.documentElement.scrollWidth") <= width + 1
        for section in ("hour", "day"):
            for chart in CHARTS:
                figure = page.locator(f"#chart-{section}-{chart.slug}")
                expect(figure).to_be_visible()
                points = figure.locator("polyline").evaluate_all(
                    "lines => lines.map(l => l.points.numberOfItems)"
                )
                assert max(points, default=0) >= 2, f"{section}-{chart.slug}: {points}"
                box = figure.bounding_box()
                assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
            shot = tmp_path / f"status-{section}-{device}.png"
            page.locator(f"#history-{section}").screenshot(path=str(shot))
            assert shot.read_bytes().startswith(b"\x89PNG")
        # The pages chart: drawn in the series' colour on the card's background.
        pages = page.locator("#chart-hour-pages svg").screenshot(
            path=str(tmp_path / f"pages-{device}.png")
        )
        image = Image.open(io.BytesIO(pages)).convert("RGB")
        colours = image.getcolors(maxcolors=1 << 16) or []
        background = max(colours)[1] if colours else None
        assert background == CARD, f"the chart's background is {background}"
        assert _series_pixels(pages) >= MIN_SERIES_PIXELS, "no series drawn in the chart"
        everything = page.locator("#history-hour").screenshot()
        assert _series_pixels(everything) >= len(CHARTS) * MIN_SERIES_PIXELS
    finally:
        context.close()
