"""``lecentral-install csr``, ``status``, ``plugins``, --help, and the events a run broadcasts."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from lecentral_testing.agent import AgentWorld

from lecentral.certificates import Csr, load_private_key_public, md5_modulus
from lecentral.cli.agent import main
from lecentral.hookspecs import hookimpl

NAME = "www.example.test"


def cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_csr_makes_a_0600_key_and_a_csr_with_every_name(tmp_path: Path) -> None:
    key = tmp_path / "www.key"
    result = cli("csr", NAME, "--key", str(key), "--san", "alt.example.test", "--san", NAME)
    assert result.exit_code == 0, result.stderr
    csr = Csr.load(result.stdout.encode())
    assert csr.names == [NAME, "alt.example.test"]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert csr.md5_modulus == md5_modulus(load_private_key_public(key))
    assert csr.key_type == "RSA 2048"
    assert "made a new RSA 2048 key" in result.stderr and csr.md5_modulus in result.stderr


def test_csr_out_with_a_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/agent.md's own command: ``--out www.csr`` in the current directory (it crashed on
    the fsync of the directory '' after writing the files)."""
    monkeypatch.chdir(tmp_path)
    result = cli("csr", NAME, "--key", str(tmp_path / "www.key"), "--out", "www.csr")
    assert result.exit_code == 0, result.stderr
    assert Csr.load((tmp_path / "www.csr").read_bytes()).names == [NAME]
    assert "lecentral add" in result.stderr
    quiet = cli("-q", "csr", "other.example.test", "--key", str(tmp_path / "o.key"), "--out", "o.csr")
    assert quiet.exit_code == 0 and quiet.stderr == "" and (tmp_path / "o.csr").exists()


def test_csr_for_an_ip_address(tmp_path: Path) -> None:
    """RFC 8738: NAME an IP address, a DNS --san: iPAddress SAN, no CN, and the central host's
    next step names the row by the IP, as an HTTP-01 row."""
    result = cli("csr", "2001:DB8::1", "--key", str(tmp_path / "ip.key"), "--san", NAME,
                 "--out", str(tmp_path / "ip.csr"))
    assert result.exit_code == 0, result.stderr
    csr = Csr.load((tmp_path / "ip.csr").read_bytes())
    assert csr.names == [NAME, "2001:db8::1"] and csr.ips == ["2001:db8::1"]
    assert not csr.csr.subject
    assert ("lecentral add 2001:db8::1 --csr ip.csr --certbot --webroot PATH (or lecentral "
            "set-csr 2001:db8::1 ip.csr)") in result.stderr


@pytest.mark.parametrize(("args", "kind"), [(["--ec", "p384"], "EC secp384r1"),
                                            (["--ec", "p256"], "EC secp256r1"),
                                            (["--rsa", "3072"], "RSA 3072")])
def test_csr_key_types(tmp_path: Path, args: list[str], kind: str) -> None:
    out = tmp_path / "www.csr"
    result = cli("csr", NAME, "--key", str(tmp_path / "k"), "--out", str(out), *args)
    assert result.exit_code == 0, result.stderr
    assert Csr.load(out.read_bytes()).key_type == kind
    assert result.stdout == "" and "lecentral add www.example.test --csr www.csr" in result.stderr


def test_csr_reuses_an_existing_key_and_never_overwrites_it(tmp_path: Path) -> None:
    key = tmp_path / "www.key"
    assert cli("csr", NAME, "--key", str(key), "--ec", "p256").exit_code == 0
    original = key.read_bytes()

    again = cli("csr", NAME, "--key", str(key), "--san", "new.example.test")
    assert again.exit_code == 0 and "reused the existing key" in again.stderr
    assert key.read_bytes() == original
    assert Csr.load(again.stdout.encode()).md5_modulus == md5_modulus(load_private_key_public(key))

    wrong = cli("csr", NAME, "--key", str(key), "--rsa", "2048")
    assert wrong.exit_code == 5 and "is EC secp256r1, not RSA 2048; pass --rotate" in wrong.stderr
    assert key.read_bytes() == original

    # --force never replaces the live key at once: the new one waits in KEY.next (staged rotation)
    forced = cli("csr", NAME, "--key", str(key), "--rsa", "2048", "--force")
    assert forced.exit_code == 0, forced.stderr
    assert key.read_bytes() == original
    pending = tmp_path / "www.key.next"
    assert Csr.load(forced.stdout.encode()).md5_modulus == md5_modulus(load_private_key_public(pending))
    assert f"{key} stays in use until" in " ".join(forced.stderr.split())
    assert stat.S_IMODE(pending.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if ".lecentral-" in p.name]


