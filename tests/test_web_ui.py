"""The web UI in a real browser: Debian's chromium driven by Playwright.

CI installs chromium (``apt-get install chromium``); a machine without it fails these tests
rather than skipping them, so a missing browser can never turn the suite green.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import pytest
from conftest import SITE_INDEXABLE, TIMEOUT_MS, NodeHandle
from playwright.sync_api import Browser, Dialog, Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(90)]


def query_of(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def result_titles(page: Page) -> list[str]:
    return page.locator("article.result h3 a").all_inner_texts()


def test_search_from_the_home_page_highlights_matches(crawled_node: NodeHandle, page: Page) -> None:
    page.goto(crawled_node.url + "/")
    expect(page).to_have_title("Rhizome")
    box = page.get_by_role("searchbox", name="Search")
    expect(box).to_be_focused()  # autofocus: type straight away
    box.fill("dobsonian telescope")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"\?q=dobsonian"))
    assert query_of(page.url)["q"] == "dobsonian telescope"
    expect(page).to_have_title(re.compile("dobsonian telescope"))
    expect(page.get_by_role("searchbox", name="Search")).to_have_value("dobsonian telescope")
    results = page.locator("article.result")
    expect(results.first).to_be_visible()
    assert result_titles(page)[0] == "Choosing a Telescope"
    marks = results.first.locator("p mark")
    expect(marks.first).to_be_visible()
    marked = {m.lower() for m in marks.all_inner_texts()}
    assert marked & {"dobsonian", "telescope", "telescopes"}, marked
    expect(page.locator("#summary")).to_contain_text("results")
    link = results.first.locator("h3 a")
    assert link.get_attribute("href", timeout=TIMEOUT_MS) == f"{crawled_node.site}/telescopes.html"


def test_paging_through_results(crawled_node: NodeHandle, page: Page) -> None:
    page.goto(crawled_node.url + "/?" + urllib.parse.urlencode({"q": "backyard", "limit": 2}))
    seen: list[str] = []
    for number in range(1, 100):
        titles = result_titles(page)
        assert 1 <= len(titles) <= 2, titles
        seen += titles
        assert int(query_of(page.url).get("offset", "0")) == (number - 1) * 2
        next_link = page.get_by_role("link", name=re.compile("Next"))
        if next_link.count() == 0:
            break
        next_link.click()
        page.wait_for_url(re.compile(rf"offset={number * 2}\b"))
        assert query_of(page.url)["limit"] == "2", "paging keeps the page size"
    assert len(seen) == len(SITE_INDEXABLE)
    assert len(set(seen)) == len(seen), "a result appeared on two pages"
    page.get_by_role("link", name=re.compile("Previous")).click()
    page.wait_for_url(re.compile(r"offset=10\b"))
    assert result_titles(page) == seen[10:12]


def test_about_link_shows_node_status(crawled_node: NodeHandle, page: Page) -> None:
    page.goto(crawled_node.url + "/?q=comet")
    page.get_by_role("link", name="About this node").click()
    page.wait_for_url(crawled_node.url + "/status")
    expect(page.get_by_role("heading", name="About this node")).to_be_visible()
    row = page.locator("#status tr", has=page.locator("th", has_text="Documents in index"))
    expect(row.locator("td")).to_have_text(str(len(SITE_INDEXABLE)))
    expect(page.locator("#status tr", has_text="State").locator("td")).to_have_text("idle")
    page.get_by_role("link", name="Rhizome").click()
    page.wait_for_url(crawled_node.url + "/")


def test_script_payload_stays_text(crawled_node: NodeHandle, page: Page) -> None:
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.goto(crawled_node.url + "/?q=glossary+parsec")
    expect(page.locator("article.result h3 a").first).to_have_text(
        "Astronomy Glossary <script>alert(1)</script>"
    )
    assert page.locator("article.result script").count() == 0
    assert dialogs == []


def test_screenshot(crawled_node: NodeHandle, page: Page, tmp_path: Path) -> None:
    page.goto(crawled_node.url + "/?q=moon")
    expect(page.locator("article.result").first).to_be_visible()
    shot = tmp_path / "results.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000, f"screenshot is suspiciously small: {len(data)} bytes"


@pytest.mark.parametrize("path", ["/", "/?q=backyard", "/?q=observing+log&limit=2", "/status"])
def test_phone_viewport_has_no_horizontal_scroll(
    crawled_node: NodeHandle, browser: Browser, path: str
) -> None:
    context = browser.new_context(
        viewport={"width": 375, "height": 700}, is_mobile=True, has_touch=True
    )
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(crawled_node.url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375 + 1, f"{path} is {width}px wide on a 375px phone"
        box = page.get_by_role("searchbox", name="Search").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 376, box
        button = page.get_by_role("button", name="Search").bounding_box()
        assert button is not None and button["x"] + button["width"] <= 376, button
    finally:
        context.close()
