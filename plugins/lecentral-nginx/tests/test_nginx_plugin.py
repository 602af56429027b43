"""The ``nginx`` service plugin against Debian's real nginx on 127.0.0.1.

Each test starts its own nginx (:class:`~lecentral_testing.daemons.nginx.NginxServer`: its own
prefix, config and logs in a temp dir, a dynamic port) and drives the real ``lecentral-install
run`` through the service contract (:mod:`lecentral_testing.service_contract`). The entries keep
the plugin's defaults except ``check`` and ``reload``: Debian's nginx reads the compiled-in
/etc/nginx/nginx.conf and has no environment variable to point ``nginx -t`` elsewhere, so they are
the same commands with the test instance's ``-p``/``-c``/``-e`` (overriding them is what an admin
with a non-standard layout does too).

Certificates: the database is filled by :class:`~lecentral_testing.agent.TestCA`, a real CA
signing the CSR made from the server's key (leaf + CA chain, like Pebble's). Which CA signed
them does not matter to nginx or to the checks here: nginx loads and presents whatever pair it is
given, and the verifier compares SHA-256 fingerprints. Placeholders are self-signed
(:mod:`lecentral_testing.pki`).
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lecentral_nginx.parsed import dump_argv
from lecentral_nginx.plugin import DEFAULTS
from lecentral_nginx.service import NginxService, check_pairs
from lecentral_testing.agent import dump_toml
from lecentral_testing.daemons.certs import write_cert_files
from lecentral_testing.daemons.nginx import NginxServer
from lecentral_testing.service_contract import (
    Contract,
    ContractFiles,
    ServiceContract,
    ServiceHarness,
)

from lecentral.errors import InstallError
from lecentral.install.config import CertEntry, load_install
from lecentral.install.csr import KeySpec, make_csr
from lecentral.registry import Registry

STALE_SITE = "stale.example.test"


class NginxHarness(ServiceHarness):
    """nginx reading the full chain and key the ``nginx`` service writes, plus a second server
    block, ``stale.example.test``, reading its own copy of a certificate."""

    service = "nginx"
    server: NginxServer

    def start(self, files: ContractFiles) -> None:
        stale_dir = self.workdir.parent / "stale"
        stale_dir.mkdir(parents=True, exist_ok=True)
        self.stale_cert, stale_key = stale_dir / "stale.full", stale_dir / "stale.key"
        shutil.copy(files.fullchain, self.stale_cert)
        shutil.copy(files.key, stale_key)
        self.server = NginxServer(self.workdir, cert=files.fullchain, key=files.key,
                                  server_name=ServiceContract.contract_name,
                                  vhosts={STALE_SITE: (self.stale_cert, stale_key)}).start()

    def stop(self) -> None:
        self.server.close()

    def entry(self, files: ContractFiles) -> dict[str, Any]:
        return {"check": self.server.check_command, "reload": self.server.reload_command,
                "verify": self.url(ServiceContract.contract_name)}

    def url(self, sni: str) -> str:
        return f"{self.server.verify_urls['https']}?sni={sni}"

    def break_config(self) -> None:
        with self.server.conf.open("a") as conf:
            conf.write("not_an_nginx_directive on;\n")

    def workers(self) -> set[int]:
        """The pids of the master's worker processes (a reload replaces them)."""
        pid = self.server.pid
        return {int(child) for child in
                Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}

    def reloads(self) -> int:
        """How many reloads the master has logged (SIGHUP)."""
        return self.server.error_log.read_text(errors="replace").count("reconfiguring")


