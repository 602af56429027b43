"""The SQL store on a MariaDB that offers TLS: PyMySQL's preferred TLS as before, without the
system CA store it loads for nothing (20-40 ms of every command: lecentral/store/direct.py,
``connection_class``), and TLS options in the URL still PyMySQL's own (verified)."""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lecentral_testing.mariadb import MariaDBServer
from lecentral_testing.pki import key_pem, make_self_signed
from sqlalchemy import text

from lecentral.errors import StoreError
from lecentral.store.sql import SqlStore


class TlsMariaDB(MariaDBServer):
    """A MariaDB offering TLS with a self-signed certificate (``cert``: its PEM file)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        pem, key = make_self_signed(["db.tls.example.test"])
        self.cert = self.dir / "server.pem"
        self.cert.write_bytes(pem)
        self._key = self.dir / "server.key"
        self._key.write_bytes(key_pem(key))
        self._key.chmod(0o600)
        if self.run_as:  # (the daemon's account reads them)
            shutil.chown(self._key, self.run_as)

    def _argv(self) -> list[str]:
        return [*super()._argv(), f"--ssl-cert={self.cert}", f"--ssl-key={self._key}"]


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
