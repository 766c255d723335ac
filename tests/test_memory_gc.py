"""The node's garbage collector settings (``api/memory.settle_gc``), in a fresh process so
this one's collector is left as it was."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import gc, json, time
from rhizome.api import memory
startup = [[i] for i in range(200_000)]  # what a node holds from its start on
before = len(gc.get_objects())
memory.settle_gc()
after = len(gc.get_objects())
class Cycle:
    pass
for _ in range(1000):
    a, b = Cycle(), Cycle()
    a.other, b.other = b, a
del a, b
collected = gc.collect()
print(json.dumps({"before": before, "after": after, "collected": collected,
                  "young": gc.get_threshold()[0], "kept": len(startup)}))
"""


def test_a_settled_node_walks_only_what_came_later_and_still_frees_cycles() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    found = json.loads(out.stdout)
    assert found["before"] > 200_000
    assert found["after"] < 1_000  # the startup heap is out of the collector's walks
    assert found["collected"] >= 2_000  # new cyclic garbage is still freed
    assert found["young"] > 700 and found["kept"] == 200_000