class TestNginx(ServiceContract):
    """The service contract, plus the ways nginx itself refuses or ignores new files."""

    @pytest.fixture
    def harness(self, tmp_path: Path) -> ServiceHarness:
        return NginxHarness(tmp_path / "nginx")

    def rotate_key(self, contract: Contract, spec: KeySpec, **entry: Any) -> Path:
        """The admin makes a new key and CSR on the server (install.toml now names the new key),
        the central host stores the CSR and gets a certificate for it; nginx.conf is unchanged."""
        new_key = contract.files.key.with_name("rotated.key")
        csr, _ = make_csr(contract.name, [], new_key, spec, force=False)
        contract.world.store.set_csr(contract.name, csr.pem, csr.md5_modulus)  # lecentral set-csr
        contract.world.issue(contract.name, days=60)
        contract.write_config(key=str(new_key), **entry)
        return new_key

    def test_a_key_nginx_does_not_use_fails_nginx_t_before_the_reload(self, contract: Contract) -> None:
        """nginx.conf still names the old RSA key: ``nginx -t`` loads the new full chain with it
        and fails (key values mismatch). The previous files come back; nginx is never signalled."""
        first = self.first_install(contract)
        harness: NginxHarness = contract.harness  # type: ignore[assignment]
        reloads, pid = harness.reloads(), harness.server.pid
        self.rotate_key(contract, KeySpec("rsa", 2048))
        before = contract.snapshot()

        result = contract.run()

        assert result["status"] == "rolled-back", result
        assert "config test" in result["message"] and "key values mismatch" in result["message"]
        assert contract.snapshot() == before
        assert harness.server.pid == pid and harness.reloads() == reloads
        contract.wait_presented(first.fingerprint)

    def test_a_key_of_another_type_passes_nginx_t_and_is_caught_before_the_reload(
            self, contract: Contract) -> None:
        """The rotated key is ECDSA and nginx.conf still names the old RSA key: OpenSSL keeps keys
        per type, so ``nginx -t`` passes, and a reload would leave the server block failing every
        handshake. The plugin's pair check (``nginx -T``, with the instance's ``-p``/``-c``/``-e``
        from ``check``) refuses first, naming the config file, the server_name and the key: the
        previous files come back, nginx is never signalled and serves the old certificate."""
        first = self.first_install(contract)
        harness: NginxHarness = contract.harness  # type: ignore[assignment]
        reloads, pid, workers = harness.reloads(), harness.server.pid, harness.workers()
        self.rotate_key(contract, KeySpec("ec", curve="p256"))
        before = contract.snapshot()

        result = contract.run()

        assert result["status"] == "rolled-back", result
        message = result["message"]
        assert f"the server block at {harness.server.conf}:" in message
        assert f"(server_name {contract.name})" in message
        assert (f"pairs ssl_certificate {contract.files.fullchain} with ssl_certificate_key "
                f"{contract.files.key}, which does not match the new certificate") in message
        assert "verification failed" not in message
        assert contract.snapshot() == before
        assert harness.server.pid == pid and harness.reloads() == reloads
        assert harness.workers() == workers
        contract.wait_presented(first.fingerprint)

    def test_verify_on_a_site_serving_a_stale_copy_is_rolled_back(self, contract: Contract) -> None:
        """``verify`` names (by SNI) a server block that reads a stale copy of the certificate,
        not the agent's files: after the reload it still presents the old one, so the agent rolls
        back rather than claim success, and checks that the old one is back."""
        first = self.first_install(contract)
        harness: NginxHarness = contract.harness  # type: ignore[assignment]
        shutil.copy(contract.files.fullchain, harness.stale_cert)
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


# -- the certificate/key check on nginx's own dump ----------------------------------------------


