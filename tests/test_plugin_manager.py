"""The plugin manager at pluggy's own level: misspelt hooks are reported (check_pending), plugins
can be blocked by name before they are imported, and hooks are called through pluggy (so a
``wrapper=True`` implementation wraps them).

Plugins are real distributions laid out as pip does (see test_plugins.py), run through the real
``lecentral`` and ``lecentral-install`` commands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_plugins import GOOD, add_dist, run

from lecentral.registry import Registry

MISSPELT = '''
from lecentral.api import ServiceType, hookimpl

@hookimpl
def lecentral_register_service():   # the hook is lecentral_register_services
    return [ServiceType("never", lambda: None)]

@hookimpl
def lecentral_register_services():
    return [ServiceType("typo-service", lambda: None)]
'''

EXPLODES = '''
raise RuntimeError("this plugin breaks every process that imports it")
'''

WRAPPER = '''
from lecentral.api import ServiceType, hookimpl

@hookimpl(wrapper=True)
def lecentral_register_services():
    results = yield
    # a site policy plugin: hide the services it does not allow
    return [[r for r in records if r.name != "hidden-service"] for records in results]
'''


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site"
    path.mkdir()
    return path


def rows(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    assert result.returncode == 0, result.stderr
    return {r["name"]: r for r in json.loads(result.stdout)}


def test_a_misspelt_hook_is_an_error_of_its_plugin(site: Path) -> None:
    add_dist(site, "lecentral-typo", "typo", "lecentral_typo", MISSPELT)
    add_dist(site, "lecentral-good", "good", "lecentral_good",
             GOOD.format(issuer="good-issuer", service="good-service"))
    result = run(site, "plugins", "--json")
    listed = json.loads(result.stdout)
    typo = [r for r in listed if r["name"] == "typo"]
    assert [r["status"] for r in typo] == ["ok", "error"]  # loaded, and its hook reported
    assert "lecentral_register_service is not a hook of lecentral" in str(typo[1]["error"])
    assert "misspelt" in str(typo[1]["error"])
    assert typo[0]["registers"] == ["service:typo-service"]  # its correct hook still works
    assert rows(result)["good"]["status"] == "ok"
    assert "plugin typo: lecentral_register_service is not a hook" in result.stderr


def test_a_plugin_disabled_by_the_environment_is_never_imported(site: Path, tmp_path: Path) -> None:
    add_dist(site, "lecentral-explodes", "explodes", "lecentral_explodes", EXPLODES)
    add_dist(site, "lecentral-good", "good", "lecentral_good",
             GOOD.format(issuer="good-issuer", service="good-service"))
    loud = rows(run(site, "plugins", "--json"))
    assert loud["explodes"]["status"] == "error"
    assert "breaks every process" in str(loud["explodes"]["error"])

    env = {**os.environ, "PYTHONPATH": str(site), "LECENTRAL_DISABLE_PLUGINS": "explodes, other"}
    quiet = subprocess.run([sys.executable, "-m", "lecentral.cli", "plugins", "--json"], env=env,
                           capture_output=True, text=True, timeout=60, check=False)
    listed = rows(quiet)
    assert listed["explodes"] == {"name": "explodes", "distribution": "lecentral-explodes",
                                  "version": "1.0", "module": None, "registers": [],
                                  "status": "disabled", "error": None}
    assert listed["good"]["status"] == "ok"
    assert "breaks every process" not in quiet.stderr


def test_plugins_disabled_in_the_central_config(site: Path, tmp_path: Path) -> None:
    add_dist(site, "lecentral-explodes", "explodes", "lecentral_explodes", EXPLODES)
    config = tmp_path / "lecentral.toml"
    config.write_text('[plugins]\ndisable = ["explodes", "lecentral.builtin.webroot"]\n')
    listed = rows(run(site, "plugins", "--json", config=config))
    assert listed["explodes"]["status"] == "disabled"
    assert listed["lecentral.builtin.webroot"]["status"] == "disabled"  # built-ins too
    assert listed["lecentral.builtin.dns_subzone"]["status"] == "ok"

    config.write_text('[plugins]\ndisable = "explodes"\n')
    wrong = run(site, "plugins", "--json", config=config)
    assert wrong.returncode == 2
    assert "plugins.disable must be a list of str" in wrong.stderr


def test_plugins_disabled_in_install_toml(site: Path, tmp_path: Path) -> None:
    add_dist(site, "lecentral-explodes", "explodes", "lecentral_explodes", EXPLODES)
    config = tmp_path / "install.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/none.db"\n'
                      '[plugins]\ndisable = ["explodes"]\n')
    env = {**os.environ, "PYTHONPATH": str(site), "LECENTRAL_INSTALL_CONFIG": str(config)}
    result = subprocess.run([sys.executable, "-c", "from lecentral.cli.agent import main; main()",
                             "plugins", "--json"], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["disabled"] == ["explodes"] and data["failures"] == []
    assert "files" in [s["name"] for s in data["services"]]


def test_a_wrapper_wraps_the_registration_hooks(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hooks are called through pluggy, not by calling each implementation's function: a
    ``wrapper=True`` implementation sees (and here filters) every plugin's records."""
    add_dist(site, "lecentral-good", "good", "lecentral_good",
             GOOD.format(issuer="good-issuer", service="hidden-service"))
    add_dist(site, "lecentral-policy", "policy", "lecentral_policy", WRAPPER)
    monkeypatch.syspath_prepend(str(site))
    registry = Registry.load()
    assert "hidden-service" not in registry.services.names()
    assert "files" in registry.services.names()  # the built-ins went through the wrapper too
    assert registry.issuer("good-issuer").description == "test issuer"
    assert registry.failures == []


def test_a_disabled_plugin_is_named_as_disabled_not_missing(site: Path) -> None:
    add_dist(site, "lecentral-good", "good", "lecentral_good",
             GOOD.format(issuer="good-issuer", service="good"))
    env = {**os.environ, "PYTHONPATH": str(site), "LECENTRAL_DISABLE_PLUGINS": "good,nginxx"}
    code = ("from lecentral.registry import Registry\n"
            "from lecentral.errors import PluginError\n"
            "r = Registry.load()\n"
            "for look in (lambda: r.service('good'), lambda: r.service('other')):\n"
            "    try:\n        look()\n    except PluginError as exc:\n        print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, check=True)
    disabled, other = out.stdout.strip().splitlines()
    assert "the plugin 'good' is installed but disabled" in disabled
    assert "pip install" not in disabled
    assert "disabled plugins ([plugins] disable, $LECENTRAL_DISABLE_PLUGINS): good" in other
    # a name that matches nothing installed is a typo until proven otherwise: loud
    shown = subprocess.run([sys.executable, "-m", "lecentral.cli", "plugins", "--json"], env=env,
                           capture_output=True, text=True, timeout=60, check=False)
    listed = {r["name"]: r for r in json.loads(shown.stdout)}
    assert listed["nginxx"]["status"] == "error"
    assert "no plugin named 'nginxx' is installed (a typo?" in str(listed["nginxx"]["error"])
    assert "no plugin named 'nginxx' is installed" in shown.stderr
