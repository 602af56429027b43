"""The ``apache`` service plugin against Debian's real apache2 on 127.0.0.1.

Each test starts its own apache2 (:class:`~lecentral_testing.daemons.apache.ApacheServer`: its own
ServerRoot in a temp dir, a dynamic port) and drives the real ``lecentral-install run`` through
the service contract (:mod:`lecentral_testing.service_contract`). The agent runs the plugin's
default commands unchanged — ``apache2ctl configtest``, ``apache2ctl graceful`` and the
certificate/key check through ``apache2ctl`` — pointed at the test instance the way Debian
supports several instances: ``APACHE_CONFDIR`` (see :func:`apache2ctl_env`).

Certificates: the database is filled by :class:`~lecentral_testing.agent.TestCA`, a real CA
signing the CSR made from the server's key (leaf + CA chain, like Pebble's). Which CA signed
them does not matter to Apache or to the checks here: Apache loads and presents whatever pair
it is given, and the verifier compares SHA-256 fingerprints. Placeholders are self-signed
(:mod:`lecentral_testing.pki`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from lecentral_apache.parsed import dump_command, parse_dump
from lecentral_apache.plugin import DEFAULTS, ApacheOptions
from lecentral_apache.service import ApacheService, check_pairs
from lecentral_testing.agent import dump_toml
from lecentral_testing.daemons.apache import ApacheServer
from lecentral_testing.daemons.certs import write_cert_files
from lecentral_testing.service_contract import (
    Contract,
    ContractFiles,
    ServiceContract,
    ServiceHarness,
)

from lecentral.errors import EntryError, InstallError
from lecentral.install.config import CertEntry, load_install
from lecentral.install.csr import KeySpec, make_csr
from lecentral.registry import Registry

STALE_SITE = "stale.example.test"


@contextmanager
def apache2ctl_env(server: ApacheServer) -> Iterator[None]:
    """Make the stock ``apache2ctl`` drive ``server``, as Debian's multi-instance setup does.

    ``apache2ctl`` reads ``$APACHE_CONFDIR/apache2.conf`` (and runs apache2 with ``-d`` that
    directory); its run and lock directories follow ``APACHE_RUN_DIR``/``APACHE_LOCK_DIR``.
    """
    link = server.dir / "apache2.conf"
    if not link.exists():
        link.symlink_to(server.conf)
    env = {"APACHE_CONFDIR": str(server.dir), "APACHE_RUN_DIR": str(server.dir),
           "APACHE_LOCK_DIR": str(server.dir)}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class TwoSiteApache(ApacheServer):
    """apache2 with a second name-based virtual host, ``stale.example.test``, on the same port,
    reading its own copy of a certificate (one the agent does not manage)."""

    def __init__(self, workdir: Path, *, stale_cert: Path, stale_key: Path, **kwargs: Any) -> None:
        super().__init__(workdir, **kwargs)
        self.stale_cert = stale_cert
        self.stale_key = stale_key

    def write_config(self) -> None:
        super().write_config()
        port = self.ports["https"]
        with self.conf.open("a") as conf:
            conf.write(f"<VirtualHost {self.address}:{port}>\n    ServerName {STALE_SITE}\n"
                       f"    DocumentRoot {self.dir}\n    SSLEngine on\n"
                       f'    SSLCertificateFile "{self.stale_cert}"\n'
                       f"    SSLCertificateKeyFile {self.stale_key}\n</VirtualHost>\n")

    def graceful_restarts(self) -> int:
        """How many graceful restarts the parent has logged (SIGUSR1)."""
        return self.error_log.read_text(errors="replace").count("SIGUSR1 received")


class ApacheHarness(ServiceHarness):
    """apache2 reading the files the ``apache`` service writes, driven by its default commands.

    ``style="fullchain"``: ``SSLCertificateFile`` names the full chain (Apache >= 2.4.8);
    ``style="chain"``: the leaf plus ``SSLCertificateChainFile`` (the older style).
    """

    service = "apache"
    server: TwoSiteApache

    def __init__(self, workdir: Path, style: str = "fullchain") -> None:
        super().__init__(workdir)
        self.style = style
        self._cleanup = ExitStack()

    def start(self, files: ContractFiles) -> None:
        stale_dir = self.workdir.parent / "stale"
        stale_dir.mkdir(parents=True, exist_ok=True)
        stale_cert, stale_key = stale_dir / "stale.full", stale_dir / "stale.key"
        shutil.copy(files.fullchain, stale_cert)
        shutil.copy(files.key, stale_key)
        cert, chain = ((files.fullchain, None) if self.style == "fullchain"
                       else (files.cert, files.chain))
        self.server = TwoSiteApache(self.workdir, cert=cert, key=files.key, chain=chain,
                                    server_name=ServiceContract.contract_name,
                                    stale_cert=stale_cert, stale_key=stale_key)
        self._cleanup.callback(self.server.close)
        self.server.start()
        self._cleanup.enter_context(apache2ctl_env(self.server))

    def stop(self) -> None:
        self._cleanup.close()

    def entry(self, files: ContractFiles) -> dict[str, Any]:
        # check, reload and options are the plugin's defaults; only the port differs from 443
        return {"verify": self.url(ServiceContract.contract_name)}

    def url(self, sni: str) -> str:
        return f"{self.server.verify_urls['https']}?sni={sni}"

    def break_config(self) -> None:
        with self.server.conf.open("a") as conf:
            conf.write("NotAnApacheDirective on\n")


class TestApache(ServiceContract):
    """The service contract with ``SSLCertificateFile`` = full chain, plus Apache's own failures."""

    @pytest.fixture
    def harness(self, tmp_path: Path) -> ServiceHarness:
        return ApacheHarness(tmp_path / "apache")

    @pytest.mark.parametrize("spec", [KeySpec("rsa", 2048), KeySpec("ec", curve="p256")],
                             ids=["same-type", "rsa-to-ecdsa"])
    def test_a_key_apache_does_not_use_is_caught_before_the_graceful_restart(
            self, contract: Contract, spec: KeySpec) -> None:
        """The admin rotated the key (new key and CSR on the server, install.toml names the new
        key, the central host got a certificate for it), but the virtual host still names the old
        key. ``apache2ctl configtest`` passes (it loads no certificate) and a graceful restart
        would stop Apache (AH02565); the plugin's pair check fails first, whatever the key types:
        the previous files come back and Apache is never restarted."""
        first = self.first_install(contract)
        server = contract.harness.server  # type: ignore[attr-defined]
        restarts, pid = server.graceful_restarts(), server.pid
        new_key = contract.files.key.with_name("rotated.key")
        csr, _ = make_csr(contract.name, [], new_key, spec, force=False)
        contract.world.store.set_csr(contract.name, csr.pem, csr.md5_modulus)  # lecentral set-csr
        contract.world.issue(contract.name, days=60)
        contract.write_config(key=str(new_key))
        before = contract.snapshot()

        result = contract.run()

        assert result["status"] == "rolled-back", result
        message = result["message"]
        assert f"pairs {contract.files.fullchain} with the key {contract.files.key}" in message
        assert "does not match the new certificate" in message and "configtest" not in message
        assert contract.snapshot() == before
        assert server.pid == pid and server.graceful_restarts() == restarts
        contract.wait_presented(first.fingerprint)

    def test_verify_on_a_site_serving_a_stale_copy_is_rolled_back(self, contract: Contract) -> None:
        """``verify`` names (by SNI) a virtual host that reads a stale copy of the certificate,
        not the agent's files: after the graceful restart it still presents the old one, so the
        agent rolls back rather than claim success, and checks that the old one is back."""
        first = self.first_install(contract)
        harness: ApacheHarness = contract.harness  # type: ignore[assignment]
        shutil.copy(contract.files.fullchain, harness.server.stale_cert)
        harness.server.reload(expect=first.fingerprint)
        contract.world.issue(contract.name, days=60)
        contract.write_config(verify=harness.url(STALE_SITE), verify_timeout=3.0)
        before = contract.snapshot()

        result = contract.run()

        assert result["status"] == "rolled-back", result
        assert "verification failed" in result["message"]
        assert "serves the previous certificate again" in result["message"]
        assert contract.snapshot() == before
        contract.wait_presented(first.fingerprint)

    def test_pairs_are_read_from_apaches_own_parse(self, contract: Contract) -> None:
        """The dump the check reads, from the running configuration: both virtual hosts, quoted
        paths, and the site's key."""
        harness: ApacheHarness = contract.harness  # type: ignore[assignment]
        output = subprocess.run(
            dump_command("apache2ctl", ApacheOptions().mod_info), shell=True,
            capture_output=True, text=True, check=True).stdout
        pairs = {(p.cert, p.key) for p in parse_dump(output).pairs()}
        assert pairs == {(str(contract.files.fullchain), str(contract.files.key)),
                         (str(harness.server.stale_cert), str(harness.server.stale_key))}


