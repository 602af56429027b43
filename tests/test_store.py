"""The store on SQLite, MariaDB (with the seed's own DDL) and PostgreSQL, against real servers."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from lecentral_testing.pki import make_csr, make_self_signed
from sqlalchemy import create_engine, insert, inspect, text

from lecentral.certificates import Csr, md5_ca
from lecentral.errors import StoreError
from lecentral.interfaces import IssuedSave
from lecentral.store.rows import CertRow
from lecentral.store.schema import certs, certs_ddl
from lecentral.store.sql import SqlStore

BACKENDS = ["sqlite", "mariadb", "postgres"]
SEED_DDL = (Path(__file__).parents[1] / "sql" / "mysql" / "certs.sql").read_text()
#: lecentral's own tables, as init creates them (tests/test_migrations.py: through migrations)
OWN = ["lecentral_events", "lecentral_renew_lock", "lecentral_leftovers", "lecentral_agents",
       "lecentral_deployments", "lecentral_runs", "lecentral_endpoints", "lecentral_probes",
       "lecentral_fleet_states", "lecentral_cert_settings", "lecentral_cert_facts",
       "lecentral_ari_windows"]


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


def shell(command: str, data: bytes) -> str:
    """What a shell pipeline of the seed's tooling prints for ``data``."""
    return subprocess.run(["sh", "-c", command], input=data, check=True,
                          capture_output=True).stdout.decode().strip()


def leaf(name: str = "www.example.test") -> bytes:
    """A certificate for ``name`` with the key of its row's CSR (what the CA would return)."""
    return make_self_signed([name], KEYS[name])[0]


def openssl_md5(data: bytes) -> str:
    """md5_ca as the seed computed it, ``openssl md5`` of the CA file, without the ``(stdin)= ``."""
    return shell("openssl md5", data).split("=")[-1].strip()


#: the private key behind each name's CSR in these tests, so that certificates can match it
KEYS: dict[str, Any] = {}


def new_row(name: str = "www.example.test", **kw: Any) -> CertRow:
    pem, KEYS[name] = make_csr([name])
    csr = Csr.load(pem)
    values: dict[str, Any] = {"ts_expire": 1, "ts_last_update": 1, "count_fail_update": 0, **kw}
    return CertRow(name=name, csr=csr.pem, md5_modulus=csr.md5_modulus, **values)


def test_the_mysql_ddl_is_the_seeds_verbatim() -> None:
    """tests/data/seed-certs-ddl.txt quotes the CREATE TABLE of the seed's write-up as printed there;
    sql/mysql/certs.sql must be exactly that, and each sql/ file the DDL lecentral ships in its
    package (they are links to lecentral/store/ddl/)."""
    quoted = (Path(__file__).parent / "data" / "seed-certs-ddl.txt").read_text()
    assert SEED_DDL.strip() == quoted.strip()
    for dialect in ("mysql", "postgresql", "sqlite"):
        assert (Path(__file__).parents[1] / "sql" / dialect / "certs.sql").read_text() == \
            certs_ddl(dialect)


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
    crt1 = leaf()
    ca1, _ = make_self_signed(["CA one"])
    store.save_issued("www.example.test", crt1, ca1, 1000, 500)
    crt2 = leaf()
    ca2, _ = make_self_signed(["CA two"])
    store.record_failure("www.example.test", "a failure in between", 600)
    store.save_issued("www.example.test", crt2, ca2, 2000, 700)
    row = store.get("www.example.test")
    assert row is not None
    assert (row.crt, row.ca, row.old_crt, row.old_ca) == (crt2, ca2, crt1, ca1)
    assert row.md5_ca == openssl_md5(ca2)
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
    crt = leaf()
    with pytest.raises(StoreError, match="saving the new certificate of www.example.test failed"):
        store.save_issued("www.example.test", crt, crt, 1000, 500)
    assert store.get("www.example.test") == before