def test_pair_check_on_debians_stock_configuration(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A copy of this host's /etc/nginx (paths pointed at the copy and a temp log dir), read by
    the stock nginx through ``nginx -c COPY -T``. With only the stock default site, no server
    block uses the entry's files: a warning, no error (a first install). Then sites-enabled/default
    gets an HTTPS server (quoted ssl_certificate, comments, the key line in an ``include``d
    snippet, a second server choosing its files by ``$ssl_server_name``, skipped): the check finds
    the pair through nginx.conf's includes, accepts the matching key, and refuses a key of another
    type, which ``nginx -t`` itself lets through."""
    conf, logs = tmp_path / "nginx", tmp_path / "log"
    shutil.copytree("/etc/nginx", conf)  # follows the sites-enabled and modules-enabled links
    logs.mkdir()
    main = conf / "nginx.conf"
    main.write_text(main.read_text().replace("/etc/nginx/", f"{conf}/")
                    .replace("/var/log/nginx/", f"{logs}/").replace("/run/nginx.pid", f"{logs}/pid"))
    site = write_cert_files(tmp_path / "site", ["www.example.test"], key_kind="ec256")
    other = write_cert_files(tmp_path / "other", ["www.example.test"], key_kind="rsa2048")
    entry = CertEntry(name="www.example.test", service="nginx", key=str(site.key),
                      cert=str(site.cert), fullchain=str(site.fullchain),
                      check=f"nginx -c {main} -e {logs}/error.log -t -q")

    with caplog.at_level(logging.WARNING, logger="lecentral_nginx.service"):
        assert check_pairs(entry) == []
    assert f"no server block in nginx's configuration has ssl_certificate {site.fullchain}" in caplog.text

    default = conf / "sites-enabled" / "default"
    stock = default.read_text()
    assert "server_name _;" in stock
    snippet = conf / "snippets" / "lecentral-key.conf"
    snippet.write_text(f"ssl_certificate_key {site.key};  # the entry's key\n")
    default.write_text(stock + f"""
# added: an HTTPS site (port 1 is never bound: nginx -T only reads)
server {{
\tlisten 127.0.0.1:1 ssl;
\tserver_name www.example.test 'alt.example.test';  # ssl_certificate /not/this.pem;
\tssl_certificate "{site.fullchain}";
\tinclude snippets/lecentral-key.conf;
}}
server {{
\tlisten 127.0.0.1:1 ssl;
\tserver_name ~^(?<sub>.+)\\.example\\.test$;
\tssl_certificate {tmp_path}/by-name/$ssl_server_name.full;
\tssl_certificate_key {tmp_path}/by-name/$ssl_server_name.key;
}}
""")
    NginxService().check_config(entry)
    (pair,) = check_pairs(entry)
    assert pair.source.startswith(f"the server block at {default}:")
    assert pair.source.endswith("(server_name www.example.test alt.example.test)")
    assert (pair.cert, pair.key) == (str(site.fullchain), str(site.key))

    snippet.write_text(f"ssl_certificate_key {other.key};\n")
    subprocess.run(["nginx", "-c", str(main), "-e", f"{logs}/error.log", "-t", "-q"], check=True)
    with pytest.raises(InstallError) as caught:
        NginxService().check_config(entry)
    message = str(caught.value)
    assert f"the server block at {default}:" in message
    assert "(server_name www.example.test alt.example.test)" in message
    assert f"with ssl_certificate_key {other.key}, which does not match the new certificate" in message


@pytest.mark.parametrize(("check", "dump"), [
    ("nginx -t", ["nginx", "-T"]),
    ("/usr/sbin/nginx -p /srv/ -c /srv/n.conf -e /srv/e.log -t -q",
     ["/usr/sbin/nginx", "-p", "/srv/", "-c", "/srv/n.conf", "-e", "/srv/e.log", "-T"]),
    ("sudo nginx -qt -c/srv/n.conf", ["sudo", "nginx", "-c/srv/n.conf", "-T"]),
    ("systemctl reload nginx", ["nginx", "-T"]),  # not a config test: the default nginx
    ("", ["nginx", "-T"]),
])
def test_nginx_T_is_the_check_command_with_T(check: str, dump: list[str]) -> None:
    assert dump_argv(check) == dump


# -- configuration: defaults and overrides --------------------------------------------------------


def entries_from(tmp_path: Path, table: dict[str, Any]) -> list[Any]:
    """The ``[[cert]]`` entries of an install.toml holding ``table``, through the real loader."""
    path = tmp_path / "install.toml"
    path.write_text(dump_toml({"database": {"url": "sqlite:///unused.db"}}, [table]))
    config = load_install(str(path), Registry.load())
    assert not config.broken, config.broken
    return list(config.certs)


def test_a_two_line_entry_gets_debians_layout(tmp_path: Path) -> None:
    (entry,) = entries_from(tmp_path, {"name": "www.example.test", "service": "nginx"})
    assert entry.key == "/etc/ssl/private/www.example.test.key"
    assert entry.files == {"cert": "/etc/ssl/certs/www.example.test.crt",
                           "fullchain": "/etc/ssl/certs/www.example.test.full"}
    assert (entry.check, entry.reload) == ("nginx -t", "nginx -s reload")
    assert entry.verify == ["https://127.0.0.1:443?sni=www.example.test"]


def test_every_default_can_be_overridden(tmp_path: Path) -> None:
    overrides = {"key": "/srv/k.pem", "cert": "/srv/c.pem", "fullchain": "/srv/f.pem",
                 "chain": "/srv/ca.pem", "check": "nginx -t -c /srv/nginx.conf",
                 "reload": "systemctl reload nginx", "verify": ["tls://127.0.0.1:8443"]}
    (entry,) = entries_from(tmp_path, {"name": "www.example.test", "service": "nginx", **overrides})
    assert {k: getattr(entry, k) for k in overrides} == overrides
    assert set(DEFAULTS) <= set(overrides)


def test_nginx_has_no_options(tmp_path: Path) -> None:
    path = tmp_path / "install.toml"
    path.write_text(dump_toml({"database": {"url": "sqlite:///unused.db"}},
                              [{"name": "www.example.test", "service": "nginx",
                                "options": {"reload_signal": "HUP"}}]))
    (broken,) = load_install(str(path), Registry.load()).broken
    assert "unknown key cert[0].options.reload_signal for service 'nginx' (allowed: none)" in broken.error


# -- item 5: listed once installed --------------------------------------------------------------


def test_lecentral_install_plugins_lists_nginx() -> None:
    """The installed distribution's entry point, as ``lecentral-install plugins`` shows it."""
    out = subprocess.run([sys.executable, "-c", "from lecentral.cli.agent import main; main()",
                          "plugins", "--json"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    services = {s["name"]: s for s in json.loads(out.stdout)["services"]}
    assert services["nginx"]["distribution"] == "lecentral-nginx"
    assert services["nginx"]["defaults"]["check"] == "nginx -t"
