"""The SQL store on a MariaDB that offers TLS: PyMySQL's preferred TLS as before (PyMySQL 1.2
and later; earlier ones connect in clear without ``ssl_*`` options), without the system CA store
it loads for nothing (20-40 ms of every command: lecentral/store/direct.py,
``connection_class``), and TLS options in the URL still PyMySQL's own (verified), for the agent
too, as docs/agent.md shows them."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lecentral_testing.agent import AgentWorld
from lecentral_testing.mariadb import MariaDBServer
from lecentral_testing.pki import key_pem, make_self_signed
from lecentral_testing.postgres import PostgresServer
from lecentral_testing.process import chown_to
from sqlalchemy import text

from lecentral.errors import StoreError
from lecentral.store.sql import SqlStore


def _server_files(directory: Path, run_as: str | None) -> tuple[Path, Path]:
    """A self-signed certificate for ``localhost`` and its key (0600, the daemon's account's),
    in ``directory``: (certificate, key)."""
    pem, key = make_self_signed(["localhost", "db.tls.example.test"])
    cert = directory / "server.pem"
    cert.write_bytes(pem)
    key_file = directory / "server.key"
    key_file.write_bytes(key_pem(key))
    key_file.chmod(0o600)
    chown_to(key_file, run_as)
    return cert, key_file


class TlsMariaDB(MariaDBServer):
    """A MariaDB offering TLS with a self-signed certificate (``cert``: its PEM file)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.cert, self._key = _server_files(self.dir, self.run_as)

    def _argv(self) -> list[str]:
        return [*super()._argv(), f"--ssl-cert={self.cert}", f"--ssl-key={self._key}"]