def test_save_issued_many_commits_together_and_keeps_each_rows_problem(store: SqlStore,
                                                                       url: str) -> None:
    """Several certificates in one transaction (the renew workers' group commit): each saved as
    save_issued saves it; a row whose CSR was replaced, a name not in the table and two rows of
    one DNS name each get their own error, nothing written for them, and the others are saved."""
    names = ["a.example.test", "b.example.test", "c.example.test", "d.example.test"]
    for name in names:
        store.add(new_row(name))
    store.add(new_row("Twice.example.test"))
    engine = create_engine(url)
    with engine.begin() as conn:  # as populate.pl could: the same DNS name, another spelling
        conn.execute(insert(certs).values(**new_row("twice.example.test.").to_db()))
    engine.dispose()
    ca, _ = make_self_signed(["CA one"])
    crts = {name: leaf(name) for name in names}
    replaced = new_row("c.example.test")  # set-csr while the CA was issuing: another key
    store.set_csr("c.example.test", replaced.csr, replaced.md5_modulus, 400)
    before_c = store.get("c.example.test")
    twice, _ = make_self_signed(["twice.example.test"])
    saves = [IssuedSave(name, crts[name], ca, 1000 + i, 500, ("first", "https://ca.test/dir"))
             for i, name in enumerate(names)]
    saves.insert(1, IssuedSave("gone.example.test", crts["a.example.test"], ca, 1000, 500))
    saves.append(IssuedSave("twice.example.test", twice, ca, 1000, 500))
    results = store.save_issued_many(saves)
    assert [type(r).__name__ for r in results] == ["NoneType", "UnknownNameError", "NoneType",
                                                   "CsrError", "NoneType", "StoreError"]
    assert "all name twice.example.test" in str(results[-1])
    for i, name in enumerate(names):
        row = store.get(name)
        assert row is not None
        if name == "c.example.test":
            assert row == before_c
            continue
        assert (row.crt, row.ca, row.ts_expire, row.count_fail_update) == \
            (crts[name], ca, 1000 + i, 0)
        assert [e.kind for e in store.events(name)][:1] == ["issued"]
    assert store.issuing_cas()["b.example.test"] == ("first", "https://ca.test/dir")


def test_save_issued_many_after_a_database_error_saves_each_on_its_own(store: SqlStore,
                                                                        url: str) -> None:
    """A database error fails the shared transaction: each certificate is then tried on its
    own, and each one's error says which certificate it is (here the event log is gone, so
    every one fails, and none is half-saved)."""
    names = ["a.example.test", "b.example.test"]
    for name in names:
        store.add(new_row(name))
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE lecentral_events"))
    engine.dispose()
    saves = [IssuedSave(name, leaf(name), leaf(name), 1000, 500) for name in names]
    results = store.save_issued_many(saves)
    assert all(isinstance(r, StoreError) for r in results)
    assert "saving the new certificate of a.example.test failed" in str(results[0])
    assert "saving the new certificate of b.example.test failed" in str(results[1])
    assert all(store.get(name).crt is None for name in names)  # type: ignore[union-attr]


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
    assert s.init_schema() == ["certs", *OWN]
    assert s.init_schema() == []
    s.close()


def test_seed_database_is_used_as_it_is(mariadb_url: str) -> None:
    """A MariaDB table made by the seed's DDL and filled the way populate.pl and download_cert.pl
    did: lecentral adds only its own table, reads the rows, and leaves what install_cert.pl reads
    in the same form."""
    engine = create_engine(mariadb_url)
    csr_pem, key = make_csr(["ldap.example.test"])
    csr = Csr.load(csr_pem)
    with engine.begin() as conn:
        conn.exec_driver_sql(SEED_DDL)
        conn.execute(text(  # populate.pl: enable N, ts 1, other fields NULL
            "INSERT INTO certs (name, enable, csr, md5_modulus, ts_expire, ts_last_update) "
            "VALUES ('ldap.example.test', 'N', :csr, :m, 1, 1)"), {"csr": csr_pem,
                                                                 "m": csr.md5_modulus})
        before = conn.execute(text("SHOW CREATE TABLE certs")).one()[1]
    store = SqlStore(mariadb_url)
    assert store.init_schema() == OWN
    with engine.begin() as conn:
        assert conn.execute(text("SHOW CREATE TABLE certs")).one()[1] == before
    row = store.get("ldap.example.test")
    assert row is not None and not row.problems
    assert row.enable is False and row.count_fail_update is None and row.certbot is False
    assert store.record_failure("ldap.example.test", "x", 5) == 1
    crt, _ = make_self_signed(["ldap.example.test"], key)
    store.save_issued("ldap.example.test", crt, crt, 1999999999, 6)
    with engine.begin() as conn:  # what the Perl agent selects
        got = conn.execute(text("SELECT enable, crt, ca, md5_ca, ts_expire FROM certs "
                                "WHERE name='ldap.example.test'")).one()
    assert got == ("N", crt, crt, openssl_md5(crt), 1999999999)
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
    from lecentral_testing.ports import free_port

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


