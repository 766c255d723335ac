"""The ``rhizome`` command as a shell user meets it: --version, --help with the defaults that
really apply, a --no-… flag for every switch, shell completion, the config file looked up in
$XDG_CONFIG_HOME/rhizome/."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from importlib.metadata import version
from pathlib import Path

import pytest

from rhizome.api.cli import build_parser
from rhizome.api.config import NodeConfig, load_config

BOOLEANS = [f.name for f in fields(NodeConfig) if f.type in (bool, "bool")]


def _rhizome(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rhizome", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def _option_help(help_text: str) -> dict[str, str]:
    """``--flag`` → its help text, whitespace collapsed (argparse wraps long lines)."""
    blocks: dict[str, str] = {}
    current = ""
    for line in help_text.splitlines():
        if re.match(r"  -", line):
            names, _, rest = line.strip().partition("  ")
            current = names.split(",")[0].split(" ")[0]
            blocks[current] = rest.strip()
        elif current and line.startswith(" " * 6):
            blocks[current] = f"{blocks[current]} {line.strip()}".strip()
        else:
            current = ""
    return blocks


def _help(capsys: pytest.CaptureFixture[str], command: str) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    return capsys.readouterr().out


def test_version_flag_prints_the_installed_distributions_version() -> None:
    done = _rhizome("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"rhizome {version('rhizome')}"


def test_node_help_shows_for_every_option_the_default_that_applies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The data dir's default follows $XDG_DATA_HOME: the help must say where it really is.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping inside a path
    options = _option_help(_help(capsys, "node"))
    applied = load_config(env={})  # no file, no RHIZOME_*, no flags: the defaults
    for f in fields(NodeConfig):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(applied, f.name)
        shown = (
            ("on" if value else "off")
            if isinstance(value, bool)
            else ("none" if value in ("", ()) else str(value))
        )
        assert f"(default: {shown})" in options[flag], (flag, options[flag])
    assert str(tmp_path / "data" / "rhizome") in options["--data-dir"]
    assert "XDG_CONFIG_HOME" in options["--config"]
    for command in ("search", "status", "wait", "seed", "demo"):
        for flag, text in _option_help(_help(capsys, command)).items():
            if flag not in ("-h", "--json"):  # --json: a switch that is off unless given
                assert "(default: " in text, (command, flag, text)


def test_every_switch_has_a_no_flag_that_beats_the_file_and_the_environment(
    tmp_path: Path,
) -> None:
    assert {"allow_private_networks", "relay"} <= set(BOOLEANS)
    toml = tmp_path / "rhizome.toml"
    toml.write_text("".join(f"{name} = true\n" for name in BOOLEANS))
    env = {f"RHIZOME_{name.upper()}": "true" for name in BOOLEANS}
    off = [f"--no-{name.replace('_', '-')}" for name in BOOLEANS]
    config = load_config(file=toml, env=env, flags=vars(build_parser().parse_args(["node", *off])))
    assert all(getattr(config, name) is False for name in BOOLEANS)
    on = [f"--{name.replace('_', '-')}" for name in BOOLEANS]
    config = load_config(env={}, flags=vars(build_parser().parse_args(["node", *on])))
    assert all(getattr(config, name) is True for name in BOOLEANS)
    # Neither flag given: the file's word stands.
    config = load_config(file=toml, env={}, flags=vars(build_parser().parse_args(["node"])))
    assert all(getattr(config, name) is True for name in BOOLEANS)


def _complete(script: Path, words: list[str]) -> list[str]:
    """What bash offers after ``words`` (the last one being typed), through the script."""
    array = " ".join(f"'{w}'" for w in words)
    program = (
        f"source {script}; COMP_WORDS=({array}); COMP_CWORD={len(words) - 1}; "
        'COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}; '
        '_shtab_rhizome; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        ["bash", "-c", program], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_offers_subcommands_flags_and_choices(tmp_path: Path) -> None:
    done = _rhizome("completion", "bash")
    assert done.returncode == 0, done.stderr
    script = tmp_path / "rhizome.bash"
    script.write_text(done.stdout)
    assert set(_complete(script, ["rhizome", ""])) >= {"node", "search", "seed", "completion"}
    assert _complete(script, ["rhizome", "node", "--no-rel"]) == ["--no-relay"]
    assert _complete(script, ["rhizome", "node", "--memory", ""]) == ["normal", "small"]
    assert "--crawl-delay" in _complete(script, ["rhizome", "demo", "--cr"])


def test_zsh_completion_script_is_made_from_the_same_parser() -> None:
    done = _rhizome("completion", "zsh")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("#compdef rhizome")
    assert "--no-relay" in done.stdout and "--pin-host" in done.stdout


def test_a_config_file_in_xdg_config_home_is_used_when_no_other_is_named(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "rhizome").mkdir(parents=True)
    (xdg / "rhizome" / "rhizome.toml").write_text("crawl_delay = 3.5\n")
    assert load_config(env={"XDG_CONFIG_HOME": str(xdg)}).crawl_delay == 3.5
    # Without $XDG_CONFIG_HOME (or with a relative one, which the spec says to ignore) the
    # file is ~/.config/rhizome/rhizome.toml.
    home = tmp_path / "home"
    (home / ".config" / "rhizome").mkdir(parents=True)
    (home / ".config" / "rhizome" / "rhizome.toml").write_text("max_depth = 2\n")
    assert load_config(env={"HOME": str(home)}).max_depth == 2
    assert load_config(env={"HOME": str(home), "XDG_CONFIG_HOME": "rel"}).max_depth == 2
    # RHIZOME_CONFIG and --config name a file instead; only one file is ever read.
    other = tmp_path / "other.toml"
    other.write_text("max_urls_per_host = 7\n")
    named = load_config(env={"XDG_CONFIG_HOME": str(xdg), "RHIZOME_CONFIG": str(other)})
    assert (named.max_urls_per_host, named.crawl_delay) == (7, NodeConfig().crawl_delay)
    assert load_config(file=other, env={"XDG_CONFIG_HOME": str(xdg)}).max_urls_per_host == 7
    # The environment and flags still beat the file.
    assert (
        load_config(env={"XDG_CONFIG_HOME": str(xdg), "RHIZOME_CRAWL_DELAY": "0"}).crawl_delay == 0
    )
    # No file there: the defaults, not an error.
    assert load_config(env={"XDG_CONFIG_HOME": str(tmp_path / "none")}) == NodeConfig()


def test_the_command_reads_the_xdg_config_file_of_the_user_running_it(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "rhizome").mkdir(parents=True)
    data_dir = tmp_path / "from-the-xdg-file"
    (xdg / "rhizome" / "rhizome.toml").write_text(f'data_dir = "{data_dir}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("RHIZOME_")}
    done = subprocess.run(
        [sys.executable, "-m", "rhizome", "seed", "https://example.org/"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "XDG_CONFIG_HOME": str(xdg)},
    )
    # `rhizome seed` looks for the operator credential in the data dir the file names.
    assert done.returncode == 2
    assert str(data_dir / "operator.token") in done.stderr