@pytest.mark.parametrize(("args", "words"), [
    (["--rsa", "2048", "--ec", "p256"], "either --rsa or --ec"),
    (["--san", "not a name"], "is not a valid DNS name"),
])
def test_csr_errors(tmp_path: Path, args: list[str], words: str) -> None:
    result = cli("csr", NAME, "--key", str(tmp_path / "k"), *args)
    assert result.exit_code == 5 and words in result.stderr
    assert not (tmp_path / "k").exists()


def test_csr_key_directory_must_exist(tmp_path: Path) -> None:
    result = cli("csr", NAME, "--key", str(tmp_path / "nope" / "k"))
    assert result.exit_code == 5 and "does not exist; create it" in result.stderr


def test_plugins_lists_services_and_verifiers() -> None:
    result = cli("plugins", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert "files" in [s["name"] for s in data["services"]]
    assert {"tls", "smtp+starttls", "imaps"} <= set(data["verifiers"])  # ldaps: lecentral-openldap's
    text = cli("plugins").stdout
    assert "files" in text and "verify URL schemes:" in text


def test_help_explains() -> None:
    result = cli("--help")
    assert "private key never leaves" in " ".join(result.stdout.split())
    for command in ("run", "status", "csr", "plugins"):
        assert command in result.stdout
    assert "Exit status" in cli("run", "--help").stdout


def test_status_shows_installed_database_and_state(world: AgentWorld) -> None:
    world.add(NAME)
    first = world.issue(NAME, days=30)
    world.write_config(world.entry(NAME))
    world.run("run")
    newer = world.issue(NAME, days=60)

    result = world.run("status", "--json")

    assert result.exit_code == 0, result.stderr
    (row,) = json.loads(result.stdout)["certs"]
    assert row["installed"]["fingerprint"] == first.fingerprint
    assert row["database"]["fingerprint"] == newer.fingerprint
    assert row["state"].startswith("to install: newer certificate")
    table = world.run("status").stdout
    assert NAME in table and first.fingerprint[:12] in table and newer.fingerprint[:12] in table


def test_status_with_the_database_down(world: AgentWorld) -> None:
    world.write_config(world.entry(NAME), database="sqlite:////nonexistent/dir/db.sqlite")
    result = world.run("status")
    assert result.exit_code == 1
    assert "database unreachable" in result.stdout
    assert "database file /nonexistent/dir/db.sqlite does not exist" in result.stderr


class EventSpy:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    @hookimpl
    def lecentral_cert_installed(self, name: str, host: str, paths: list[str], fingerprint: str) -> None:
        self.seen.append(("installed", {"name": name, "paths": paths, "fingerprint": fingerprint}))

    @hookimpl
    def lecentral_install_failed(self, name: str, host: str, error: str, rolled_back: bool) -> None:
        self.seen.append(("failed", {"name": name, "error": error, "rolled_back": rolled_back}))
        raise RuntimeError("a broken event handler must not break the run")


def test_events_are_broadcast(world: AgentWorld) -> None:
    from lecentral.install.config import load_install
    from lecentral.install.engine import Agent

    spy = EventSpy()
    world.registry.loaded.pm.register(spy, name="spy")
    world.add(NAME)
    leaf = world.issue(NAME, days=30)
    world.write_config(world.entry(NAME))
    Agent(load_install(str(world.config_path), world.registry), world.registry).run()
    world.issue(NAME, days=60)
    world.write_config(world.entry(NAME, check="false"))
    results = Agent(load_install(str(world.config_path), world.registry), world.registry).run()

    assert results[0].status == "rolled-back"
    assert spy.seen[0] == ("installed", {"name": NAME, "fingerprint": leaf.fingerprint,
                                         "paths": list(world.entry(NAME).values())[2:]})
    kind, failed = spy.seen[1]
    assert kind == "failed" and failed["rolled_back"] and "'false' exited with status 1" in failed["error"]


def test_run_without_any_cert_entry_is_a_configuration_error(tmp_path: Path) -> None:
    """An agent whose install.toml names no certificate installs nothing, every day: exit 2 and
    say so (it used to exit 0 with no output)."""
    config = tmp_path / "install.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/none.db"\n'
                      f'[agent]\nstate_dir = "{tmp_path}/state"\n')
    result = CliRunner().invoke(main, ["--config", str(config), "run"])
    assert result.exit_code == 2, result.output
    assert f"{config}: no [[cert]] entry, so nothing to install" in result.stderr
    assert not (tmp_path / "state").exists()
