"""Configuration precedence and errors: defaults < TOML < RHIZOME_* env < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from rhizome.api.cli import build_parser
from rhizome.api.config import ConfigError, NodeConfig, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_file_env_and_flags_layer_in_order(tmp_path: Path) -> None:
    toml = tmp_path / "rhizome.toml"
    toml.write_text('crawl_delay = 2.5\nhttp = "127.0.0.1:9000"\nseed = ["https://a.example/"]\n')
    env = {"RHIZOME_CRAWL_DELAY": "0.5", "RHIZOME_SEED": "https://b.example/,https://c.example/"}
    flags = vars(build_parser().parse_args(["node", "--crawl-delay", "0", "--data-dir", "/x"]))

    from_file = load_config(file=toml, env={})
    assert (from_file.crawl_delay, from_file.http) == (2.5, "127.0.0.1:9000")
    with_env = load_config(file=toml, env=env)
    assert with_env.crawl_delay == 0.5
    assert with_env.seed == ("https://b.example/", "https://c.example/")
    with_flags = load_config(file=toml, env=env, flags=flags)
    assert with_flags.crawl_delay == 0.0
    assert with_flags.data_dir == Path("/x")
    assert with_flags.http == "127.0.0.1:9000"  # untouched by env and flags


def test_config_file_from_environment(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[node]\nmax_depth = 3\nallow_private_networks = true\n")
    config = load_config(env={"RHIZOME_CONFIG": str(toml)})
    assert config.max_depth == 3
    assert config.allow_private_networks is True


def test_repeatable_flags_collect() -> None:
    args = build_parser().parse_args(
        [
            "node",
            "--seed",
            "https://a.example/",
            "--seed",
            "https://b.example/",
            "--allow-private-networks",
        ]
    )
    config = load_config(env={}, flags=vars(args))
    assert config.seed == ("https://a.example/", "https://b.example/")
    assert config.allow_private_networks is True


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RHIZOME_CRAWL_DELAY": "soon"}, "RHIZOME_CRAWL_DELAY"),
        ({"RHIZOME_HTTP": "8700"}, "http"),
        ({"RHIZOME_HTTP": "127.0.0.1:99999"}, "out of range"),
        ({"RHIZOME_HOST_CONCURRENCY": "0"}, "host_concurrency"),
        ({"RHIZOME_WRITER_HEAP_MB": "4"}, "writer_heap_mb"),
        ({"RHIZOME_ALLOW_PRIVATE_NETWORKS": "maybe"}, "RHIZOME_ALLOW_PRIVATE_NETWORKS"),
        ({"RHIZOME_LOG_FORMAT": "xml"}, "log_format"),
        ({"RHIZOME_MEMORY": "tiny"}, "memory: one of normal, small"),
        ({"RHIZOME_WRITER_HEAP_MB": "-1"}, "writer_heap_mb"),
        ({"RHIZOME_MAX_URLS_PER_DOMAIN": "0"}, "max_urls_per_domain"),
        ({"RHIZOME_MAX_QUEUED_URLS": "0"}, "max_queued_urls"),
        ({"RHIZOME_RESOLVE": "spam.test"}, "resolve: expected NAME=ADDRESS"),
        ({"RHIZOME_RESOLVE": "spam.test=localhost"}, "resolve: expected NAME=ADDRESS"),
        ({"RHIZOME_RESOLVE": "*.*.test=127.0.0.1"}, "resolve: expected NAME=ADDRESS"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env=env)


def test_crawl_budgets_and_resolve_overrides_reach_the_crawler() -> None:
    args = build_parser().parse_args(
        [
            "node",
            "--max-urls-per-domain",
            "40",
            "--max-queued-urls",
            "5000",
            "--resolve",
            "*.Spam.Test=127.0.0.1",
            "--resolve",
            "good.test=[::1]",
        ]
    )
    crawler = load_config(env={}, flags=vars(args)).crawler_config()
    assert (crawler.max_urls_per_domain, crawler.max_queued_urls) == (40, 5000)
    assert crawler.resolve == (("*.spam.test", "127.0.0.1"), ("good.test", "::1"))


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("crawl_dealy = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'crawl_dealy'"):
        load_config(file=unknown, env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("crawl_delay = [\n")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        load_config(file=broken, env={})
    with pytest.raises(ConfigError, match=r"missing\.toml"):
        load_config(file=tmp_path / "missing.toml", env={})


def test_shipped_example_config_is_valid_and_complete() -> None:
    example = ROOT / "deploy" / "rhizome.toml"
    config = load_config(file=example, env={})
    assert isinstance(config, NodeConfig)
    text = example.read_text()
    for name in NodeConfig.__dataclass_fields__:
        assert f"\n{name} =" in text or text.startswith(f"{name} ="), f"{name} not documented"


def test_cli_reports_config_errors_without_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    from rhizome.api.cli import main

    assert main(["node", "--http", "nonsense"]) == 2
    assert "configuration error: http" in capsys.readouterr().err


def test_memory_small_means_one_parser_the_smallest_writer_heap_and_small_caches(
    tmp_path: Path,
) -> None:
    normal = load_config(env={})
    assert normal.crawler_config().parse_workers == 0  # one per core but the node's
    assert normal.writer_heap_bytes == 64 * 1024 * 1024
    for config in (
        load_config(env={"RHIZOME_MEMORY": "small"}),
        load_config(env={}, flags=vars(build_parser().parse_args(["node", "--memory", "small"]))),
    ):
        crawler = config.crawler_config()
        assert crawler.parse_workers == 1
        assert config.writer_heap_bytes == 16 * 1024 * 1024
        assert crawler.seen_cache < normal.crawler_config().seen_cache
        assert crawler.anchor_cache < normal.crawler_config().anchor_cache
        assert config.memory_profile.index_queue_docs < normal.memory_profile.index_queue_docs


def test_settings_given_beat_the_memory_profile(tmp_path: Path) -> None:
    toml = tmp_path / "rhizome.toml"
    toml.write_text('memory = "small"\nparse_workers = 2\nwriter_heap_mb = 32\n')
    config = load_config(file=toml, env={})
    assert config.crawler_config().parse_workers == 2
    assert config.writer_heap_bytes == 32 * 1024 * 1024
