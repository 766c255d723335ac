"""The crawler's configuration: one frozen value object, every limit a named default."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_USER_AGENT_NAME = "RhizomeBot"
DEFAULT_CONTACT_URL = "https://github.com/rhizome-search/rhizome/wiki/crawler"
DEFAULT_CRAWL_DELAY = 1.0  # seconds between requests to one host, before robots/adaptation
DEFAULT_HOST_CONCURRENCY = 8
DEFAULT_GLOBAL_CONCURRENCY = 64
DEFAULT_MAX_ACTIVE_HOSTS = 256
DEFAULT_MAX_DEPTH = 16
DEFAULT_MAX_URLS_PER_HOST = 100_000
# URLs all the hosts of one registrable domain (eTLD+1, crawler/domains.py) may add: a
# domain with many sites gets twice one host's budget, a farm of wildcard subdomains
# (a.spam.example, b.spam.example, ...) no more than that.
DEFAULT_MAX_URLS_PER_DOMAIN = 200_000
# Hosts of one registrable domain crawled at once: subdomains mostly share servers, so a
# domain gets at most this many hosts' politeness (delay, concurrency) whatever its number
# of subdomains, and cannot fill the active-host slots other domains need. Two, not one:
# a slow host (a stuck www) does not hold up the domain's other sites.
DEFAULT_MAX_ACTIVE_HOSTS_PER_DOMAIN = 2
# URLs waiting in the frontier (QUEUED) at most; beyond it new links are dropped (and
# found again by later crawls). ~1.3 KB a row with its indexes (docs/OPERATIONS.md: 1.51 MB
# for 3,868 URLs): ~1.3 GB of disk, weeks of crawling for a home node at its politeness.
DEFAULT_MAX_QUEUED_URLS = 1_000_000
# Hosts whose state the crawler keeps in memory (each map an LRU of this size):
# politeness (delay, back-off), robots.txt policies, sitemaps read, URL counts per host
# and per domain. Beyond, the oldest is forgotten and had again (a robots.txt refetched,
# a count re-read from SQLite). Far above max_active_hosts, so hosts being crawled stay.
DEFAULT_HOST_MEMORY = 10_000
DEFAULT_RECRAWL_INTERVAL = 7 * 24 * 3600.0
DEFAULT_MAX_ATTEMPTS = 3
# 0: one per CPU core but the node's own (it indexes, schedules and publishes; at least 1).
# Lone node, large corpus, 2 cores, same run (bench/coverage_bench.py, 2026-12-03):
# 1 worker 541 pages/s, peak 408 MB; 2 workers (the earlier default) 548 pages/s, 511 MB.
DEFAULT_PARSE_WORKERS = 0
# URLs the frontier remembers having seen, so a link to a known page costs no SQLite
# round (its primary key de-duplicates anyway once the set is cleared at this size).
# Measured ~160 B a URL: 100,000 is 16 MB and holds the large corpus' ~70,000 URLs.
DEFAULT_SEEN_CACHE = 100_000
# Queued URLs whose inbound anchor texts are kept in memory until crawled (~280 B each
# with one anchor, up to 16): at most ~30-60 MB, oldest dropped first (the first anchor
# is also in the URL's row).
DEFAULT_ANCHOR_CACHE = 100_000
# Seconds without a URL to crawl before the parser processes are stopped (restarted, in
# about a second, when work comes): 45-95 MB each, measured after the large corpus.
DEFAULT_WORKER_IDLE_STOP = 30.0

MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # raw bytes read off the wire, then stop
MAX_DECODED_BYTES = 8 * 1024 * 1024  # after gzip/deflate/zstd
MAX_REDIRECTS = 5
FETCH_TIMEOUT = 30.0  # whole request, so a slow drip cannot hold a slot forever
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 15.0
MAX_CRAWL_DELAY = 60.0  # robots.txt Crawl-delay above this is clamped
MAX_BACKOFF = 3600.0
ROBOTS_TTL = 24 * 3600.0
ROBOTS_ERROR_TTL = 600.0
MAX_ROBOTS_BYTES = 512 * 1024
HOST_UNREACHABLE_DEFER = 1800.0


def default_workers() -> int:
    """Parser processes when ``parse_workers`` is 0: a core is left to the node."""
    return max(1, (os.cpu_count() or 1) - 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class CrawlerConfig:
    data_dir: Path
    user_agent_name: str = DEFAULT_USER_AGENT_NAME
    contact_url: str = DEFAULT_CONTACT_URL
    allow_private_networks: bool = False
    crawl_delay: float = DEFAULT_CRAWL_DELAY
    host_concurrency: int = DEFAULT_HOST_CONCURRENCY
    global_concurrency: int = DEFAULT_GLOBAL_CONCURRENCY
    max_active_hosts: int = DEFAULT_MAX_ACTIVE_HOSTS
    max_depth: int = DEFAULT_MAX_DEPTH
    max_urls_per_host: int = DEFAULT_MAX_URLS_PER_HOST
    max_urls_per_domain: int = DEFAULT_MAX_URLS_PER_DOMAIN
    max_active_hosts_per_domain: int = DEFAULT_MAX_ACTIVE_HOSTS_PER_DOMAIN
    max_queued_urls: int = DEFAULT_MAX_QUEUED_URLS
    host_memory: int = DEFAULT_HOST_MEMORY
    recrawl_interval: float = DEFAULT_RECRAWL_INTERVAL
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    parse_workers: int = DEFAULT_PARSE_WORKERS
    seen_cache: int = DEFAULT_SEEN_CACHE
    anchor_cache: int = DEFAULT_ANCHOR_CACHE
    worker_idle_stop: float = DEFAULT_WORKER_IDLE_STOP
    max_response_bytes: int = MAX_RESPONSE_BYTES
    max_decoded_bytes: int = MAX_DECODED_BYTES
    max_redirects: int = MAX_REDIRECTS
    fetch_timeout: float = FETCH_TIMEOUT
    # Only follow links within the hosts of the seeds (a site-focused node, and a fair
    # comparison with a Scrapy spider's allowed_domains).
    seed_hosts_only: bool = False
    # (name, address) pairs the resolver answers without DNS; a name "*.example" covers
    # every subdomain of example (as a wildcard DNS record does). The SSRF guard still
    # checks the address.
    resolve: tuple[tuple[str, str], ...] = ()

    @property
    def user_agent(self) -> str:
        return f"{self.user_agent_name}/0.1 (+{self.contact_url})"
