"""What the operator decided at run time, kept in ``<data_dir>/operator.json``.

This node's blocklist (its rules, when each was added, the name it is published under) and
the hosts pinned from the operator page or CLI (``pin_host`` in the configuration pins
too, but those are the configuration's and come back with it). Written whole to a
temporary file and renamed, so a kill leaves the old state or the new one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rhizome.crawler import BadRule, parse_rule
from rhizome.crawler.blocklist import host_name
from rhizome.federation.blocklists import MAX_LIST_RULES, MAX_NAME_CHARS

log = logging.getLogger(__name__)

STATE_FILE = "operator.json"
MAX_OWN_RULES = MAX_LIST_RULES  # what this node publishes must fit what others take
MAX_PINS = 1_000
MAX_HOST_CHARS = 260  # a DNS name and a port


class StateError(ValueError):
    """An operator request the state cannot take (too many rules or pins, a bad host)."""


def parse_host_key(text: str) -> str:
    """A host as the crawler keys it (``example.org``, ``10.0.0.5:8080``): a URL stands for
    its host. StateError if it is not one."""
    host = text.strip().lower()
    if "://" in host:
        host = host.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    if not host.isascii():  # as canonical URLs spell it (host_name drops only the port)
        name, colon, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
        host = host_name(name) + colon + port
    if not host or len(host) > MAX_HOST_CHARS or any(c.isspace() or c in "/?#" for c in host):
        raise StateError(f"{text[:80]!r} is not a host (example.org, or 10.0.0.5:8080)")
    return host


@dataclass(slots=True)
class OperatorState:
    path: Path
    list_name: str = ""
    rules: dict[str, float] = field(default_factory=dict)  # rule -> added at (unix time)
    pins: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, data_dir: Path) -> OperatorState:
        state = cls(Path(data_dir) / STATE_FILE)
        try:
            data: Any = json.loads(state.path.read_text())
        except FileNotFoundError:
            return state
        except (OSError, ValueError) as exc:
            # Kept aside, not overwritten by the next change: the operator may mend it.
            aside = state.path.with_name(f"{STATE_FILE}.unreadable-{int(time.time())}")
            with contextlib.suppress(OSError):
                os.replace(state.path, aside)
            log.error(
                "unreadable %s (%s): moved to %s; starting with no blocklist or pins",
                state.path,
                exc,
                aside,
            )
            return state
        if not isinstance(data, dict):
            return state
        state.list_name = str(data.get("list_name", ""))[:MAX_NAME_CHARS]
        for entry in list(data.get("rules", []))[:MAX_OWN_RULES]:
            try:
                state.rules[parse_rule(str(entry["rule"]))] = float(entry.get("added_at", 0))
            except (BadRule, TypeError, KeyError, ValueError):
                log.warning("%s: skipped the rule %r", state.path, entry)
        for pin in list(data.get("pins", []))[:MAX_PINS]:
            try:
                state.pins.append(parse_host_key(str(pin)))
            except StateError:
                log.warning("%s: skipped the pin %r", state.path, pin)
        return state

    def save(self) -> None:
        """Write the state (on a thread: it is a file write and an fsync)."""
        data = {
            "list_name": self.list_name,
            "rules": [{"rule": r, "added_at": t} for r, t in self.rules.items()],
            "pins": self.pins,
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=1)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, self.path)

    def add_rules(self, rules: list[str]) -> list[str]:
        """Rules (parsed) this state did not have, added; StateError past the cap."""
        fresh = [r for r in dict.fromkeys(rules) if r not in self.rules]
        if len(self.rules) + len(fresh) > MAX_OWN_RULES:
            raise StateError(f"at most {MAX_OWN_RULES} rules in this node's blocklist")
        now = time.time()
        for rule in fresh:
            self.rules[rule] = now
        return fresh

    def remove_rules(self, rules: list[str]) -> list[str]:
        return [r for r in rules if self.rules.pop(r, None) is not None]

    def add_pins(self, hosts: list[str]) -> list[str]:
        fresh = [h for h in dict.fromkeys(hosts) if h not in self.pins]
        if len(self.pins) + len(fresh) > MAX_PINS:
            raise StateError(f"at most {MAX_PINS} pinned hosts")
        self.pins.extend(fresh)
        return fresh

    def remove_pins(self, hosts: list[str]) -> list[str]:
        gone = [h for h in hosts if h in self.pins]
        self.pins = [h for h in self.pins if h not in gone]
        return gone
