"""The crawler's configuration: one frozen value object, every limit a named default."""

from __future__ import annotations

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
DEFAULT_RECRAWL_INTERVAL = 7 * 24 * 3600.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_PARSE_WORKERS = 0  # 0: one per CPU core
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

    @property
    def user_agent(self) -> str:
        return f"{self.user_agent_name}/0.1 (+{self.contact_url})"
