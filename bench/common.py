"""Helpers shared by the benchmarks: the shared corpus, subprocess nodes, RSS sampling."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("crawler", "index", "dht", "federation", "api")


def import_tree(code: Path, into: Path) -> Path:
    """A folder whose ``rhizome`` package is checkout ``code``, for ``PYTHONPATH``.

    The repository's top-level folders are installed as ``rhizome.<folder>`` (pyproject's
    package-dir mapping), so a checkout that was never installed is imported through
    symlinks: ``into/rhizome/api -> code/api`` and so on.
    """
    package = into / "rhizome"
    package.mkdir(parents=True, exist_ok=True)
    for source in [*(code / "rhizome").glob("*.py"), *(code / name for name in PACKAGES)]:
        link = package / source.name
        if not link.exists():
            link.symlink_to(source.resolve())
    return into


SHARED = ROOT.parent / "shared"
CORPUS_DIR = Path(os.environ.get("RHIZOME_CORPUS", "/tmp/rhizome-corpus"))
CORPUS_SEEDS = [f"http://127.0.0.{i}:8080/index.html" for i in range(11, 16)]


def ensure_corpus() -> None:
    """Fetch (once) and serve the shared offline corpus on 127.0.0.11-15:8080."""
    if not (CORPUS_DIR / "sites").is_dir():
        subprocess.run([str(SHARED / "corpus" / "fetch.sh"), str(CORPUS_DIR)], check=True)
    try:
        urllib.request.urlopen(CORPUS_SEEDS[0], timeout=2).read()
    except OSError:
        subprocess.run([str(SHARED / "corpus" / "serve.sh"), str(CORPUS_DIR), "start"], check=True)
        time.sleep(0.5)


def operator_headers(data_dir: Path) -> dict[str, str]:
    """The node's operator credential (``<data_dir>/operator.token``), as `rhizome seed`
    sends it; none for a checkout older than the credential (it has no token file)."""
    try:
        token = (data_dir / "operator.token").read_text().strip()
    except FileNotFoundError:
        return {}
    return {"Authorization": f"Bearer {token}"}


class NodeProcess:
    """A ``rhizome node`` subprocess on a free loopback port; its requests are the
    operator's (seeds and the full /api/status need the credential)."""

    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rhizome",
                "node",
                "--data-dir",
                str(data_dir),
                "--http",
                "127.0.0.1:0",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            # Benchmarks ask as one machine, thousands of times: not a person's search rate.
            env={**os.environ, "RHIZOME_SEARCH_RATE": "10000", **(env or {})},
        )
        self.url = ""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        for line in self.proc.stdout:
            m = re.search(r"listening on (http://\S+?)/?$", line.strip())
            if m:
                self.url = m.group(1)
                break
            if time.monotonic() > deadline:
                break
        if not self.url:
            self.proc.kill()
            raise RuntimeError("node did not start")
        # Keep draining output so the child never blocks on a full pipe.
        import threading

        self.log: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if len(self.log) < 10_000:
                self.log.append(line)

    def get(self, path: str) -> Any:
        req = urllib.request.Request(self.url + path, headers=operator_headers(self.data_dir))
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)

    def post(self, path: str, body: Any) -> Any:
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", **operator_headers(self.data_dir)},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)

    def rss_mb(self) -> float:
        """Resident memory of the node and its parser processes together."""
        total = 0
        pids = [self.proc.pid]
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            pids += [int(p) for p in children.split()]
        except OSError:
            pass
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            kids = [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            continue
        out += kids
        stack += kids
    return out


def tree_rss_mb(pid: int) -> float:
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024
