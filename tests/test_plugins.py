"""Plugin discovery through real installed distributions (dist-info on sys.path, as pip lays them).

Each test builds a site directory with one or more distributions whose entry points are in the
``lecentral.plugins`` group, then runs the real ``lecentral`` command with that directory on
PYTHONPATH, so discovery goes through importlib.metadata exactly as for a pip-installed plugin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lecentral.errors import PluginError
from lecentral.registry import SERVICE_PACKAGES, Registry

GOOD = '''
from lecentral.hookspecs import hookimpl
from lecentral.types import IssuerType, ServiceType

class _Service:
    def activate(self, entry):
        pass

@hookimpl
def lecentral_register_issuers():
    return [IssuerType("{issuer}", lambda config: None, "test issuer")]

@hookimpl
def lecentral_register_services():
    return [ServiceType("{service}", _Service, {{"reload": "true"}}, "test service")]

@hookimpl
def lecentral_renew_failed(name, error):
    raise RuntimeError("event handlers may fail")
'''


def add_dist(site: Path, dist: str, ep_name: str, module: str, source: str) -> None:
    """Lay out ``dist`` as pip would: the module plus a dist-info with its entry point."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[lecentral.plugins]\n{ep_name} = {module}\n")


def run(site: Path, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    if config:
        env["LECENTRAL_CONFIG"] = str(config)
    return subprocess.run([sys.executable, "-m", "lecentral.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site"
    path.mkdir()
    return path


def test_builtins(site: Path) -> None:
    result = run(site, "plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = [r for r in json.loads(result.stdout) if r["distribution"] == "lecentral"]
    registers = {item for r in rows for item in r["registers"]}
    assert {"store:sql", "notifier:mail", "notifier:syslog"} <= registers
    assert all(r["status"] == "ok" for r in rows)


def test_third_party_plugin_is_listed_with_what_it_registers(site: Path) -> None:
    add_dist(site, "lecentral-good", "good", "lecentral_good",
             GOOD.format(issuer="good-issuer", service="good-service"))
    result = run(site, "plugins", "--json")
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["good"]["distribution"] == "lecentral-good"
    assert rows["good"]["version"] == "1.0"
    assert rows["good"]["registers"] == ["issuer:good-issuer", "service:good-service"]
    text = run(site, "plugins")
    flat = " ".join(text.stdout.split())  # REGISTERS wraps to fit 100 columns
    assert "lecentral-good" in flat and "issuer: good-issuer; service: good-service" in flat


def test_broken_plugin_is_a_warning_and_does_not_stop_list(site: Path, tmp_path: Path) -> None:
    add_dist(site, "lecentral-broken", "broken", "lecentral_broken",
             "import lecentral_no_such_module\n")
    config = tmp_path / "lecentral.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/db.sqlite"\n')
    assert run(site, "init", config=config).returncode == 0
    listed = run(site, "list", "--json", config=config)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    assert "plugin broken from lecentral-broken 1.0 failed to load" in listed.stderr
    shown = run(site, "plugins", "--json")
    assert shown.returncode == 0
    rows = {r["name"]: r for r in json.loads(shown.stdout)}
    assert rows["broken"]["status"] == "error"
    assert "No module named 'lecentral_no_such_module'" in rows["broken"]["error"]


def test_same_entry_point_name_in_two_distributions_names_both(site: Path) -> None:
    add_dist(site, "lecentral-twin-a", "twin", "twin_a",
             GOOD.format(issuer="a-issuer", service="a-service"))
    add_dist(site, "lecentral-twin-b", "twin", "twin_b",
             GOOD.format(issuer="b-issuer", service="b-service"))
    rows = json.loads(run(site, "plugins", "--json").stdout)
    errors = [r["error"] for r in rows if r["status"] == "error"]
    assert len(errors) == 1
    assert "lecentral-twin-a" in errors[0] and "lecentral-twin-b" in errors[0]


def test_same_record_name_from_two_distributions_is_an_error_naming_both(
        site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    add_dist(site, "lecentral-one", "one", "lecentral_one",
             GOOD.format(issuer="same-issuer", service="one-service"))
    add_dist(site, "lecentral-two", "two", "lecentral_two",
             GOOD.format(issuer="same-issuer", service="two-service"))
    rows = json.loads(run(site, "plugins", "--json").stdout)
    errors = [r["error"] for r in rows if r["status"] == "error"]
    assert errors and all("lecentral-one 1.0 and lecentral-two 1.0" in e for e in errors)

    monkeypatch.syspath_prepend(str(site))
    registry = Registry.load()
    with pytest.raises(PluginError, match="issuer 'same-issuer' is registered by more than one "
                                          "plugin .lecentral-one 1.0 and lecentral-two 1.0."):
        registry.issuer("same-issuer")
    assert registry.service("one-service").defaults == {"reload": "true"}  # the rest still works


def test_a_typo_suggests_the_installed_service_never_a_package_of_that_name() -> None:
    """`service = "ngnix"` is a typo of an installed plugin, not a package to install: pip would
    install whatever someone registered as lecentral-ngnix."""
    registry = Registry.load()  # the plugins of plugins/, installed in the test environment
    assert "nginx" in registry.services.names()
    with pytest.raises(PluginError) as typo:
        registry.service("ngnix")
    assert str(typo.value).startswith("no service plugin named 'ngnix' is installed (installed: ")
    assert str(typo.value).endswith("; did you mean 'nginx'?")
    assert "pip" not in str(typo.value)
    core = Registry.load(entrypoints=False)  # lecentral alone: nginx is not installed
    with pytest.raises(PluginError) as missing:
        core.service("ngnix")
    assert str(missing.value).endswith(
        "; did you mean 'nginx'? (not installed: pip install lecentral-nginx)")
    for name in ("nosuchd", "ngnix-ssl-helper"):
        with pytest.raises(PluginError) as unknown:
            core.service(name)
        assert "pip install" not in str(unknown.value) and f"lecentral-{name}" not in str(unknown.value)
        assert "check the service name (the service plugins of lecentral: apache, " in \
            str(unknown.value)
    with pytest.raises(PluginError, match="no issuer plugin named 'dns-subzon' is installed .*; "
                                          "did you mean 'dns-subzone'.$"):
        core.issuer("dns-subzon")


def test_the_packages_suggested_are_the_plugins_of_this_project() -> None:
    """SERVICE_PACKAGES (what an unknown service name may suggest installing) is exactly what
    the distributions in plugins/ register."""
    import importlib

    shipped: dict[str, str] = {}
    for directory in sorted((Path(__file__).parent.parent / "plugins").iterdir()):
        module = importlib.import_module(f"{directory.name.replace('-', '_')}.plugin")
        for record in module.lecentral_register_services():
            shipped[record.name] = directory.name
    assert shipped == SERVICE_PACKAGES


def test_unknown_names_are_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry.load(entrypoints=False)
    with pytest.raises(PluginError, match="no service plugin named 'postfix' is installed.*"
                                          "pip install lecentral-postfix"):
        registry.service("postfix")
    with pytest.raises(PluginError, match="no issuer plugin named 'nope'"):
        registry.issuer("nope")
    with pytest.raises(PluginError, match="no store plugin handles database URLs of scheme 'mysql'"):
        registry.store_for_url("mysql://u@h/db")


def test_failing_event_handler_is_logged_not_fatal(site: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    add_dist(site, "lecentral-good", "good", "lecentral_good",
             GOOD.format(issuer="good-issuer", service="good-service"))
    monkeypatch.syspath_prepend(str(site))
    registry = Registry.load()
    registry.emit("lecentral_renew_failed", name="a.example.test", error="boom",
                  count_fail_update=1)
    assert "plugin good failed handling lecentral_renew_failed" in caplog.text


HEAVY = ("sqlalchemy", "acme", "josepy", "requests", "cryptography", "dns", "ldap3", "pyrad")


@pytest.mark.parametrize("code", [
    "from lecentral.registry import Registry; Registry.load()",
    ("from click.testing import CliRunner; from lecentral.cli.central import main; "
     "CliRunner().invoke(main, ['--help'])"),
    ("from click.testing import CliRunner; from lecentral.cli.agent import main; "
     "CliRunner().invoke(main, ['--help'])"),
])
def test_loading_plugins_and_help_import_nothing_heavy(code: str) -> None:
    """Every installed plugin is imported to build the registry: each must keep its heavy imports
    inside the code that needs them, so --help and a no-op run stay fast."""
    probe = f"{code}\nimport sys\nprint([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
