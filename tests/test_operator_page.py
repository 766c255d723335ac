"""The operator page (``/operator``) in a real browser: Debian's chromium driven by
Playwright, against real ``rhizome node`` subprocesses crawling fixture sites on loopback.

The operator logs in with the token, adds seeds, blocks a domain (its pages leave the
results, its URLs are fetched no more), subscribes to another node's signed list (its
blocks say whose they are) and lifts a distrust. The distrusted peer is the spot checker's
own record on disk (``distrusted.json``, as ``SpotChecker.distrust`` writes it), made before
the node starts: a liar peer earning it would take minutes of checks
(``tests/test_trust_peers.py`` covers that).

The blocked site is reached as ``localhost``, the kept one as ``127.0.0.1``, the one the
subscribed list blocks as ``127.0.0.2``: hosts a rule can tell apart, all on this machine.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import (
    SITE_INDEXABLE,
    FixtureSite,
    HttpResponse,
    NodeFactory,
    NodeHandle,
    serve_site,
)

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

QUIET = 1.5  # seconds a blocked URL would have had to reach its site
LIAR = "e1" * 20  # a publisher the spot checker distrusted before this run


@pytest.fixture
def sites() -> Iterator[tuple[FixtureSite, FixtureSite, FixtureSite]]:
    """kept (127.0.0.1), blocked (reached as localhost), listed (127.0.0.2)."""
    with serve_site() as kept, serve_site() as blocked, serve_site(host="127.0.0.2") as listed:
        yield kept, blocked, listed


def localhost(site: FixtureSite) -> str:
    return site.url.replace("127.0.0.1", "localhost")


def distrusted_before_start(data_dir: Path) -> None:
    data_dir.mkdir(parents=True)
    entry = {"since": time.time() - 3600, "reason": "2 of 3 checks failed"}
    (data_dir / "distrusted.json").write_text(json.dumps({"peers": {LIAR: entry}}))


def log_in(page: Page, node: NodeHandle) -> None:
    page.goto(node.url + "/operator")
    expect(page.get_by_role("heading", name="Operator login")).to_be_visible()
    page.get_by_label("Operator token").fill("not the token at all, surely")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("That is not the operator token.")
    page.get_by_label("Operator token").fill(node.operator_headers()["Authorization"][7:])
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Operator", exact=True)).to_be_visible()


def notice(page: Page, text: str | re.Pattern[str]) -> None:
    expect(page.locator("#notices .notice", has_text=text)).to_be_visible()


def result_hosts(page: Page, node: NodeHandle, q: str) -> set[str]:
    page.goto(node.url + "/?" + urllib.parse.urlencode({"q": q, "limit": 50}))
    expect(page.locator("#summary")).to_be_visible()
    links = page.locator("article.result h3 a")
    return {
        urllib.parse.urlsplit(links.nth(i).get_attribute("href") or "").hostname or ""
        for i in range(links.count())
    }


def test_the_operator_seeds_blocks_subscribes_and_lifts_a_distrust_in_a_browser(
    node_factory: NodeFactory,
    sites: tuple[FixtureSite, FixtureSite, FixtureSite],
    page: Page,
    tmp_path: Path,
) -> None:
    kept, blocked, listed = sites
    friend = node_factory.start("--dht", "127.0.0.1:0", "--max-depth", "0")
    friend.post_json("/api/blocklist/name", {"name": "friends"}, expect=200)
    friend.post_json("/api/blocklist/add", {"rules": ["127.0.0.2", "*.spam.example"]}, expect=200)
    friend_id = friend.status()["network"]["node_id"]
    data_dir = tmp_path / "operated"
    distrusted_before_start(data_dir)
    node = node_factory.start("--dht", "127.0.0.1:0", data_dir=data_dir)

    log_in(page, node)
    cookie = next(c for c in page.context.cookies() if c["name"] == "rhizome_operator")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/operator"

    # Seeds: both sites, one URL a line.
    page.get_by_label("Seed URLs").fill(f"{kept}/index.html\n{localhost(blocked)}/index.html")
    page.get_by_role("button", name="Add seeds").click()
    notice(page, "Seeds queued: 2 of 2.")
    node.wait_idle(60, min_documents=2 * len(SITE_INDEXABLE))
    assert result_hosts(page, node, "telescope") == {"127.0.0.1", "localhost"}

    # The crawl queue by host shows both, with a block button for each.
    page.goto(node.url + "/operator")
    queue = page.locator("#queue")
    expect(queue.locator("tr", has_text=localhost(blocked).split("//")[1])).to_be_visible()
    expect(queue.locator("tr", has_text=kept.url.split("//")[1])).to_be_visible()

    # Block a domain: its pages leave the results and its URLs are fetched no more.
    page.get_by_label("Host or domain to block").fill("localhost")
    page.get_by_role("button", name="Block and delete").click()
    notice(page, f"Blocked localhost: {len(SITE_INDEXABLE)} pages deleted from the index")
    expect(page.locator("#block-rules tr", has_text="localhost")).to_contain_text("this node")
    expect(queue.locator("tr", has_text="localhost")).to_have_count(0)
    assert result_hosts(page, node, "telescope") == {"127.0.0.1"}
    fetched = blocked.requests
    page.goto(node.url + "/operator")
    page.get_by_label("Seed URLs").fill(f"{localhost(blocked)}/comets.html")
    page.get_by_role("button", name="Add seeds").click()
    notice(page, "is blocked by this node (rule localhost).")
    queue.locator("tr", has_text=kept.url.split("//")[1]).get_by_role(
        "button", name="Recrawl now"
    ).click()
    notice(page, re.compile(r"\d+ URLs of 127\.0\.0\.1:\d+ are due now\."))
    node.wait_idle(60)
    time.sleep(QUIET)
    assert blocked.requests == fetched, "the blocked site was fetched after the block"

    # Subscribe to the friend's list: its blocks say whose they are.
    page.get_by_label("Node id of the list's node").fill(friend_id)
    page.get_by_label("URL of the list's node").fill(friend.url)
    page.get_by_role("button", name="Subscribe").click()
    label = f"list friends ({friend_id[:12]})"
    notice(page, f"Subscribed to {label}: 2 rules.")
    expect(page.locator("#subscription-list tr", has_text=friend_id)).to_contain_text("friends")
    expect(page.locator("#block-rules tr", has_text="*.spam.example")).to_contain_text(label)
    page.get_by_label("Host or URL to check").fill("cdn.spam.example")
    page.get_by_role("button", name="Check").click()
    notice(page, f"cdn.spam.example is blocked by {label} (rule *.spam.example).")
    page.get_by_label("Seed URLs").fill(f"{listed}/index.html")
    page.get_by_role("button", name="Add seeds").click()
    notice(page, f"is blocked by {label} (rule 127.0.0.2).")
    time.sleep(QUIET)
    assert listed.requests == {}, "a host the subscribed list blocks was fetched"

    # Lift the distrust.
    row = page.locator("#distrusted tr", has_text=LIAR)
    expect(row).to_contain_text("2 of 3 checks failed")
    row.get_by_role("button", name="Lift").click()
    notice(page, f"Trusting {LIAR[:12]} again.")
    expect(page.locator("#distrust")).to_contain_text("No peer is distrusted.")
    assert node.status()["network"]["distrusted_peers"] == []
    assert json.loads((data_dir / "distrusted.json").read_text())["peers"] == {}

    shot = tmp_path / "operator.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Operator login")).to_be_visible()
    page.goto(node.url + "/operator")  # the session is gone, not only the cookie
    expect(page.get_by_role("heading", name="Operator login")).to_be_visible()


def test_operator_forms_want_the_session_its_csrf_token_and_our_origin(
    node_factory: NodeFactory, page: Page
) -> None:
    node = node_factory.start()
    log_in(page, node)
    field = page.locator('form[action="/operator/block"] input[name="csrf"]')
    csrf = field.get_attribute("value") or ""
    cookie = next(c for c in page.context.cookies() if c["name"] == "rhizome_operator")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with_cookie = {**form, "Cookie": f"rhizome_operator={cookie['value']}"}

    def post(headers: dict[str, str], **fields: str) -> HttpResponse:
        body = urllib.parse.urlencode(fields).encode()
        # urllib follows the 303 back to the page, as a browser does.
        return node.request("POST", "/operator/block", body=body, headers=headers)

    assert post(with_cookie, rule="a.test", csrf="forged").status == 403
    evil = {**with_cookie, "Origin": "https://evil.example"}
    assert post(evil, rule="b.test", csrf=csrf).status == 403
    assert post({**with_cookie, "Origin": "null"}, rule="b.test", csrf=csrf).status == 403
    no_session = post(form, rule="c.test", csrf=csrf)
    assert no_session.status == 200 and "Operator login" in no_session.text
    done = post({**with_cookie, "Origin": node.url}, rule="d.test", csrf=csrf)
    assert done.status == 200 and "Blocked d.test" in done.text
    rules = node.request("GET", "/api/blocklist", headers=node.operator_headers()).json()["rules"]
    assert [r["rule"] for r in rules] == ["d.test"]
    # The login form is no other site's either, whatever token it carries.
    token = node.operator_headers()["Authorization"][7:]
    login = node.request(
        "POST",
        "/operator/login",
        body=urllib.parse.urlencode({"token": token}).encode(),
        headers={**form, "Origin": "https://evil.example"},
    )
    assert login.status == 403 and "set-cookie" not in login.headers
