"""The core works with none of the service plugins installed, and says which package to install.

The plugins (lecentral-apache, lecentral-nginx, lecentral-postfix...) may be installed in this
environment. To see lecentral as a host without them sees it, each test runs the real commands
in a subprocess on a copy of site-packages (symlinks) from which every distribution declaring
``lecentral.plugins`` entry points is left out, Python started with ``-S`` so that nothing else
(``.pth`` files, editable-install finders) brings them back: exactly what ``pip uninstall`` of
those distributions would leave, without touching this environment.
"""

from __future__ import annotations

import configparser
import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
from lecentral_testing.agent import AgentWorld

import lecentral
from lecentral.plugins import ENTRYPOINT_GROUP

REPO = Path(lecentral.__file__).resolve().parents[1]
AGENT = "from lecentral.cli.agent import main; main()"
CENTRAL = "from lecentral.cli.central import main; main()"


def provides_plugins(info_dir: Path) -> bool:
    """True if the ``.dist-info``/``.egg-info`` directory declares ``lecentral.plugins`` entry points."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string((info_dir / "entry_points.txt").read_text())
    except (OSError, configparser.Error):
        return False
    return parser.has_section(ENTRYPOINT_GROUP)


def site_without_plugins(target: Path) -> list[str]:
    """Fill ``target`` with links to site-packages minus the plugin distributions; return their names."""
    target.mkdir()
    hidden = []
    for directory in map(Path, site.getsitepackages()):
        if not directory.is_dir():
            continue
        for child in directory.iterdir():
            if child.suffix in (".dist-info", ".egg-info") and provides_plugins(child):
                hidden.append(child.name)
                continue
            link = target / child.name
            if not link.exists():
                link.symlink_to(child)
    return hidden


@pytest.fixture(scope="module")
def core_only(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment for a ``python -S`` subprocess that sees lecentral and no plugin."""
    site_dir = tmp_path_factory.mktemp("core-only") / "site-packages"
    site_without_plugins(site_dir)
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{site_dir}"}


def run(env: dict[str, str], code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-S", "-c", code, *args], env=env, capture_output=True,
                          text=True, timeout=120, cwd=REPO, check=False)


def test_the_installed_plugins_are_the_ones_hidden(tmp_path: Path) -> None:
    """Whatever is installed here, the copy hides exactly the distributions with plugins."""
    hidden = site_without_plugins(tmp_path / "site")
    from importlib.metadata import entry_points

    installed = {ep.dist.name.replace("-", "_").lower() for ep in entry_points(group=ENTRYPOINT_GROUP)
                 if ep.dist is not None}
    assert {name.split("-")[0].lower() for name in hidden} == installed


def test_lecentral_install_plugins_lists_only_the_builtin_service(core_only: dict[str, str]) -> None:
    out = run(core_only, AGENT, "plugins", "--json")
    assert out.returncode == 0, out.stderr
    listing = json.loads(out.stdout)
    assert [s["name"] for s in listing["services"]] == ["files"]
    assert {s["distribution"] for s in listing["services"]} == {"lecentral"}
    assert listing["failures"] == []
    assert "tls" in listing["verifiers"] and "smtp+starttls" in listing["verifiers"]


def test_lecentral_plugins_lists_only_lecentral(core_only: dict[str, str]) -> None:
    out = run(core_only, CENTRAL, "plugins", "--json")
    assert out.returncode == 0, out.stderr
    assert {row["distribution"] for row in json.loads(out.stdout)} == {"lecentral"}


def test_a_cert_naming_a_missing_plugin_says_which_package_to_install(
        core_only: dict[str, str], tmp_path: Path) -> None:
    """Entries for apache and nginx (not installed) are errors naming the package; the ``files``
    entry in the same install.toml is installed all the same; nothing is written for the others."""
    world = AgentWorld(tmp_path / "world")
    try:
        world.add("files.example.test")
        world.issue("files.example.test")
        for name in ("www.example.test", "web.example.test"):
            world.add(name)
            world.issue(name)
        world.write_config(world.entry("files.example.test"),
                           {"name": "www.example.test", "service": "apache"},
                           world.entry("web.example.test", service="nginx"))
        before = sorted(p.name for p in (world.ssl / "certs").iterdir())

        out = run(core_only, AGENT, "--config", str(world.config_path), "run", "--json")

        assert out.returncode != 0
        results = {r["name"]: r for r in json.loads(out.stdout)}
        assert results["files.example.test"]["status"] == "installed", results
        for name, plugin in (("www.example.test", "apache"), ("web.example.test", "nginx")):
            assert results[name]["status"] == "failed"
            assert (f"no service plugin named '{plugin}' is installed (installed: files); "
                    f"install it with: pip install lecentral-{plugin}") in results[name]["message"]
            assert f"pip install lecentral-{plugin}" in out.stderr
        after = sorted(p.name for p in (world.ssl / "certs").iterdir())
        assert after == sorted(before + ["files.example.test.crt", "files.example.test.ca",
                                         "files.example.test.full"])
    finally:
        world.close()