class TlsPostgres(PostgresServer):
    """A PostgreSQL offering TLS with a self-signed certificate (``cert``: its PEM file)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.cert, self._key = _server_files(self.dir, self.run_as)

    def _argv(self) -> list[str]:
        return [*super()._argv(), "-c", "ssl=on", "-c", f"ssl_cert_file={self.cert}",
                "-c", f"ssl_key_file={self._key}"]


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsMariaDB]:
    with TlsMariaDB(tmp_path_factory.mktemp("tls-mariadb")) as server:
        yield server


def _cipher(store: SqlStore) -> str:
    with store.transaction("asking the cipher") as conn:
        return str(conn.execute(text("SHOW SESSION STATUS LIKE 'Ssl_cipher'")).one()[1])


def test_preferred_tls_without_reading_the_system_ca_store(
        tls_server: TlsMariaDB, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[Any] = []
    real = ssl.SSLContext.load_default_certs

    def load_default_certs(self: ssl.SSLContext, *args: Any) -> None:
        loads.append(args)
        real(self, *args)

    monkeypatch.setattr(ssl.SSLContext, "load_default_certs", load_default_certs)
    store = SqlStore(tls_server.url)
    try:
        assert _cipher(store), "PyMySQL's preferred TLS was not negotiated"
        store.init_schema()
        assert store.list() == []
    finally:
        store.close()
    assert loads == []


def test_tls_options_in_the_url_are_pymysqls_own(tls_server: TlsMariaDB,
                                                 tmp_path: Path) -> None:
    """``ssl_ca`` in the URL: the server's certificate is verified against it (PyMySQL's own
    context, not the unverified preferred one): its own CA connects, another is refused."""
    ca = f"?ssl_ca={tls_server.cert}&ssl_check_hostname=false"
    store = SqlStore(tls_server.url + ca)
    try:
        assert _cipher(store)
    finally:
        store.close()
    other = tmp_path / "other-ca.pem"
    other.write_bytes(make_self_signed(["other.tls.example.test"])[0])
    store = SqlStore(tls_server.url + f"?ssl_ca={other}&ssl_check_hostname=false")
    try:
        with pytest.raises(StoreError, match="CERTIFICATE_VERIFY_FAILED") as info:
            store.list()
        assert tls_server.password not in str(info.value)
    finally:
        store.close()




@pytest.fixture(scope="module")
def tls_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsPostgres]:
    with TlsPostgres(tmp_path_factory.mktemp("tls-postgres")) as server:
        yield server


#: docs/agent.md's options: the CA file, and the same with another CA (``{ca}``)
VERIFY = {"mariadb": "?ssl_ca={ca}", "postgres": "?sslmode=verify-full&sslrootcert={ca}"}


@pytest.mark.parametrize("kind", ["mariadb", "postgres"])
def test_the_agent_verifies_the_database_it_reads(kind: str, request: pytest.FixtureRequest,
                                                  tmp_path: Path) -> None:
    """docs/agent.md's TLS options (MariaDB ``?ssl_ca=``, PostgreSQL ``?sslmode=verify-full&
    sslrootcert=``): the agent's run reads its rows over TLS, the server's certificate verified
    against that CA and its host name checked (``localhost`` is in the server's certificate;
    on MariaDB an account ``REQUIRE SSL``);
    the server shown a certificate of another CA, or reached by a name its certificate does
    not hold, the run fails at once (not retried for ``retry_for``: PyMySQL says "can't
    connect", 2003, for it too) with exit 4 saying so, nothing installed, no password shown."""
    server = request.getfixturevalue("tls_server" if kind == "mariadb" else "tls_postgres")
    name = "www.example.test"
    url = server.create_database("agent_tls")
    world = AgentWorld(tmp_path / "agent", db_url=url)
    try:
        world.add(name)
        leaf = world.issue(name)
        if kind == "mariadb":  # the docs' account that may not connect in clear
            server.execute("CREATE USER 'tlsreader'@'%' IDENTIFIED BY 'tls-pw' REQUIRE SSL")
            server.execute("GRANT SELECT ON `agent_tls`.`certs` TO 'tlsreader'@'%'")
            url = url.replace(f"{server.user}:{server.password}@", "tlsreader:tls-pw@")
            assert "tlsreader" in url
        by_name = url.replace("@127.0.0.1:", "@localhost:")
        assert by_name != url
        other = tmp_path / "other-ca.pem"
        other.write_bytes(make_self_signed(["localhost"])[0])
        for bad in (by_name + VERIFY[kind].format(ca=other),
                    url + VERIFY[kind].format(ca=server.cert)):
            world.write_config(world.entry(name), database=bad)
            out = world.run("run")
            assert out.exit_code == 4, out.stderr
            assert "certificate verify failed" in out.stderr.lower() or \
                "does not match host name" in out.stderr, out.stderr
            assert "the server's TLS certificate was refused" in out.stderr
            assert server.password not in out.stderr + out.stdout and "tls-pw" not in out.stderr
            assert "retry" not in out.stderr  # (no wait cures it)
            assert not any((world.ssl / "certs").iterdir())

        world.write_config(world.entry(name), database=by_name + VERIFY[kind].format(ca=server.cert))
        out = world.run("run")
        assert out.exit_code == 0, out.stderr
        assert out.by_name(name)["status"] == "installed"
        assert out.by_name(name)["fingerprint"] == leaf.fingerprint
    finally:
        world.close()
        server.drop_database("agent_tls")
        if kind == "mariadb":
            server.execute("DROP USER IF EXISTS 'tlsreader'@'%'")


@pytest.mark.parametrize(("options", "said"), [
    ("?ssl_ca=/nonexistent/ca.pem", "No such file or directory (ssl_ca = /nonexistent/ca.pem"),
    ("?ssl_ca=/tmp", "Is a directory (ssl_ca = /tmp"),
    ("?ssl_ca=/etc/passwd", "(ssl_ca = /etc/passwd: a readable PEM file of certificates"),
    ("?ssl_ca=/etc/passwd&ssl_chek_hostname=false", "unexpected keyword argument 'ssl_chek_hostname'"),
])
def test_options_pymysql_cannot_use_are_a_clear_error(tls_server: TlsMariaDB, tmp_path: Path,
                                                      options: str, said: str) -> None:
    """A TLS option of the agent's MariaDB URL that cannot be used (its file missing, a
    directory, not certificates; an option misspelt): exit 4 naming it, as for a database
    down, nothing installed, no password shown (it was a traceback and exit 1)."""
    name = "www.example.test"
    url = tls_server.create_database("agent_opts")
    world = AgentWorld(tmp_path / "agent", db_url=url)
    try:
        world.add(name)
        world.issue(name)
        world.write_config(world.entry(name), database=url + options)
        out = world.run("run")
        assert out.exit_code == 4, out.stderr
        assert said in out.stderr and "Traceback" not in out.stderr
        assert "check the options of [database] url" in out.stderr
        assert tls_server.password not in out.stderr + out.stdout
        assert not any((world.ssl / "certs").iterdir())
    finally:
        world.close()
        tls_server.drop_database("agent_opts")