class TestApacheChainFile(ServiceContract):
    """The contract with the leaf in ``SSLCertificateFile`` and ``SSLCertificateChainFile`` (ECDSA)."""

    key_kind = "ec256"

    @pytest.fixture
    def harness(self, tmp_path: Path) -> ServiceHarness:
        return ApacheHarness(tmp_path / "apache", style="chain")


# -- the parse, against apache2 itself --------------------------------------------------------


def test_pairing_follows_mod_ssl(tmp_path: Path) -> None:
    """A global key serves a virtual host naming only its certificate; relative paths are under
    ServerRoot; ``<IfModule>`` is resolved; a host with ``SSLEngine off`` loads nothing; the
    n-th certificate of a host pairs with the n-th key of its list followed by the global ones."""
    for name in ("a.crt", "a.key", "b.crt", "c.pem", "d.crt", "chain.pem"):
        (tmp_path / name).write_text("placeholder\n")  # parsing checks only that files exist
    conf = tmp_path / "httpd.conf"
    modules = "/usr/lib/apache2/modules"
    conf.write_text(
        f"ServerRoot {tmp_path}\nServerName localhost\nDefaultRuntimeDir {tmp_path}\n"
        f"PidFile {tmp_path}/pid\nErrorLog {tmp_path}/error.log\n"
        f"LoadModule mpm_event_module {modules}/mod_mpm_event.so\n"
        f"LoadModule authz_core_module {modules}/mod_authz_core.so\n"
        f"LoadModule ssl_module {modules}/mod_ssl.so\n"
        "<IfModule ssl_module>\n  SSLCertificateKeyFile a.key\n"
        "  SSLCertificateChainFile chain.pem\n</IfModule>\n"
        "Listen 127.0.0.1:1 https\n"
        "<VirtualHost 127.0.0.1:1>\n  ServerName a\n  SSLEngine on\n"
        '  SSLCertificateFile "a.crt"\n  <Directory /x>\n    Require all granted\n  </Directory>\n'
        "</VirtualHost>\n"
        "<VirtualHost 127.0.0.1:1>\n  ServerName b\n  SSLEngine off\n  SSLCertificateFile b.crt\n"
        "</VirtualHost>\n"
        "<VirtualHost 127.0.0.1:1>\n  ServerName c\n  SSLEngine optional\n"
        f"  SSLCertificateFile '{tmp_path}/c.pem'\n  SSLCertificateFile d.crt\n"
        f"  SSLCertificateKeyFile {tmp_path}/a.key\n</VirtualHost>\n")
    output = subprocess.run(dump_command(f"apache2 -f {conf}", ApacheOptions().mod_info),
                            shell=True, capture_output=True, text=True, check=True).stdout

    parsed = parse_dump(output)

    assert parsed.server_root == str(tmp_path)
    got = [(p.cert, p.key, p.chain) for p in parsed.pairs()]
    t = str(tmp_path)
    assert got == [
        (f"{t}/a.crt", f"{t}/a.key", f"{t}/chain.pem"),
        (f"{t}/c.pem", f"{t}/a.key", f"{t}/chain.pem"),
        (f"{t}/d.crt", f"{t}/a.key", f"{t}/chain.pem"),  # the global key, second in the list
    ]
    assert all(p.server.startswith(f"<VirtualHost 127.0.0.1:1> ({conf}:") for p in parsed.pairs())


