"""Blocklist rules and matching (``crawler/blocklist.py``, ``crawler/domains.py``): the
syntax, wildcards, registrable domains from the bundled Public Suffix List, IDNs and case;
and the operator's rules and pins on disk (``api/operator_store.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rhizome.api.operator_store import OperatorState, parse_host_key
from rhizome.crawler import BadRule, Blocklist, parse_rule
from rhizome.crawler.blocklist import (
    MAX_PATTERN_RULES,
    OWN,
    domain_rule,
    is_public_suffix,
    literal_suffix,
)


def blocklist(*rules: str, source: str = OWN, label: str = "this node") -> Blocklist:
    made = Blocklist()
    made.set_rules(source, label, [parse_rule(r) for r in rules])
    return made


def blocked(bl: Blocklist, host: str) -> str | None:
    block = bl.match_host(host)
    return None if block is None else block.rule


def test_a_domain_rule_blocks_the_domain_and_every_host_under_it() -> None:
    bl = blocklist("example.com")
    for host in ("example.com", "www.example.com", "a.b.c.example.com", "example.com:8080"):
        assert blocked(bl, host) == "example.com", host
    for host in ("notexample.com", "example.com.evil.test", "example.org", "com"):
        assert blocked(bl, host) is None, host


def test_a_star_label_blocks_the_hosts_under_a_domain_but_not_the_domain() -> None:
    bl = blocklist("*.ads.example")
    assert blocked(bl, "x.ads.example") == "*.ads.example"
    assert blocked(bl, "deep.x.ads.example") == "*.ads.example"
    assert blocked(bl, "ads.example") is None
    assert blocked(bl, "x.ads.example.org") is None


def test_a_label_pattern_matches_within_one_label() -> None:
    bl = blocklist("ad*.tracker.test", "*-cdn*.media.test")
    assert blocked(bl, "adserver.tracker.test") == "ad*.tracker.test"
    assert blocked(bl, "ad.tracker.test") == "ad*.tracker.test"  # '*' may be empty in a label
    assert blocked(bl, "eu.ad7.tracker.test") == "ad*.tracker.test"  # and hosts under it
    assert blocked(bl, "bad.tracker.test") is None
    assert blocked(bl, "tracker.test") is None
    assert blocked(bl, "img-cdn2.media.test") == "*-cdn*.media.test"
    assert blocked(bl, "cdn.media.test") is None


def test_an_exact_rule_blocks_that_host_only() -> None:
    bl = blocklist("=www.example.org")
    assert blocked(bl, "www.example.org") == "=www.example.org"
    assert blocked(bl, "WWW.Example.ORG:443") == "=www.example.org"
    assert blocked(bl, "a.www.example.org") is None
    assert blocked(bl, "example.org") is None


def test_ip_addresses_block_only_themselves() -> None:
    bl = blocklist("192.0.2.7", "[2001:db8::1]:8080")
    assert blocked(bl, "192.0.2.7:8080") == "192.0.2.7"
    assert blocked(bl, "192.0.2.70") is None
    assert blocked(bl, "2.7") is None
    assert blocked(bl, "[2001:db8::1]:443") == "2001:db8::1"
    assert parse_rule("=192.0.2.7") == "192.0.2.7"


def test_case_idn_and_url_spellings_are_one_rule() -> None:
    assert parse_rule("  Example.COM. ") == "example.com"
    assert parse_rule("https://user@WWW.Bücher.de:8443/path?q=1#x") == "www.xn--bcher-kva.de"
    assert parse_rule("*.BÜCHER.de") == "*.xn--bcher-kva.de"
    assert parse_rule("faß.de") == "xn--fa-hia.de"  # IDNA 2008, as yarl spells URLs
    bl = blocklist("bücher.de")
    # A canonical URL's host is the ASCII form; a peer may send the Unicode one.
    assert blocked(bl, "shop.xn--bcher-kva.de") == "xn--bcher-kva.de"
    assert blocked(bl, "Shop.Bücher.DE") == "xn--bcher-kva.de"
    assert bl.blocks_url("http://xn--bcher-kva.de:8080/a?b")
    assert not bl.blocks_url("http://xn--bcher-kva.com/")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "names a host"),
        ("two words.com", "without spaces"),
        ("a..b.com", "not a host name label"),
        ("exa$mple.com", "not a host name label"),
        ("example.*", "cannot be a pattern"),
        ("*", "cannot be a pattern"),
        ("=*.example.com", "takes no '*'"),
        ("com", "public suffix"),
        ("co.uk", "public suffix"),
        ("github.io", "public suffix"),
        ("a" * 254 + ".com", "longer than"),
    ],
)
def test_a_rule_that_cannot_be_used_is_refused_with_a_reason(text: str, why: str) -> None:
    with pytest.raises(BadRule, match=why):
        parse_rule(text)


def test_a_whole_suffix_is_blocked_only_when_written_as_a_pattern() -> None:
    assert parse_rule("*.co.uk") == "*.co.uk"
    bl = blocklist("*.co.uk")
    assert blocked(bl, "shop.example.co.uk") == "*.co.uk"
    assert blocked(bl, "example.com") is None
    # Names under a TLD the list does not know are nobody's suffix.
    assert parse_rule("localhost") == "localhost"
    assert parse_rule("tracker.example") == "tracker.example"


def test_a_hosts_whole_domain_is_its_registrable_domain_by_the_public_suffix_list() -> None:
    assert domain_rule("www.example.co.uk") == "example.co.uk"
    assert domain_rule("https://a.b.Example.com:8080/x") == "example.com"
    assert domain_rule("x.alice.github.io") == "alice.github.io"  # a private suffix's user
    assert domain_rule("=www.bücher.de") == "xn--bcher-kva.de"
    assert domain_rule("127.0.0.1:8080") == "127.0.0.1"
    assert domain_rule("localhost") == "localhost"
    assert domain_rule("a.b.tracker.example") == "tracker.example"  # a TLD the list lacks
    assert domain_rule("ads*.example.com") == "ads*.example.com"
    assert is_public_suffix("co.uk") and is_public_suffix("github.io")
    assert not is_public_suffix("example.co.uk") and not is_public_suffix("localhost")


def test_a_block_names_its_source_this_node_first() -> None:
    bl = blocklist("example.com")
    bl.set_rules("list:ab", "list friends (abab)", [parse_rule("example.com"), "spam.test"])
    own = bl.match_host("www.example.com")
    theirs = bl.match_host("a.spam.test")
    assert own is not None and own.source == OWN and own.describe().startswith("blocked by this")
    assert theirs is not None and theirs.source == "list:ab"
    assert theirs.describe() == "blocked by list friends (abab) (rule spam.test)"
    bl.drop_source("list:ab")
    assert bl.match_host("a.spam.test") is None
    assert bl.match_host("www.example.com") is not None


def test_replacing_a_source_says_which_rules_are_new_and_forgets_cached_verdicts() -> None:
    bl = Blocklist()
    assert bl.set_rules("list:x", "list x", ["a.test", "b.test"]) == ["a.test", "b.test"]
    assert bl.match_host("www.c.test") is None  # cached as not blocked
    assert bl.set_rules("list:x", "list x", ["b.test", "c.test"]) == ["c.test"]
    assert blocked(bl, "www.c.test") == "c.test"
    assert blocked(bl, "a.test") is None


def test_patterns_beyond_the_cap_are_left_out_and_literals_are_not() -> None:
    bl = Blocklist()
    patterns = [f"p{i}q*.test" for i in range(MAX_PATTERN_RULES + 5)]
    literals = [f"d{i}.test" for i in range(20_000)]
    bl.set_rules(OWN, "this node", [*patterns, *literals])
    assert bl.rule_count == MAX_PATTERN_RULES + 20_000
    assert blocked(bl, "p0qabc.test") == "p0q*.test"
    assert blocked(bl, f"p{MAX_PATTERN_RULES - 1}q.test") == f"p{MAX_PATTERN_RULES - 1}q*.test"
    assert blocked(bl, f"p{MAX_PATTERN_RULES + 4}qa.test") is None
    assert blocked(bl, "www.d19999.test") == "d19999.test"


def test_the_literal_suffix_is_where_a_rules_pages_are() -> None:
    assert literal_suffix("ads*.example.com") == "example.com"
    assert literal_suffix("*.ads.example") == "ads.example"
    assert literal_suffix("=www.example.org") == "www.example.org"
    assert literal_suffix("example.com") == "example.com"


def test_an_empty_blocklist_is_still_the_object_it_is() -> None:
    empty = Blocklist()
    assert empty.rule_count == 0 and empty  # never falsy: callers test "is None"
    assert not empty.blocks_url("http://example.com/")


def test_the_operators_rules_and_pins_persist_and_a_damaged_file_is_kept_aside(
    tmp_path: Path,
) -> None:
    state = OperatorState.load(tmp_path)
    assert state.add_rules([parse_rule("Example.COM"), parse_rule("*.ads.example")]) == [
        "example.com",
        "*.ads.example",
    ]
    assert state.add_pins([parse_host_key("http://Bücher.de:8080/x")]) == ["xn--bcher-kva.de:8080"]
    state.save()
    again = OperatorState.load(tmp_path)
    assert list(again.rules) == ["example.com", "*.ads.example"]
    assert again.pins == ["xn--bcher-kva.de:8080"]

    (tmp_path / "operator.json").write_text('{"rules": [ half a file')
    damaged = OperatorState.load(tmp_path)
    assert damaged.rules == {} and damaged.pins == []
    kept = list(tmp_path.glob("operator.json.unreadable-*"))
    assert len(kept) == 1 and kept[0].read_text().startswith('{"rules": [ half')
    damaged.save()  # the next change writes a new file; the damaged one stays aside
    assert kept[0].exists()
