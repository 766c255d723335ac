"""Helpers shared by the benchmarks: the shared corpus, subprocess nodes, RSS sampling."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
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


# The shared VM's speed moves from session to session (and within one): this fixed loop
# took 0.58 s in session 13, 1.08-1.46 s in sessions 14-15, 0.97 s in session 19. Latency
# figures are comparable only beside it.
HOST_LOOP = 10**7


def host_loop_s() -> float:
    """Seconds this host takes for ``sum(i * i for i in range(HOST_LOOP))``, the best of
    three: a reading of the host's speed printed beside every latency figure."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        sum(i * i for i in range(HOST_LOOP))
        best = min(best, time.perf_counter() - started)
    return round(best, 3)


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
    operator's (seeds and the full /api/status need the credential). ``cwd`` (first on
    ``sys.path`` under ``python -m``) and ``env`` choose which code it runs."""

    def __init__(
        self,
        data_dir: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
        start_within: float = 60.0,
    ) -> None:
        self.name = data_dir.name
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
            cwd=cwd,
            # Benchmarks ask as one machine, thousands of times: not a person's search rate.
            env={**os.environ, "RHIZOME_SEARCH_RATE": "10000", **(env or {})},
        )
        self.url = ""
        self.log: list[str] = []
        assert self.proc.stdout is not None
        deadline = time.monotonic() + start_within
        for line in self.proc.stdout:
            self.log.append(line)
            m = re.search(r"listening on (http://\S+?)/?$", line.strip())
            if m:
                self.url = m.group(1)
                break
            if time.monotonic() > deadline:
                break
        if not self.url:
            self.proc.kill()
            raise RuntimeError(f"node {self.name} did not start:\n{''.join(self.log[-20:])}")
        # Keep draining output so the child never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if len(self.log) < 20_000:
                self.log.append(line)

    def get(self, path: str, timeout: float = 60) -> Any:
        req = urllib.request.Request(self.url + path, headers=operator_headers(self.data_dir))
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.load(resp)

    def post(self, path: str, body: Any) -> Any:
        req = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", **operator_headers(self.data_dir)},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.load(resp)

    def rss_mb(self) -> float:
        """Resident memory of the node and its parser processes together."""
        return tree_rss_mb(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if not self.alive():
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=25)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


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


def proc_total(pids: list[int], name: str, key: str) -> int:
    """The sum over ``pids`` of the number after ``key`` in ``/proc/<pid>/<name>`` (a
    process that is gone counts 0)."""
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/{name}").read_text().splitlines():
                if line.startswith(key):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MiB."""
    return proc_total([pid, *descendants(pid)], "status", "VmRSS:") / 1024
