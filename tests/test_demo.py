"""`rhizome demo`: the README's first command gives a working offline network to search."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEARCH_AT = re.compile(r"search at (http://\S+?)/? ")
STOP_LIMIT = 45.0  # Ctrl-C to exit: ~1 s alone; two full-suite runs saw > 20 s (cause open)
DEMO_TIMEOUT = 120.0


def test_demo_crawls_pydoc_pages_and_answers_from_every_node(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RHIZOME_")}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rhizome",
            "demo",
            "--http",
            "127.0.0.1:0",
            "--docs-dir",
            str(tmp_path / "docs"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    found = threading.Event()
    urls: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for chunk in proc.stdout:
            for line in chunk.split("\r"):
                lines.append(line)
                m = SEARCH_AT.search(line)
                if m:
                    urls.append(m.group(1))
                    urls.extend(re.findall(r"http://127\.0\.0\.1:\d+", line.split("also:")[-1]))
                    found.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert found.wait(DEMO_TIMEOUT), "".join(lines[-40:])
        assert len(urls) == 3, urls  # the search page and the two other nodes
        assert any("module pages ready" in line for line in lines)
        for base in urls:
            query = urllib.parse.urlencode({"q": "heap queue algorithm", "limit": 5})
            with urllib.request.urlopen(f"{base.rstrip('/')}/api/search?{query}", timeout=10) as r:
                data = json.load(r)
            titles = [res["title"] for res in data["results"]]
            assert titles and titles[0] == "Python: module heapq", (base, titles)
            assert data["peers_answered"] == data["peers_asked"]
        with urllib.request.urlopen(urls[0].rstrip("/") + "/?q=heapq", timeout=10) as r:
            assert "module heapq" in r.read().decode()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        stopping = time.monotonic()
        try:
            proc.wait(STOP_LIMIT)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGUSR1)  # every thread's stack into the output
            time.sleep(1.0)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    took = time.monotonic() - stopping
    print(f"\ndemo stopped {took:.1f} s after Ctrl-C")
    assert proc.returncode == 0, "".join(lines[-200:])
