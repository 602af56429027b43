"""The ``freeradius`` service plugin against Debian's real FreeRADIUS 3 on 127.0.0.1, plain and chrooted.

Each test starts its own FreeRADIUS (:class:`~radius_launcher.FreeradiusServer`:
a copy of /etc/freeradius/3.0 with its own log/run dirs, 127.0.0.1 on dynamic UDP ports, a client
with a random shared secret, a test user) whose EAP module reads the files the agent writes, and
drives the real ``lecentral-install run``. ``reload`` is a real restart (what ``systemctl restart
freeradius`` does; there is no systemd here): stop by pid file, start again in forking mode, which
exits non-zero if the server does not come up. ``check`` is ``freeradius -C`` on that config dir.
What EAP presents is read with wpa_supplicant's real ``eapol_test`` (Debian package eapoltest).

Two layouts, each test run in both:

* ``plain``: cert, chain and key in a directory of their own, named in the entry;
* ``chroot``: a directory laid out as FreeRADIUS's chroot (``CHROOT/etc/freeradius/3.0/certs``);
  the entry keeps the plugin's default paths (``/etc/freeradius/3.0/certs/server.pem``, ``ca.pem``)
  and sets ``options.chroot``, so the agent writes under CHROOT and never at the real
  /etc/freeradius path; FreeRADIUS is configured with the CHROOT paths. It does not call
  chroot(2) itself: its ``chroot`` directive would need its libraries and modules inside the
  tree, which nothing here is about (the plugin only decides where files go).

Certificates are signed by :class:`~lecentral_testing.agent.TestCA` for the server's key.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lecentral_freeradius.plugin import FreeradiusOptions
from lecentral_freeradius.probe import RadiusTarget, eap_certificate
from lecentral_testing.agent import AgentWorld, RunOutcome, dump_toml
from lecentral_testing.daemons.forking import live_pid
from lecentral_testing.pki import make_self_signed
from radius_launcher import FreeradiusServer

from lecentral.certificates import Certificate
from lecentral.install.config import load_install
from lecentral.install.csr import load_key
from lecentral.registry import Registry

NAME = "radius.example.test"
DEBIAN_CERTS = "/etc/freeradius/3.0/certs"


def real_path_state(path: str) -> bytes | None:
    """What is at a real system path (it must be the same after every test)."""
    return Path(path).read_bytes() if Path(path).exists() else None


@dataclass
class Radius:
    """One FreeRADIUS, the agent world around it, and the files it reads."""

    world: AgentWorld
    server: FreeradiusServer
    entry: dict[str, Any]
    cert: Path  # where FreeRADIUS reads the leaf (under the chroot in that layout)
    chain: Path
    key: Path

    def write_config(self, **overrides: Any) -> None:
        options = {**self.entry.get("options", {}), **overrides.pop("options", {})}
        self.world.write_config({**self.entry, **overrides, "options": options})

    def run(self, *flags: str) -> tuple[dict[str, Any], RunOutcome]:
        out = self.world.run(*flags, "run", "--json")
        return out.by_name(NAME), out

    def presented(self, method: str = "TLS") -> str:
        """SHA-256 of the leaf FreeRADIUS presents in EAP now (with eapol_test, as the plugin does)."""
        target = RadiusTarget("127.0.0.1", self.server.auth_port, self.server.secret, self.server.user,
                              self.server.password)
        return hashlib.sha256(eap_certificate(target, method, 10.0, "eapol_test")).hexdigest()

    def snapshot(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in self.cert.parent.iterdir() if p.is_file()}

    def pid(self) -> int | None:
        return live_pid(self.server.pid_path, str(self.server.confdir))

    def first_install(self) -> Certificate:
        leaf = self.world.issue(NAME, days=30)
        self.write_config()
        result, out = self.run()
        assert result["status"] == "installed", (result, out.stderr)
        assert self.presented() == leaf.fingerprint
        return leaf


@pytest.fixture(params=["plain", "chroot"])
def radius(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Radius]:
    world = AgentWorld(tmp_path / "world")
    entry: dict[str, Any] = {"name": NAME, "service": "freeradius", "verify_timeout": 20.0}
    if request.param == "chroot":
        chroot = tmp_path / "chroot"
        certs = chroot / DEBIAN_CERTS.lstrip("/")
        certs.mkdir(parents=True)
        key = world.add(NAME, key="rsa2048", key_path=certs / "server.key")
        # the plugin's default cert and chain paths, moved under the chroot by the plugin
        entry.update(key=str(key), options={"chroot": str(chroot)})
    else:
        certs = tmp_path / "files"
        certs.mkdir()
        key = world.add(NAME, key="rsa2048")
        entry.update(key=str(key), cert=str(certs / "server.pem"), chain=str(certs / "ca.pem"))
    cert, chain = certs / "server.pem", certs / "ca.pem"
    placeholder, _ = make_self_signed([NAME], load_key(key), days=2)
    cert.write_bytes(placeholder)
    chain.write_bytes(placeholder)
    server = FreeradiusServer(tmp_path / "freeradius", cert=cert, key=key, chain=chain).start()
    before = {p: real_path_state(f"{DEBIAN_CERTS}/{p}") for p in ("server.pem", "ca.pem")}
    try:
        entry.update(check=server.check_command, reload=server.restart_command)
        entry["options"] = {**entry.get("options", {}), "server": f"127.0.0.1:{server.auth_port}",
                            "secret": server.secret, "user": server.user, "password": server.password}
        yield Radius(world, server, entry, cert, chain, key)
    finally:
        server.close()
        world.close()
    # whatever happened, the real system paths were never written
    assert {p: real_path_state(f"{DEBIAN_CERTS}/{p}") for p in before} == before


def test_first_install(radius: Radius) -> None:
    """The certificate in the database replaces the placeholder; FreeRADIUS is restarted and
    presents it in EAP-TLS; the run checked the Access-Request (Accept for the test user)."""
    leaf = radius.world.issue(NAME, days=30)
    radius.write_config()

    result, out = radius.run("-v")

    assert result["status"] == "installed", (result, out.stderr)
    assert radius.presented() == leaf.fingerprint
    assert radius.cert.read_bytes() == leaf.pem
    assert f"answers an Access-Request for {radius.server.user}: Access-Accept" in out.stderr
    assert f"EAP-TLS on RADIUS 127.0.0.1:{radius.server.auth_port} presents sha256 {leaf.fingerprint[:16]}" \
        in out.stderr
    assert sorted(result["paths"]) == sorted([str(radius.cert), str(radius.chain)])


def test_renewal_is_presented_after_a_restart(radius: Radius) -> None:
    """A renewed certificate is installed, FreeRADIUS restarted (a new process) and the renewal
    presented; a second run changes nothing and restarts nothing."""
    radius.first_install()
    renewed = radius.world.issue(NAME, days=60)
    pid = radius.pid()

    result, _ = radius.run()

    assert result["status"] == "installed"
    assert radius.pid() not in (None, pid)
    assert radius.presented() == renewed.fingerprint
    before, pid = radius.snapshot(), radius.pid()
    assert radius.run()[0]["status"] == "up-to-date"
    assert radius.snapshot() == before and radius.pid() == pid


def test_broken_config_is_rolled_back_before_the_restart(radius: Radius) -> None:
    """``freeradius -C`` fails: the previous files come back, FreeRADIUS is not restarted and
    still presents the previous certificate; the error quotes FreeRADIUS."""
    first = radius.first_install()
    radius.world.issue(NAME, days=60)
    before, pid = radius.snapshot(), radius.pid()
    with (radius.server.confdir / "radiusd.conf").open("a") as conf:
        conf.write("security {\n\tno_such_setting_here = {\n")

    result, _ = radius.run()

    assert result["status"] == "rolled-back", result
    assert "config test" in result["message"] and "radiusd.conf" in result["message"]
    assert radius.snapshot() == before
    assert radius.pid() == pid
    assert radius.presented() == first.fingerprint


def test_failed_verification_is_rolled_back(radius: Radius) -> None:
    """The activation leaves FreeRADIUS on the old certificate (a reload that restarts nothing):
    EAP presents the old one, verification fails, the previous files come back and are checked
    to be the ones presented."""
    first = radius.first_install()
    radius.world.issue(NAME, days=60)
    before = radius.snapshot()
    radius.write_config(reload="true", verify_timeout=2.0)

    result, _ = radius.run()

    assert result["status"] == "rolled-back", result
    assert "verification failed" in result["message"] and "not the one in" in result["message"]
    assert radius.snapshot() == before
    assert radius.presented() == first.fingerprint


def test_server_that_does_not_come_back_is_rolled_back(radius: Radius) -> None:
    """The restart brings FreeRADIUS up on the new files, but the reload command then fails (as
    ``systemctl restart`` does when the unit does not come up; simulated by a script failing
    once): the previous files come back, FreeRADIUS is restarted on them and presents the
    previous certificate, checked by the plugin."""
    first = radius.first_install()
    radius.world.issue(NAME, days=60)
    before = radius.snapshot()
    marker, fails_once = radius.server.workdir / "fail-once", radius.server.workdir / "fails-once.sh"
    fails_once.write_text(f"#!/bin/sh\n[ -e {marker} ] || exit 0\nrm -f {marker}\n"
                          "echo 'Job for freeradius.service failed.' >&2\nexit 1\n")
    fails_once.chmod(0o755)
    marker.touch()
    radius.write_config(reload=f"sh -c {shlex.quote(radius.server.restart_command + ' && ' + str(fails_once))}")

    result, _ = radius.run()

    assert result["status"] == "rolled-back", result
    assert "Job for freeradius.service failed" in result["message"]
    assert radius.snapshot() == before
    assert radius.presented() == first.fingerprint


@pytest.mark.parametrize("radius", ["plain"], indirect=True)  # nothing layout-specific
def test_wrong_secret_is_reported_without_the_secret(radius: Radius) -> None:
    """A wrong shared secret: FreeRADIUS silently drops the requests. The server did not answer
    before the restart either, which the alert says; the previous files come back; neither
    secret appears anywhere in the output, even at debug level."""
    radius.first_install()
    radius.world.issue(NAME, days=60)
    before = radius.snapshot()
    wrong = "Wrong-" + radius.server.secret
    radius.write_config(options={"secret": wrong}, verify_timeout=2.0)

    result, out = radius.run("-vv")

    assert result["status"] == "rollback-failed", result  # the old files are back, unverifiable
    assert "the previous files were put back" in result["message"]
    assert "did not answer before the restart either" in result["message"]
    assert "options.secret" in result["message"]
    assert radius.snapshot() == before
    for secret in (wrong, radius.server.secret, radius.server.password):
        assert secret not in out.stdout + out.stderr


@pytest.mark.parametrize("radius", ["plain"], indirect=True)  # nothing layout-specific
def test_without_eapol_test_only_the_access_request_is_checked(radius: Radius) -> None:
    """eapol_test missing: the install goes on, the Access-Request is checked, a warning says
    the certificate was not."""
    leaf = radius.world.issue(NAME, days=30)
    radius.write_config(options={"eapol_test": "/nonexistent/eapol_test"})

    result, out = radius.run()

    assert result["status"] == "installed", (result, out.stderr)
    assert "eapol_test not found (apt-get install eapoltest)" in out.stderr
    assert radius.presented() == leaf.fingerprint


@pytest.mark.parametrize("method", ["PEAP", "TTLS"])
@pytest.mark.parametrize("radius", ["plain"], indirect=True)  # nothing layout-specific
def test_peap_and_ttls_see_the_same_certificate(radius: Radius, method: str) -> None:
    """PEAP and TTLS use the same tls-common configuration: checked with the test user's
    password (the inner authentication succeeds), they see the new certificate too."""
    leaf = radius.world.issue(NAME, days=30)
    radius.write_config(options={"eap": method})

    result, out = radius.run("-v")

    assert result["status"] == "installed", (result, out.stderr)
    assert f"EAP-{method} on RADIUS" in out.stderr
    assert radius.presented(method) == leaf.fingerprint


def test_dry_run_shows_the_chroot_paths(tmp_path: Path) -> None:
    """With options.chroot the plan names the files under the chroot, and nothing is written."""
    world = AgentWorld(tmp_path / "world")
    chroot = tmp_path / "chroot"
    certs = chroot / DEBIAN_CERTS.lstrip("/")
    certs.mkdir(parents=True)
    key = world.add(NAME, key="ec256", key_path=certs / "server.key")
    world.issue(NAME)
    world.write_config({"name": NAME, "service": "freeradius", "key": str(key),
                        "options": {"chroot": str(chroot)}})

    out = world.run("run", "--dry-run", "--json")

    plan = out.by_name(NAME)["plan"]
    assert any(line.startswith(f"write {certs}/server.pem (cert") for line in plan), plan
    assert any(line.startswith(f"write {certs}/ca.pem (chain") for line in plan), plan
    assert "then: config test: freeradius -C -l stdout -d /etc/freeradius/3.0" in plan
    assert sorted(p.name for p in certs.iterdir()) == ["server.key"]
    world.close()


def test_two_line_entry_gets_debian_defaults(tmp_path: Path) -> None:
    """``name`` and ``service`` are enough: the EAP module's files, freeradius -C, a restart,
    checks on 127.0.0.1:1812 with Debian's localhost client secret and EAP-TLS."""
    config = tmp_path / "install.toml"
    config.write_text(dump_toml({"database": {"url": f"sqlite:///{tmp_path}/db"}},
                                [{"name": NAME, "service": "freeradius"}]))

    loaded = load_install(str(config), Registry.load())

    assert not loaded.broken, loaded.broken
    entry = loaded.certs[0]
    assert (entry.key, entry.cert, entry.chain) == (f"{DEBIAN_CERTS}/server.key",
                                                    f"{DEBIAN_CERTS}/server.pem", f"{DEBIAN_CERTS}/ca.pem")
    assert entry.check == "freeradius -C -l stdout -d /etc/freeradius/3.0"
    assert entry.reload == "systemctl restart freeradius"
    assert entry.verify == []
    assert entry.options == FreeradiusOptions(server="127.0.0.1:1812", secret="testing123", eap="TLS",
                                              eapol_test="eapol_test")
    assert "testing123" not in repr(entry)  # the shared secret stays out of logs and tracebacks