def test_old_ca_changes_only_with_the_ca(store: SqlStore) -> None:
    """The seed: old_ca is "the old CA certificate, once a new CA certificate has been issued";
    renewals under the same CA keep it (the bytes may differ by whitespace: still the same CA)."""
    name = "www.example.test"
    store.add(new_row())
    ca1, _ = make_self_signed(["CA one"])
    ca2, _ = make_self_signed(["CA two"])
    crts = [leaf(name) for _ in range(5)]
    olds = []
    for crt, ca in zip(crts, [ca1, ca1, ca1 + b"\n", ca2, ca2], strict=True):
        store.save_issued(name, crt, ca, 1000, 500)
        row = store.get(name)
        assert row is not None and row.crt == crt and row.ca == ca
        olds.append((row.old_crt, row.old_ca))
    assert olds == [(None, None), (crts[0], None), (crts[1], None), (crts[2], ca1 + b"\n"),
                    (crts[3], ca1 + b"\n")]


def test_md5_ca_as_the_seed_wrote_it_stays_while_the_ca_does(store: SqlStore, url: str) -> None:
    """A renewal under the same CA (the same bytes) keeps md5_ca exactly as written, openssl's
    "(stdin)= hex" included: install_cert.pl compares that string with the one it installed, and
    a rewritten format would look like a new CA to it. A new CA gets lecentral's plain hex."""
    name = "www.example.test"
    store.add(new_row())
    ca1, _ = make_self_signed(["CA one"])
    ca2, _ = make_self_signed(["CA two"])
    seed_form = f"(stdin)= {md5_ca(ca1)}"
    engine = create_engine(url)
    with engine.begin() as conn:  # as download_cert.pl left it
        conn.execute(text("UPDATE certs SET ca = :ca, md5_ca = :md5 WHERE name = :n"),
                     {"ca": ca1, "md5": seed_form, "n": name})
    engine.dispose()
    store.save_issued(name, leaf(name), ca1, 1000, 500)
    assert _md5_ca(url, name) == seed_form
    store.save_issued(name, leaf(name), ca2, 2000, 700)
    assert _md5_ca(url, name) == md5_ca(ca2)


def _md5_ca(url: str, name: str) -> Any:
    engine = create_engine(url)
    with engine.begin() as conn:
        got = conn.execute(text("SELECT md5_ca FROM certs WHERE name = :n"), {"n": name}).scalar()
    engine.dispose()
    return got


def _insert(url: str, **columns: Any) -> None:
    """A row written by the seed's Perl scripts (or by hand), past lecentral's own checks."""
    from lecentral.store.schema import certs

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(certs.insert().values(**{"enable": "Y", "certbot": "N", **columns}))
    engine.dispose()


def _raw(url: str, name: str) -> Any:
    engine = create_engine(url)
    with engine.begin() as conn:
        got = conn.execute(text("SELECT name, enable, crt FROM certs WHERE name = :n"),
                           {"n": name}).one()
    engine.dispose()
    return got