def test_pair_check_on_debians_stock_configuration(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of this host's /etc/apache2 with mod_ssl and the stock default-ssl site enabled
    (what a2enmod ssl and a2ensite default-ssl do), its certificate lines pointed at our files:
    the check finds the site through apache2.conf's includes and ``<IfModule>`` blocks, accepts
    the matching key, and refuses another one, through the stock ``apache2ctl``."""
    conf = tmp_path / "apache2"
    shutil.copytree("/etc/apache2", conf, symlinks=True)
    for module in ("ssl.load", "ssl.conf", "socache_shmcb.load"):
        link = conf / "mods-enabled" / module
        if not link.exists():
            link.symlink_to(f"../mods-available/{module}")
    (conf / "sites-enabled" / "default-ssl.conf").symlink_to("../sites-available/default-ssl.conf")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (conf / "envvars").write_text(  # the stock envvars, with run/lock/log dirs of our own
        "".join(f"export APACHE_{k}={v}\n" for k, v in (
            ("RUN_USER", "www-data"), ("RUN_GROUP", "www-data"), ("PID_FILE", f"{run_dir}/pid"),
            ("RUN_DIR", run_dir), ("LOCK_DIR", run_dir), ("LOG_DIR", run_dir))))
    site = write_cert_files(tmp_path / "site", ["www.example.test"])
    other = write_cert_files(tmp_path / "other", ["www.example.test"])
    stock = (conf / "sites-available" / "default-ssl.conf").read_text()
    assert "/etc/ssl/certs/ssl-cert-snakeoil.pem" in stock
    (conf / "sites-available" / "default-ssl.conf").write_text(
        stock.replace("/etc/ssl/certs/ssl-cert-snakeoil.pem", str(site.fullchain))
             .replace("/etc/ssl/private/ssl-cert-snakeoil.key", str(site.key)))
    monkeypatch.setenv("APACHE_CONFDIR", str(conf))
    entry = CertEntry(name="www.example.test", service="apache", key=str(site.key),
                      cert=str(site.cert), fullchain=str(site.fullchain),
                      check=DEFAULTS["check"], options=ApacheOptions())

    ApacheService().check_config(entry)
    (pair,) = check_pairs(entry)
    assert pair.server == f"<VirtualHost *:443> ({conf}/sites-enabled/default-ssl.conf:1)"
    assert (pair.cert, pair.key) == (str(site.fullchain), str(site.key))

    (conf / "sites-available" / "default-ssl.conf").write_text(
        stock.replace("/etc/ssl/certs/ssl-cert-snakeoil.pem", str(site.fullchain))
             .replace("/etc/ssl/private/ssl-cert-snakeoil.key", str(other.key)))
    with pytest.raises(InstallError, match=f"pairs {site.fullchain} with the key {other.key}, "
                                           "which does not match the new certificate"):
        ApacheService().check_config(entry)


# -- configuration: defaults, overrides, options ----------------------------------------------


def load_entries(tmp_path: Path, *tables: dict[str, Any]) -> tuple[list[CertEntry], list[str]]:
    """Load an install.toml holding ``tables`` through the real loader and registry."""
    path = tmp_path / "install.toml"
    path.write_text(dump_toml({"database": {"url": "sqlite:///unused.db"}}, tables))
    config = load_install(str(path), Registry.load())
    return list(config.certs), [b.error for b in config.broken]


def test_a_two_line_entry_gets_debians_layout(tmp_path: Path) -> None:
    (entry,), broken = load_entries(tmp_path, {"name": "www.example.test", "service": "apache"})
    assert broken == []
    assert (entry.key, entry.cert, entry.chain, entry.fullchain, entry.combined) == (
        "/etc/ssl/private/www.example.test.key", "/etc/ssl/certs/www.example.test.crt",
        "/etc/ssl/certs/www.example.test.ca", "/etc/ssl/certs/www.example.test.full", "")
    assert (entry.check, entry.reload) == ("apache2ctl configtest", "apache2ctl graceful")
    assert entry.verify == ["https://127.0.0.1:443?sni=www.example.test"]
    assert entry.options == ApacheOptions()


def test_every_default_can_be_overridden(tmp_path: Path) -> None:
    table = {"name": "www.example.test", "service": "apache", "key": "/srv/k.pem",
             "cert": "/srv/c.pem", "chain": "", "fullchain": "/srv/f.pem", "check": "apachectl -t",
             "reload": "systemctl reload httpd", "verify": "tls://127.0.0.1:8443",
             "options": {"key_check": False, "apachectl": "apachectl", "mod_info": "/nowhere.so"}}
    (entry,), broken = load_entries(tmp_path, table)
    assert broken == []
    assert (entry.key, entry.cert, entry.chain, entry.fullchain) == ("/srv/k.pem", "/srv/c.pem",
                                                                     "", "/srv/f.pem")
    assert (entry.check, entry.reload, entry.verify) == ("apachectl -t", "systemctl reload httpd",
                                                         ["tls://127.0.0.1:8443"])
    assert entry.options == ApacheOptions(key_check=False, apachectl="apachectl", mod_info="/nowhere.so")
    assert set(entry.files) == {"cert", "fullchain"}


@pytest.mark.parametrize(("options", "error"), [
    ({"key_check": "yes"}, "cert[0].options.key_check must be bool, not str ('yes')"),
    ({"apachectl": ""}, "cert[0].options.apachectl: must be a command, not empty"),
    ({"apachectl": "apachectl 'unclosed"}, "cert[0].options.apachectl: cannot parse"),
    ({"mod_info": "/nowhere/mod_info.so"}, "cert[0].options.mod_info: /nowhere/mod_info.so does not exist"),
    ({"dump": True}, ("unknown key cert[0].options.dump for service 'apache' (allowed: apachectl, "
                      "key_check, mod_info)")),
])
def test_bad_options_are_refused_when_the_config_is_loaded(tmp_path: Path, options: dict[str, Any],
                                                           error: str) -> None:
    """A broken entry is reported (and skipped) when install.toml is read, naming the key."""
    good = {"name": "ok.example.test", "service": "apache"}
    entries, broken = load_entries(tmp_path, {"name": "www.example.test", "service": "apache",
                                              "options": options}, good)
    assert [e.name for e in entries] == ["ok.example.test"]
    assert len(broken) == 1 and error in broken[0], broken


def test_the_options_model_refuses_a_bad_value_naming_its_key() -> None:
    with pytest.raises(EntryError, match="does not exist") as caught:
        ApacheOptions(mod_info="/nowhere/mod_info.so")
    assert caught.value.key == "mod_info"


# -- item 5: listed once installed --------------------------------------------------------------


def test_lecentral_install_plugins_lists_apache() -> None:
    """The installed distribution's entry point, as ``lecentral-install plugins`` shows it."""
    import json

    out = subprocess.run([sys.executable, "-c", "from lecentral.cli.agent import main; main()",
                          "plugins", "--json"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    services = {s["name"]: s for s in json.loads(out.stdout)["services"]}
    assert services["apache"]["distribution"] == "lecentral-apache"
    assert services["apache"]["defaults"]["reload"] == "apache2ctl graceful"
    assert set(services["apache"]["options"]) == {"key_check", "apachectl", "mod_info"}