@pytest.mark.parametrize("options, error", [
    ({"server": "localhost:1812"}, "write IP:PORT"),
    ({"server": "127.0.0.1"}, "write IP:PORT"),
    ({"secret": ""}, "cert[0].options.secret: is empty"),
    ({"secret": 123}, "cert[0].options.secret must be str"),
    ({"eap": "MD5"}, "choose TLS, PEAP, TTLS"),
    ({"client_cert": "/etc/client.pem"}, "set client_cert and client_key together"),
    ({"user": 'a"b'}, "cert[0].options.user: cannot hold a double quote"),
    ({"chroot": "srv/radius"}, "must be an absolute path"),
    ({"chroot": "/nonexistent/chroot"}, "cert[0].options.chroot: /nonexistent/chroot is not a directory"),
    ({"chrot": "/srv"}, "unknown key cert[0].options.chrot"),
])
def test_bad_options_are_configuration_errors(tmp_path: Path, options: dict[str, Any], error: str) -> None:
    config = tmp_path / "install.toml"
    config.write_text(dump_toml({"database": {"url": f"sqlite:///{tmp_path}/db"}},
                                [{"name": NAME, "service": "freeradius", "options": options}]))

    loaded = load_install(str(config), Registry.load())

    assert not loaded.certs and error in loaded.broken[0].error, loaded.broken


