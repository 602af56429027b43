"""The store on SQLite, MariaDB (with the seed's own DDL) and PostgreSQL, against real servers."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from lecentral.certificates import Csr
from lecentral.errors import StoreError
from lecentral.store.rows import CertRow
from lecentral.store.schema import certs_ddl
from lecentral.store.sql import SqlStore
from lecentral.testing.pki import make_csr, make_self_signed

BACKENDS = ["sqlite", "mariadb", "postgres"]
SEED_DDL = (Path(__file__).parents[1] / "sql" / "mysql" / "certs.sql").read_text()


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on each backend."""
    return str(request.getfixturevalue(f"{request.param}_url"))


@pytest.fixture
def store(url: str) -> Any:
    s = SqlStore(url)
    s.init_schema()
    yield s
    s.close()


def new_row(name: str = "www.example.test", **kw: Any) -> CertRow:
    csr = Csr.load(make_csr([name])[0])
    values: dict[str, Any] = {"ts_expire": 1, "ts_last_update": 1, "count_fail_update": 0, **kw}
    return CertRow(name=name, csr=csr.pem, md5_modulus=csr.md5_modulus, **values)


def test_the_mysql_ddl_is_the_seeds_verbatim() -> None:
    seed_dir = Path(__file__).parents[2] / "shared" / "seed"  # beside the checkout, CI included
    text_ = "".join(p.read_text() for p in sorted(seed_dir.glob("*.txt")))
    start = text_.index("CREATE TABLE `certs`")
    end = text_.index("COLLATE=ascii_bin", start) + len("COLLATE=ascii_bin")
    assert SEED_DDL.strip() == text_[start:end].strip()


def test_roundtrip_and_duplicates(store: SqlStore) -> None:
    row = new_row(comment="web", enable=True)
    store.add(row)
    assert store.get(row.name) == row
    assert store.get("other.example.test") is None
    with pytest.raises(StoreError, match="www.example.test is already in the database"):
        store.add(new_row())
    assert store.get(row.name) == row
    assert [r.name for r in store.list()] == ["www.example.test"]


def test_save_issued_keeps_the_previous_certificate(store: SqlStore) -> None:
    store.add(new_row())
    crt1, _ = make_self_signed(["www.example.test"])
    ca1, _ = make_self_signed(["CA one"])
    store.save_issued("www.example.test", crt1, ca1, 1000, 500)
    crt2, _ = make_self_signed(["www.example.test"])
    ca2, _ = make_self_signed(["CA two"])
    store.record_failure("www.example.test", "a failure in between", 600)
    store.save_issued("www.example.test", crt2, ca2, 2000, 700)
    row = store.get("www.example.test")
    assert row is not None
    assert (row.crt, row.ca, row.old_crt, row.old_ca) == (crt2, ca2, crt1, ca1)
    assert row.md5_ca == hashlib.md5(ca2).hexdigest()
    assert (row.ts_expire, row.ts_last_update, row.count_fail_update) == (2000, 700, 0)
    assert [e.kind for e in store.events("www.example.test")] == ["issued", "failed", "issued", "added"]


def test_save_is_one_transaction(store: SqlStore, url: str) -> None:
    """If the event cannot be written, the certificate is not half-saved."""
    store.add(new_row())
    before = store.get("www.example.test")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE lecentral_events"))
    engine.dispose()
    crt, _ = make_self_signed(["www.example.test"])
    with pytest.raises(StoreError, match="saving the new certificate of www.example.test failed"):
        store.save_issued("www.example.test", crt, crt, 1000, 500)
    assert store.get("www.example.test") == before


def test_record_failure_counts_from_null(store: SqlStore) -> None:
    store.add(new_row(count_fail_update=None))
    assert store.record_failure("www.example.test", "DNS said no", 10) == 1
    assert store.record_failure("www.example.test", "DNS said no again", 20) == 2
    row = store.get("www.example.test")
    assert row is not None and row.ts_last_update == 20
    assert store.events("www.example.test", 1)[0].message == "DNS said no again"
    with pytest.raises(StoreError, match="no certificate named 'x.example.test'"):
        store.record_failure("x.example.test", "", 1)


def test_set_csr_enable_remove(store: SqlStore) -> None:
    store.add(new_row())
    csr = Csr.load(make_csr(["www.example.test"])[0])
    store.set_csr("www.example.test", csr.pem, csr.md5_modulus)
    store.set_enable("www.example.test", True)
    row = store.get("www.example.test")
    assert row is not None and row.enable and row.md5_modulus == csr.md5_modulus
    store.remove("www.example.test")
    assert store.get("www.example.test") is None
    assert store.events("www.example.test")[0].kind == "removed"


def test_renew_lock_is_exclusive(url: str, store: SqlStore) -> None:
    other = SqlStore(url)
    try:
        with store.renew_lock(0) as got:
            assert got
            with other.renew_lock(0) as second:
                assert not second
        with other.renew_lock(0) as again:
            assert again
    finally:
        other.close()


