"""The blocklist: which hosts this node neither crawls, nor indexes, nor shows.

Rules (``parse_rule`` is the one place they are read, whoever wrote them)::

    example.com        example.com and every host under it (www.example.com, a.b.example.com)
    *.example.com      every host under example.com, not example.com itself
    ads*.example.com   a label pattern: ``*`` stands for any characters within one label;
                       the hosts it matches and every host under them
    =www.example.com   that one host only
    192.0.2.7, ::1     an IP address (only that address)

Names are compared in lower case and in their ASCII form (``bücher.de`` is
``xn--bcher-kva.de``, as canonical URLs spell it); a port is ignored (a rule names a host,
every port of it); a URL stands for its host. A rule may not be a whole public suffix
(``com``, ``co.uk``, ``github.io``): ``*.co.uk`` says so on purpose.

Rules come from sources: this node's own list and the lists it subscribes to
(``federation/blocklists.py``). A match says which rule of which source blocked a host, so
every place that shows a block can say why ("blocked by list …").
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

import idna

# The one copy of the Public Suffix List in memory is domains.py's (loaded on first use).
from .domains import _suffixes, registrable_domain
from .errors import BadRule

MAX_RULE_CHARS = 253  # a DNS name at most
# Label patterns are tried as one regular expression per host not in the cache; literal
# rules cost a set lookup per label whatever their number.
MAX_PATTERN_RULES = 1_000
# Hosts whose verdict is remembered: a crawled page's links name few hosts, up to 20,000
# times over.
HOST_CACHE_SIZE = 4_096
OWN = ""  # the source id of this node's own rules
_LABEL = re.compile(r"[a-z0-9_*](?:[a-z0-9_*-]*[a-z0-9_*])?")


@dataclass(frozen=True, slots=True)
class Block:
    """Why a host is blocked: the rule, and the source it came from."""

    rule: str
    source: str  # OWN, or a subscription's id
    label: str  # what to tell the operator: "this node" or "list <name> (<node id>)"

    def describe(self) -> str:
        return f"blocked by {self.label} (rule {self.rule})"


def host_name(host: str) -> str:
    """A host (or a crawler host key with its port) as rules see it: lower case, ASCII,
    no port, no brackets, no trailing dot. What cannot be encoded is kept as lower text
    (it then matches no rule but one spelled the same)."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    name = name.rstrip(".")
    if name.isascii():
        return name
    try:
        return idna.encode(name, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return name


def _ip(name: str) -> str | None:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return None


def is_public_suffix(name: str) -> bool:
    """Whether ``name`` is on the list as a public suffix (``com``, ``co.uk``, ``github.io``):
    blocking one whole would block every domain registered under it. A TLD the list does
    not know (``localhost``, ``example``) is nobody's suffix here."""
    return bool(_suffixes().is_public(name, accept_unknown=False))


def parse_rule(text: str) -> str:
    """``text`` as a rule in its one spelling (see the module's docstring); BadRule says
    what is wrong with it."""
    raw = text.strip()
    if not raw:
        raise BadRule("a rule names a host or domain, e.g. example.com")
    exact = raw.startswith("=")
    body = raw[1:].strip() if exact else raw
    if "://" in body:
        body = body.split("://", 1)[1]
        body = re.split(r"[/?#]", body, maxsplit=1)[0].rsplit("@", 1)[-1]
    if not body or any(c.isspace() for c in body):
        raise BadRule(f"{raw[:80]!r}: a rule is one host or domain name, without spaces")
    address = _ip(host_name(body))
    if address is not None:
        return address  # an address is only itself: "=" changes nothing
    name = host_name(body)
    if not name.isascii():  # a pattern's literal labels are encoded one by one
        name = ".".join(part if "*" in part else host_name(part) for part in name.split("."))
    if len(name) > MAX_RULE_CHARS:
        raise BadRule(f"{raw[:80]!r}: longer than {MAX_RULE_CHARS} characters")
    labels = name.split(".")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise BadRule(
                f"{raw[:80]!r}: {label!r} is not a host name label "
                "(letters, digits, '-', and '*' for any characters)"
            )
    if "*" in labels[-1]:
        raise BadRule(f"{raw[:80]!r}: the last label (the TLD) cannot be a pattern")
    if exact and "*" in name:
        raise BadRule(f"{raw[:80]!r}: '=' names one host; it takes no '*'")
    if not exact and "*" not in name and is_public_suffix(name):
        raise BadRule(
            f"{raw[:80]!r} is a public suffix: it would block every domain under it; "
            f"write *.{name} if that is meant"
        )
    return f"={name}" if exact else name


def domain_rule(text: str) -> str:
    """The rule for the whole registrable domain of the host ``text`` names (a host, a
    URL or a rule): ``www.example.co.uk`` → ``example.co.uk``. Patterns stay as they are."""
    rule = parse_rule(text)
    return rule if "*" in rule else parse_rule(registrable_domain(rule.lstrip("=")))


def literal_suffix(rule: str) -> str:
    """The longest domain every host a rule matches is under (``ads*.example.com`` →
    ``example.com``): where to look for the pages it blocks."""
    labels = rule.lstrip("=").split(".")
    kept: list[str] = []
    for label in reversed(labels):
        if "*" in label:
            break
        kept.append(label)
    return ".".join(reversed(kept))


def _pattern(rule: str) -> str:
    parts = []
    for label in rule.split("."):
        if label == "*":
            parts.append(r"[^.]+")
        else:
            parts.append(r"[^.]*".join(re.escape(piece) for piece in label.split("*")))
    return r"\.".join(parts)


class Blocklist:
    """Every source's rules, matched together. Changed only on the event loop's thread
    (sources are replaced whole), read anywhere."""

    def __init__(self) -> None:
        self._sources: dict[str, tuple[str, tuple[str, ...]]] = {}  # id -> (label, rules)
        self._literal: dict[str, Block] = {}
        self._exact: dict[str, Block] = {}
        # Patterns by the literal domain they are under (``ads*.example.com``: example.com),
        # each group one regular expression: a host is tried only against the groups of
        # its own parent domains, so most hosts cost set lookups alone.
        self._groups: dict[str, tuple[re.Pattern[str], list[tuple[re.Pattern[str], Block]]]] = {}
        self._pattern_count = 0
        self._cache: dict[str, Block | None] = {}

    def set_rules(self, source: str, label: str, rules: Iterable[str]) -> list[str]:
        """Replace ``source``'s rules (already parsed); returns those it did not have.
        Patterns beyond ``MAX_PATTERN_RULES`` in all are left out."""
        before = set(self._sources.get(source, ("", ()))[1])
        kept = tuple(dict.fromkeys(rules))
        self._sources[source] = (label, kept)
        self._compile()
        return [r for r in kept if r not in before]

    def drop_source(self, source: str) -> None:
        if self._sources.pop(source, None) is not None:
            self._compile()

    def rules_of(self, source: str) -> tuple[str, ...]:
        return self._sources.get(source, ("", ()))[1]

    def label_of(self, source: str) -> str:
        return self._sources.get(source, ("", ()))[0]

    def sources(self) -> list[str]:
        return list(self._sources)

    @property
    def rule_count(self) -> int:
        """Rules in force (no __len__: an empty list must not be falsy where it is passed)."""
        return len(self._literal) + len(self._exact) + self._pattern_count

    def _compile(self) -> None:
        literal: dict[str, Block] = {}
        exact: dict[str, Block] = {}
        patterns: dict[str, list[tuple[re.Pattern[str], Block]]] = {}
        count = 0
        # This node's own rules first: its own reason is the one shown when both block.
        order = sorted(self._sources, key=lambda s: (s != OWN, s))
        for source in order:
            label, rules = self._sources[source]
            for rule in rules:
                block = Block(rule, source, label)
                if rule.startswith("="):
                    exact.setdefault(rule[1:], block)
                elif "*" in rule:
                    if count < MAX_PATTERN_RULES:
                        group = patterns.setdefault(literal_suffix(rule), [])
                        group.append((re.compile(_pattern(rule)), block))
                        count += 1
                else:
                    literal.setdefault(rule, block)
        self._literal, self._exact, self._pattern_count = literal, exact, count
        self._groups = {
            suffix: (
                re.compile(r"(?:[^.]+\.)*(?:" + "|".join(p.pattern for p, _b in group) + ")"),
                group,
            )
            for suffix, group in patterns.items()
        }
        self._cache = {}

    def match_host(self, host: str) -> Block | None:
        """Why ``host`` (any spelling; a port is ignored) is blocked, or None."""
        if not self._sources:
            return None
        cached = self._cache.get(host, False)
        if cached is not False:
            return cached  # type: ignore[return-value]
        found = self._match(host_name(host))
        if len(self._cache) >= HOST_CACHE_SIZE:
            self._cache.clear()
        self._cache[host] = found
        return found

    def _match(self, name: str) -> Block | None:
        if not name:
            return None
        if (block := self._exact.get(name)) is not None:
            return block
        if (name[-1].isdigit() or ":" in name) and _ip(name) is not None:
            return self._literal.get(name)  # no TLD ends in a digit: only addresses do
        labels = name.split(".")
        suffixes = [".".join(labels[i:]) for i in range(len(labels))]
        for suffix in suffixes:
            if (block := self._literal.get(suffix)) is not None:
                return block
        for parent in suffixes:
            found = self._groups.get(parent)
            if found is None or not found[0].fullmatch(name):
                continue
            for suffix in suffixes:  # which rule it was: the closest suffix that matches
                for pattern, block in found[1]:
                    if pattern.fullmatch(suffix):
                        return block
        return None

    def match_url(self, url: str) -> Block | None:
        """Why the page at ``url`` (a canonical URL, or what a peer sent) is blocked."""
        if not self._sources:
            return None
        authority = url.split("/", 3)[2] if "://" in url else url
        return self.match_host(authority.rsplit("@", 1)[-1])

    def blocks_url(self, url: str) -> bool:
        return self.match_url(url) is not None