def test_seed_rows_with_capitals_shell_digests_and_null_enable(store: SqlStore, url: str,
                                                                tmp_path: Path) -> None:
    """What populate.pl and download_cert.pl left (on MariaDB: the seed's DDL, ascii_bin): a name
    as the admin typed it, digests as printed by openssl md5 / md5sum, enable NULL. Each is read
    as what it means; the name is matched as DNS matches names and never rewritten."""
    from lecentral_testing.pki import key_pem, make_key, write_private

    from lecentral.certificates import Certificate, now_ts
    from lecentral.install.config import CertEntry
    from lecentral.install.decide import precheck
    from lecentral.store.rows import certificate_problems

    name = "www.example.test"
    key = make_key()
    csr_pem, _ = make_csr([name], key)
    (tmp_path / "c.csr").write_bytes(csr_pem)
    crt, _ = make_self_signed([name], key)
    modulus = shell(f"openssl req -noout -modulus -in {tmp_path / 'c.csr'} | openssl md5 "
                    "| tr a-f A-F", b"")
    assert "(stdin)= " in modulus.lower() and modulus[-32:] == modulus[-32:].upper()
    _insert(url, name="WWW.Example.TEST", csr=csr_pem, md5_modulus=modulus, crt=crt, ca=crt,
            md5_ca=shell("md5sum", crt), ts_expire=Certificate.load(crt).not_after,
            ts_last_update=now_ts() - 86400, count_fail_update=0)
    _insert(url, name="Mail.Example.TEST", enable=None, csr=make_csr(["mail.example.test"])[0],
            md5_modulus=Csr.load(make_csr(["mail.example.test"])[0]).md5_modulus)
    for dup in ("Dup.example.test", "dup.example.test"):
        pem, _ = make_csr(["dup.example.test"])
        _insert(url, name=dup, csr=pem, md5_modulus=Csr.load(pem).md5_modulus)

    row = store.get(name)
    assert row is not None and row.name == name and row.problems == () and row.notes == ()
    assert row.md5_modulus == Csr.load(csr_pem).md5_modulus
    assert row.md5_ca == openssl_md5(crt)
    assert certificate_problems(row) == []
    key_file = write_private(tmp_path / "www.key", key_pem(key))
    precheck(CertEntry(name=name, key=str(key_file)), row, now_ts())  # the agent accepts it

    mail = store.get("mail.example.test")
    assert mail is not None and mail.enable is False and mail.problems == ()
    assert "column enable is NULL: not enabled" in mail.notes[0]

    listed = {r.name: r for r in store.list()}
    assert sorted(listed) == ["dup.example.test", "mail.example.test", name]
    same = "rows 'Dup.example.test', 'dup.example.test' all name dup.example.test"
    assert same in listed["dup.example.test"].problems[0] and not listed[name].problems
    either = store.get("DUP.example.test")
    assert either is not None and same in either.problems[-1]
    with pytest.raises(StoreError, match=same):
        store.set_enable("dup.example.test", True)

    store.set_enable(name, False)
    assert _raw(url, "WWW.Example.TEST")[:2] == ("WWW.Example.TEST", "N")
    new_crt, _ = make_self_signed([name], key)
    store.save_issued(name, new_crt, crt, 2000000000, now_ts())
    assert store.record_failure(name.upper(), "x", now_ts()) == 1
    assert _raw(url, "WWW.Example.TEST") == ("WWW.Example.TEST", "N", new_crt)
    with pytest.raises(StoreError, match="www.example.test is already in the database "
                       r"\(as 'WWW.Example.TEST'\)"):
        store.add(new_row(name))
    assert [e.kind for e in store.events(name)] == ["failed", "issued", "enable"]
    assert len(store.list()) == 4
    with pytest.raises(StoreError, match="lecentral remove 'Dup.example.test'"):
        store.remove("dup.EXAMPLE.test")
    store.remove("Dup.example.test")  # the exact stored name picks one of the two
    assert [r.name for r in store.list() if not r.problems] == ["dup.example.test",
                                                              "mail.example.test", name]


