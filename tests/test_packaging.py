"""The wheel plays well with others: built from the same files the Dockerfile copies, installed
into a fresh venv beside a package of someone else's with top-level ``api`` and ``index``
modules, both import; the version printed is pyproject.toml's.

Marked ``packaging``: it builds two wheels (pip fetches the build backend from the package
index) and makes a venv, ~20 s. The venv sees the system's site-packages so tantivy, numpy and
the rest are not downloaded again; the rhizome in it must be the wheel's, which is checked.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SITE_INDEXABLE, NodeFactory, serve_site

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parent.parent
# Repository folder → where pyproject.toml's package-dir puts it.
INSTALLED_AS = {
    "rhizome": "rhizome",
    "crawler": "rhizome/crawler",
    "index": "rhizome/index",
    "dht": "rhizome/dht",
    "federation": "rhizome/federation",
    "api": "rhizome/api",
}
BUILD_TIMEOUT = 300  # seconds: a cold pip cache downloads setuptools for the build
# A tag only this test's build carries, so the version printed can only come from the
# pyproject.toml the wheel was built from (the shared install has the plain version).
STAMP = "+wheeltest"

OTHER_PYPROJECT = """\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "someone-elses-app"
version = "1.0"

[tool.setuptools]
py-modules = ["api", "index"]
"""


@dataclass(frozen=True)
class Installed:
    wheel: Path
    version: str
    venv: Path
    env: dict[str, str]

    def python(self, code: str) -> str:
        return self.run(str(self.venv / "bin" / "python"), "-c", code)

    def run(self, *argv: str) -> str:
        # Run from an empty folder: the checkout's rhizome/ must not be found by the cwd.
        done = subprocess.run(
            argv,
            cwd=self.venv,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
        assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
        return done.stdout.strip()


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    return {**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}


def _copy_sources(dest: Path) -> str:
    """What the Dockerfile copies, with the version stamped; returns that version."""
    for name in INSTALLED_AS:
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "README.md", dest)
    text = (ROOT / "pyproject.toml").read_text()
    stamped = tomllib.loads(text)["project"]["version"] + STAMP
    text, count = re.subn(r'(?m)^version = "[^"]*"$', f'version = "{stamped}"', text, count=1)
    assert count == 1, "pyproject.toml has no version line"
    (dest / "pyproject.toml").write_text(text)
    return stamped


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("packaging")
    env = _clean_env()
    src, wheels, other, venv = base / "src", base / "wheels", base / "other", base / "venv"
    src.mkdir()
    version = _copy_sources(src)
    other.mkdir()
    (other / "pyproject.toml").write_text(OTHER_PYPROJECT)
    (other / "api.py").write_text('WHO = "someone else\'s api"\n')
    (other / "index.py").write_text('WHO = "someone else\'s index"\n')

    def run(*argv: str | Path) -> None:
        done = subprocess.run(
            [str(a) for a in argv],
            cwd=base,
            env=env,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
        assert done.returncode == 0, f"{argv}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"

    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels, src)
    (wheel,) = wheels.glob("rhizome-*.whl")
    run(sys.executable, "-m", "venv", "--system-site-packages", venv)
    # --ignore-installed: the system's site-packages has a rhizome (the editable one); the
    # venv must get its own, from the wheel.
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps"]
    run(*pip, "--ignore-installed", wheel, other)
    yield Installed(wheel=wheel, version=version, venv=venv, env=env)


def test_the_wheel_holds_one_top_level_package_and_every_file_of_the_folders(
    installed: Installed,
) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        (record_name,) = [n for n in names if n.endswith(".dist-info/RECORD")]
        record = {row[0] for row in csv.reader(io.StringIO(wheel.read(record_name).decode()))}
    assert record == names
    top = {name.split("/")[0] for name in names}
    assert top == {"rhizome", f"rhizome-{installed.version}.dist-info"}, top
    for folder, target in INSTALLED_AS.items():
        # Data files too (py.typed, any api/static/*): pyproject's package-data must name them.
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                inside = f"{target}/{path.relative_to(ROOT / folder).as_posix()}"
                assert inside in names, f"{folder}/{path.name} is not in the wheel as {inside}"
        assert f"{target}/py.typed" in names  # PEP 561: the types ship with the code


def test_rhizome_installs_beside_a_package_with_top_level_api_and_index(
    installed: Installed,
) -> None:
    out = installed.python(
        "import api, index, pkgutil, importlib, rhizome\n"
        "for m in pkgutil.walk_packages(rhizome.__path__, 'rhizome.'):\n"
        "    importlib.import_module(m.name)\n"
        "import rhizome.api, rhizome.index, sys\n"
        "print(api.WHO); print(index.WHO)\n"
        "print(rhizome.__file__); print(rhizome.api.__file__); print(rhizome.index.__file__)\n"
        "print(sys.modules['api'] is api)"
    )
    api_who, index_who, *files, same = out.splitlines()
    assert (api_who, index_who) == ("someone else's api", "someone else's index")
    site = installed.venv.resolve()
    for file in files:  # the wheel's copy, not the system's editable install
        assert Path(file).resolve().is_relative_to(site), file
    assert same == "True"  # importing every rhizome module never replaced theirs


def test_python_m_rhizome_and_the_console_script_print_pyprojects_version(
    installed: Installed,
) -> None:
    expected = f"rhizome {installed.version}"
    assert installed.run(str(installed.venv / "bin" / "python"), "-m", "rhizome", "--version") == (
        expected
    )
    assert installed.run(str(installed.venv / "bin" / "rhizome"), "--version") == expected
    assert installed.python("import rhizome; print(rhizome.__version__)") == installed.version


def test_the_installed_node_crawls_indexes_and_answers(
    installed: Installed, tmp_path: Path
) -> None:
    # Its parser processes must import the installed code under the names the node's
    # pickles use: in the checkout's folder a stray top-level `crawler` hid that they did not.
    factory = NodeFactory(tmp_path)
    with serve_site() as site:
        try:
            node = factory.start(
                seeds=[f"{site}/index.html"], site=site, installed=installed.venv / "bin" / "python"
            )
            status = node.wait_idle(60, min_documents=len(SITE_INDEXABLE))
            assert status["documents"] == len(SITE_INDEXABLE), node.output()
            assert node.search("comets tail")["results"][0]["url"] == f"{site}/comets.html"
        finally:
            factory.close()