def test_init_is_idempotent(url: str) -> None:
    s = SqlStore(url)
    assert s.init_schema() == ["certs", "lecentral_events"]
    assert s.init_schema() == []
    s.close()


def test_seed_database_is_used_as_it_is(mariadb_url: str) -> None:
    """A MariaDB table made by the seed's DDL and filled the way populate.pl and download_cert.pl
    did: lecentral adds only its own table, reads the rows, and leaves what install_cert.pl reads
    in the same form."""
    engine = create_engine(mariadb_url)
    csr_pem, _ = make_csr(["ldap.example.test"])
    csr = Csr.load(csr_pem)
    with engine.begin() as conn:
        conn.exec_driver_sql(SEED_DDL)
        conn.execute(text(  # populate.pl: enable N, ts 1, other fields NULL
            "INSERT INTO certs (name, enable, csr, md5_modulus, ts_expire, ts_last_update) "
            "VALUES ('ldap.example.test', 'N', :csr, :m, 1, 1)"), {"csr": csr_pem,
                                                                 "m": csr.md5_modulus})
        before = conn.execute(text("SHOW CREATE TABLE certs")).one()[1]
    store = SqlStore(mariadb_url)
    assert store.init_schema() == ["lecentral_events"]
    with engine.begin() as conn:
        assert conn.execute(text("SHOW CREATE TABLE certs")).one()[1] == before
    row = store.get("ldap.example.test")
    assert row is not None and not row.problems
    assert row.enable is False and row.count_fail_update is None and row.certbot is False
    assert store.record_failure("ldap.example.test", "x", 5) == 1
    crt, _ = make_self_signed(["ldap.example.test"])
    store.save_issued("ldap.example.test", crt, crt, 1999999999, 6)
    with engine.begin() as conn:  # what the Perl agent selects
        got = conn.execute(text("SELECT enable, crt, ca, md5_ca, ts_expire FROM certs "
                                "WHERE name='ldap.example.test'")).one()
    assert got == ("N", crt, crt, hashlib.md5(crt).hexdigest(), 1999999999)
    store.close()
    engine.dispose()


def test_seed_ddl_per_backend(url: str) -> None:
    """Each backend's certs table has exactly the seed's columns."""
    s = SqlStore(url)
    s.init_schema()
    columns = [c["name"] for c in inspect(s.engine).get_columns("certs")]
    assert columns == ["name", "enable", "comment", "certbot", "csr", "ca", "crt", "md5_modulus",
                       "md5_ca", "ts_expire", "ts_last_update", "count_fail_update", "old_ca",
                       "old_crt", "webroot_path"]
    assert certs_ddl(s.dialect)
    s.close()


@pytest.mark.parametrize("scheme", ["mysql+pymysql", "postgresql+psycopg"])
def test_database_down_is_a_clear_error_without_the_password(scheme: str) -> None:
    from lecentral.testing.ports import free_port

    port = free_port()  # nothing listens there: the server is down
    s = SqlStore(f"{scheme}://lecentral:hunter2@127.0.0.1:{port}/certs")
    with pytest.raises(StoreError) as info:
        s.list()
    message = str(info.value)
    assert f"127.0.0.1:{port}" in message and "listing certificates failed" in message
    assert "hunter2" not in message and "lecentral:********@" in message


def test_wrong_password_is_a_clear_error(mariadb_server: Any) -> None:
    bad = mariadb_server.url.replace(f":{mariadb_server.password}@", ":wrong-password@")
    with pytest.raises(StoreError, match="Access denied") as info:
        SqlStore(bad).list()
    assert "wrong-password" not in str(info.value)


def test_sqlite_file_is_never_created_by_reading(tmp_path: Path) -> None:
    """A typo in an SQLite URL is an error naming the file, not a new empty database; only
    init_schema (lecentral init) creates the file, 0600."""
    typo = tmp_path / "lecentral.dbb"
    s = SqlStore(f"sqlite:///{typo}")
    for read in (lambda: s.get("www.example.test"), s.list, s.check_schema):
        with pytest.raises(StoreError, match=f"database file {typo} does not exist"):
            read()
    assert not typo.exists()
    s.init_schema()
    assert typo.stat().st_mode & 0o777 == 0o600
    assert s.list() == []
    s.close()


@pytest.mark.parametrize("scheme", ["mysql+pymysql", "postgresql+psycopg"])
def test_raw_at_sign_in_the_password_is_refused_without_leaking(scheme: str) -> None:
    """A URL parser ends the password at its first '@': the rest would become the host name and
    be printed by the driver ("failed to resolve host 'et'"). Refused before any connection,
    with how to percent-encode it; no fragment of the password is shown."""
    from lecentral.testing.ports import free_port

    url = f"{scheme}://lecentral:s3cr#et/p@ssw0rd@127.0.0.1:{free_port()}/certs"
    with pytest.raises(StoreError) as info:
        SqlStore(url).list()
    message = str(info.value)
    assert "Percent-encode it in the URL: @ as %40, / as %2F, # as %23" in message
    for fragment in ("s3cr", "et/p", "ssw0rd"):
        assert fragment not in message, message