def test_get_many_is_get_of_each_in_one_read(store: SqlStore, url: str) -> None:
    """An agent's rows (``lecentral-install run`` with ``report``, ``status``): what ``get``
    gives for each name, a name stored with capitals or a final dot, two rows of one DNS name
    (refused as ``get`` refuses them), a name without a row, asked twice; in one transaction
    of two statements, not a scan of the table's names per name."""
    from sqlalchemy import event

    store.add(new_row("www.example.test"))
    for stored in ("WWW.Caps.example.test", "dot.example.test."):
        pem, _ = make_csr([stored.lower().rstrip(".")])
        _insert(url, name=stored, csr=pem, md5_modulus=Csr.load(pem).md5_modulus)
    for dup in ("Dup.example.test", "dup.example.test"):
        pem, _ = make_csr(["dup.example.test"])
        _insert(url, name=dup, csr=pem, md5_modulus=Csr.load(pem).md5_modulus)
    names = ["www.example.test", "www.caps.example.test", "DOT.example.test", "Dup.example.test",
             "DUP.example.test", "missing.example.test", "www.example.test"]
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *_: object) -> None:
        if "FROM certs" in statement:
            statements.append(statement)

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        many = store.get_many(names)
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
    assert many == {name: store.get(name) for name in names}
    assert list(many) == list(dict.fromkeys(names))
    assert len(statements) == 2, statements
    caps, dot, dup = many["www.caps.example.test"], many["DOT.example.test"], many["DUP.example.test"]
    assert caps is not None and caps.name == "www.caps.example.test" and not caps.problems
    assert dot is not None and dot.name == "dot.example.test" and not dot.problems
    assert dup is not None and "all name dup.example.test" in dup.problems[-1]
    assert many["Dup.example.test"] is not None and many["Dup.example.test"].stored_name == (
        "Dup.example.test")
    assert many["missing.example.test"] is None
    assert store.get_many([]) == {}


def test_long_event_messages_outside_ascii_are_clipped_not_refused(store: SqlStore) -> None:
    """An event's message is cut to 60,000 bytes of UTF-8 at a character's end (MariaDB's TEXT
    holds 65,535 bytes: 60,000 characters outside ASCII were refused, and with them every
    line logged together); short ones are kept whole."""
    store.add(new_row())
    long = "é" * 40000 + "証" * 10000
    store.record_event("www.example.test", "fleet", long, 1_800_000_000)
    store.record_events([("www.example.test", "fleet", "ü" * 70000, 1_800_000_001),
                         ("www.example.test", "fleet", "short é", 1_800_000_002)])
    got = {e.ts: e.message for e in store.events("www.example.test") if e.kind == "fleet"}
    assert got[1_800_000_000] == "é" * 30000
    assert got[1_800_000_001] == "ü" * 30000 and got[1_800_000_002] == "short é"


def test_existing_database_without_the_leftovers_table(store: SqlStore, url: str) -> None:
    """A database made before lecentral_leftovers existed (and before migrations: no version
    table): every command says to run init, and init adds the tables without touching certs."""
    store.add(new_row())
    before = store.get("www.example.test")
    engine = create_engine(url)
    with engine.begin() as conn:
        for table in ["lecentral_leftovers", *OWN[3:], "lecentral_alembic_version"]:
            conn.execute(text(f"DROP TABLE {table}"))
    engine.dispose()
    with pytest.raises(StoreError, match="has no table lecentral_leftovers, lecentral_agents, .*; "
                                         "run lecentral init"):
        store.check_schema()
    assert store.init_schema() == ["lecentral_leftovers", *OWN[3:]]
    store.check_schema()
    assert store.get("www.example.test") == before


def test_leftover_roundtrip(store: SqlStore) -> None:
    """Stored with a ``leftover`` event, counted, forgotten with a ``cleaned`` event."""
    from lecentral.leftovers import DNS_TXT, Leftover

    data = {"name": "a.example.test", "fqdn": "_acme-challenge.a.example.test.",
            "zone": "a.example.test", "server": "127.0.0.1:53", "key_name": "k", "value": "v"}
    stored = store.add_leftover(Leftover(DNS_TXT, "a.example.test", data["fqdn"], data,
                                         "refused"), 100)
    assert stored.id is not None and store.leftovers() == [stored]
    again = store.leftover_still_there(stored, "refused again", 200)
    assert store.leftovers() == [again] and again.attempts == 2 and again.ts_last_try == 200
    store.leftover_removed(again, 300)
    assert store.leftovers() == []
    assert [e.kind for e in store.events("a.example.test")] == ["cleaned", "leftover", "leftover"]


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
    from lecentral_testing.ports import free_port

    url = f"{scheme}://lecentral:s3cr#et/p@ssw0rd@127.0.0.1:{free_port()}/certs"
    with pytest.raises(StoreError) as info:
        SqlStore(url).list()
    message = str(info.value)
    assert "Percent-encode it in the URL: @ as %40, / as %2F, # as %23" in message
    for fragment in ("s3cr", "et/p", "ssw0rd"):
        assert fragment not in message, message
