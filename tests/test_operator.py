"""Issue #12, threat row 1: only the node's operator may make it fetch URLs or read its
detailed state, whatever address the request comes from.

Real ``rhizome node`` subprocesses on loopback: every request here comes from 127.0.0.1, as
every request does behind a reverse proxy on the same host, so nothing may be exempt for it.
What a user would check: the status code, and that the node did not fetch or queue the URL.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, FixtureSite, NodeFactory, NodeHandle

pytestmark = pytest.mark.timeout(120)

QUIET = 1.0  # seconds a refused seed would have had to reach the fixture site


def post_seeds(node: NodeHandle, body: bytes, **headers: str) -> tuple[int, dict[str, str], str]:
    resp = node.request("POST", "/api/seeds", body=body, headers=headers)
    return resp.status, resp.headers, resp.text


def assert_nothing_crawled(node: NodeHandle, site: FixtureSite) -> None:
    time.sleep(QUIET)
    assert site.requests == {}, f"the node fetched {dict(site.requests)}"
    crawl = node.status()["crawl"]  # as the operator, who sees everything
    assert crawl["known_urls"] == 0 and crawl["queued"] == 0, crawl


def test_stranger_cannot_add_seeds_without_the_operator_credential(
    node_factory: NodeFactory, fixture_site: FixtureSite
) -> None:
    node = node_factory.start("--seed-hosts-only", site=fixture_site)
    body = json.dumps({"urls": [f"{fixture_site}/index.html"]}).encode()
    for auth in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic b3A6b3A="}):
        status, headers, text = post_seeds(
            node, body, **{"Content-Type": "application/json"}, **auth
        )
        assert status == 401, (auth, text)
        assert headers["www-authenticate"].startswith("Bearer"), headers
        assert headers["content-type"].startswith("application/json")
        error = json.loads(text)
        assert error["status"] == 401 and "credential" in error["error"]
    # Someone else's token (another node's data dir) is as wrong as none.
    other = node_factory.start()
    status, _h, _t = post_seeds(
        node, body, **{"Content-Type": "application/json"}, **other.operator_headers()
    )
    assert status == 401
    assert_nothing_crawled(node, fixture_site)
    # The operator, from the same address, is heard.
    assert node.seed(f"{fixture_site}/index.html")["accepted"] == [f"{fixture_site}/index.html"]
    assert node.wait_idle(30)["documents"] > 1


def test_cross_site_text_plain_post_cannot_add_seeds(
    node_factory: NodeFactory, fixture_site: FixtureSite
) -> None:
    """A page the operator opens can post a form to the node without asking the browser
    first (text/plain, form-encoded, multipart); none of them may reach /api/seeds, not
    even with the right credential, and no request from another site's page may."""
    node = node_factory.start("--seed-hosts-only", site=fixture_site)
    seed = f"{fixture_site}/index.html"
    as_json = json.dumps({"urls": [seed]}).encode()
    operator = node.operator_headers()
    forms = [
        (as_json, "text/plain"),  # <form enctype="text/plain"> with a JSON-looking field
        (as_json, "text/plain;charset=UTF-8"),
        (b"urls=" + seed.encode(), "application/x-www-form-urlencoded"),
        (b'--b\r\nContent-Disposition: form-data; name="urls"\r\n\r\n{}\r\n--b--\r\n', ""),
    ]
    for body, ctype in forms:
        ctype = ctype or "multipart/form-data; boundary=b"
        # What the browser sends: no credential, another site's Origin.
        status, _h, text = post_seeds(
            node, body, **{"Content-Type": ctype, "Origin": "https://evil.example"}
        )
        assert status == 401, (ctype, text)
        status, _h, text = post_seeds(node, body, **{"Content-Type": ctype}, **operator)
        assert status == 415, (ctype, text)
        assert "application/json" in json.loads(text)["error"]
    status, _h, _t = post_seeds(node, as_json, **operator)  # no Content-Type at all
    assert status == 415
    for origin in ("https://evil.example", "null", f"{node.url}.evil.example"):
        status, _h, text = post_seeds(
            node, as_json, **{"Content-Type": "application/json", "Origin": origin}, **operator
        )
        assert status == 403, (origin, text)
    assert_nothing_crawled(node, fixture_site)
    # The node's own page (same origin) with the credential and JSON is the operator.
    status, _h, text = post_seeds(
        node, as_json, **{"Content-Type": "application/json", "Origin": node.url}, **operator
    )
    assert status == 202, text
    assert node.wait_idle(30)["documents"] > 1


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RHIZOME_")}
    return subprocess.run(
        [sys.executable, "-m", "rhizome", *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_seed_finds_the_credential_and_adds_seeds(
    node_factory: NodeFactory, fixture_site: FixtureSite, tmp_path: Path
) -> None:
    node = node_factory.start("--seed-hosts-only", site=fixture_site)
    http = node.url.removeprefix("http://").rstrip("/")
    seed = f"{fixture_site}/planets.html"
    # The settings `rhizome node` reads name the data dir and the address: no flag needed.
    done = run_cli(
        "seed",
        seed,
        "not a url",
        env={"RHIZOME_DATA_DIR": str(node.data_dir), "RHIZOME_HTTP": http},
    )
    assert done.stdout.splitlines() == ["accepted 1 of 2 URLs", f"  {seed}"], done
    assert done.returncode == 1 and "1 refused" in done.stderr, done
    assert node.wait_idle(30)["documents"] > 1
    assert fixture_site.hits("/planets.html") == 1

    again = run_cli(
        "seed", f"{fixture_site}/moons.html", "--data-dir", str(node.data_dir), "--node", node.url
    )
    assert again.returncode == 0, again
    assert again.stdout.startswith("accepted 1 of 1 URLs"), again

    # Refusals and an unreachable node: a clear message and a non-zero exit.
    empty = tmp_path / "no-node-here"
    missing = run_cli("seed", seed, "--data-dir", str(empty), "--node", node.url)
    assert missing.returncode != 0 and "no operator credential" in missing.stderr, missing
    other = node_factory.start()
    wrong = run_cli("seed", seed, "--data-dir", str(other.data_dir), "--node", node.url)
    assert wrong.returncode != 0, wrong
    assert "refused" in wrong.stderr and str(other.data_dir) in wrong.stderr, wrong
    gone = run_cli("seed", seed, "--data-dir", str(node.data_dir), "--node", "http://127.0.0.1:9")
    assert gone.returncode != 0 and "cannot reach a node" in gone.stderr, gone


def test_credential_is_made_once_and_kept_private(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "node"
    node = node_factory.start(data_dir=data_dir)
    path = data_dir / "operator.token"
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == 0o600, oct(mode)
    first = path.read_text().strip()
    assert len(first) >= 43  # 32 random bytes, urlsafe base64
    assert [p.name for p in data_dir.iterdir() if "operator" in p.name] == ["operator.token"]
    node.stop()
    again = node_factory.start(data_dir=data_dir)
    assert path.read_text().strip() == first, "a restart must keep the operator's token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert again.status()["storage"]["free_bytes"] > 0  # the old token still opens it
    # Each node its own: another data dir has another token.
    other = node_factory.start()
    assert (other.data_dir / "operator.token").read_text().strip() != first


def test_status_shows_anyone_counts_and_the_operator_everything(
    node_factory: NodeFactory, fixture_site: FixtureSite
) -> None:
    """Decision (docs/ARCHITECTURE.md): /api/status, /status and /metrics are public
    with counts; errors, free space, the DHT address and the peers asked, backed off or
    distrusted (they follow what was searched) need the credential."""
    node = node_factory.start("--dht", "127.0.0.1:0", seeds=[f"{fixture_site}/index.html"])
    node.wait_idle(30)
    node.get_json("/api/search", q="telescope", scope="network")
    public = node.get_json("/api/status")
    assert public["idle"] is True and public["documents"] > 1
    assert public["crawl"]["fetched"] > 1 and "queued" in public["crawl"]
    assert public["storage"] == {"disk_full": False, "ok": True}
    assert "last_error" not in public["index"]
    assert set(public["network"]) == {
        "node_id",
        "peers",
        "shards_held",
        "published_generation",
        "reachability",
        "relayed",
        "direct",
    }
    # How peers behind NAT were reached: counts, never which peers.
    assert public["network"]["direct"]["peers_direct"] == 0
    assert not re.search(r"[0-9a-f]{40}", json.dumps(public["network"]["direct"]))
    full = node.status()
    for key in ("unresponsive_peers", "traffic_bytes", "dht", "distrusted_peers"):
        assert key in full["network"], full["network"]
    assert full["storage"]["free_bytes"] > 0
    wrong = node.request("GET", "/api/status", headers={"Authorization": "Bearer wrong"})
    assert wrong.status == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
    assert node.get("/metrics").status == 200
    about = node.get("/status")
    assert about.status == 200 and "free_bytes" not in about.text