def test_chroot_key_left_at_the_host_path_is_explained(tmp_path: Path) -> None:
    """The key exists only under the chroot: the error says which key path to write."""
    chroot = tmp_path / "chroot"
    certs = chroot / DEBIAN_CERTS.lstrip("/")
    certs.mkdir(parents=True)
    (certs / "server.key").write_text("a key")
    config = tmp_path / "install.toml"
    config.write_text(dump_toml({"database": {"url": f"sqlite:///{tmp_path}/db"}},
                                [{"name": NAME, "service": "freeradius", "options": {"chroot": str(chroot)}}]))

    loaded = load_install(str(config), Registry.load())

    assert f'set key = "{certs}/server.key"' in loaded.broken[0].error


def test_world_readable_key_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "server.key"
    key.write_text("a key")
    key.chmod(0o644)
    config = tmp_path / "install.toml"
    config.write_text(dump_toml({"database": {"url": f"sqlite:///{tmp_path}/db"}},
                                [{"name": NAME, "service": "freeradius", "key": str(key)}]))

    loaded = load_install(str(config), Registry.load())

    assert f"chmod o-rwx {key}" in loaded.broken[0].error


def test_launcher_answers_and_restarts(freeradius_server: FreeradiusServer) -> None:
    """The session fixture: EAP presents its certificate, a restart starts a new process."""
    target = RadiusTarget("127.0.0.1", freeradius_server.auth_port, freeradius_server.secret,
                          freeradius_server.user, freeradius_server.password)
    leaf = Certificate.load(freeradius_server.cert.read_bytes())
    pid = live_pid(freeradius_server.pid_path, str(freeradius_server.confdir))

    freeradius_server.restart()

    assert live_pid(freeradius_server.pid_path, str(freeradius_server.confdir)) not in (None, pid)
    der = eap_certificate(target, "TLS", 10.0, "eapol_test")
    assert hashlib.sha256(der).hexdigest() == leaf.fingerprint
