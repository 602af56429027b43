"""lecentral's own tables through Alembic migrations, on real SQLite, MariaDB and PostgreSQL:
a new database goes to head; one made by the previous lecentral (its three tables, no version
table) is adopted with its rows; ``certs`` is never changed; upgrading twice does nothing;
``check_schema`` says which command to run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Engine, MetaData, create_engine, insert, inspect, text

from lecentral.cli.central import main
from lecentral.errors import StoreError
from lecentral.store import migrations
from lecentral.store.schema import (
    OWN_TABLES,
    certs_ddl,
    events,
    leftovers,
    metadata,
    renew_lock,
)
from lecentral.store.sql import SqlStore

SEED_DDL = (Path(__file__).parents[1] / "sql" / "mysql" / "certs.sql").read_text()
OLD_TABLES = ["lecentral_events", "lecentral_renew_lock", "lecentral_leftovers"]
FLEET = ["lecentral_agents", "lecentral_deployments", "lecentral_runs", "lecentral_endpoints",
         "lecentral_probes", "lecentral_fleet_states"]
SETTINGS = ["lecentral_cert_settings", "lecentral_cert_facts", "lecentral_ari_windows"]
HEAD = "0008_deployments_key"


@pytest.fixture(params=["sqlite", "mariadb", "postgres"])
def url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on each backend."""
    return str(request.getfixturevalue(f"{request.param}_url"))


def engine_for(url: str) -> Engine:
    return create_engine(url)


def certs_definition(engine: Engine) -> Any:
    """How the server itself describes ``certs`` (MariaDB: SHOW CREATE TABLE)."""
    with engine.begin() as conn:
        if engine.dialect.name in ("mysql", "mariadb"):
            return conn.execute(text("SHOW CREATE TABLE certs")).one()[1]
        if engine.dialect.name == "sqlite":
            return conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'certs'")).one()[0]
        return (conn.execute(text(
                    "SELECT column_name, data_type, character_maximum_length, is_nullable, "
                    "column_default FROM information_schema.columns WHERE table_name = 'certs' "
                    "ORDER BY ordinal_position")).all(),
                conn.execute(text("SELECT indexdef FROM pg_indexes WHERE tablename = 'certs'")).all())


def make_certs(engine: Engine) -> None:
    """certs as the seed (MariaDB) or lecentral's DDL made it, with a row."""
    ddl = SEED_DDL if engine.dialect.name in ("mysql", "mariadb") else certs_ddl(engine.dialect.name)
    with engine.begin() as conn:
        conn.exec_driver_sql(ddl)
        conn.execute(text("INSERT INTO certs (name, enable, csr, md5_modulus, ts_expire, "
                          "ts_last_update) VALUES ('www.example.test', 'Y', :csr, 'ab', 1, 1)"),
                     {"csr": b"-----BEGIN CERTIFICATE REQUEST-----"})


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.begin() as conn:
        return {t: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY 1"))]
                for t in ["certs", *OLD_TABLES]}


def test_a_new_database_goes_to_head(url: str) -> None:
    store = SqlStore(url)
    assert store.init_schema() == ["certs", *OLD_TABLES, *FLEET, *SETTINGS]
    assert store.schema_revision() == HEAD == migrations.head()
    engine = engine_for(url)
    names = table_names(engine)
    assert migrations.VERSION_TABLE in names and "alembic_version" not in names
    store.check_schema()
    before = certs_definition(engine)
    assert store.init_schema() == []
    assert store.upgrade_schema() == (HEAD, HEAD)  # twice: nothing to do
    assert certs_definition(engine) == before
    assert table_names(engine) == names
    engine.dispose()
    store.close()


def test_head_is_what_schema_py_describes(url: str) -> None:
    """The migrations make exactly the tables lecentral.store.schema queries (columns, types,
    nullability, indexes, unique constraints): a revision and schema.py cannot drift apart."""
    store = SqlStore(url)
    store.init_schema()
    own = {t.name for t in OWN_TABLES}

    def ours(obj: Any, name: str | None, type_: str, *_: Any) -> bool:
        if name == "uq_lecentral_deployments_id":  # MariaDB: id's own key (below)
            return False
        table = obj if type_ == "table" else getattr(obj, "table", None)
        return (name if type_ == "table" else getattr(table, "name", None)) in own

    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": ours,
                                                         "compare_type": True})
        assert compare_metadata(context, metadata) == []
        # (Alembic does not compare primary keys.) On MariaDB/MySQL the deployments are kept in
        # the order of their (name, host, entry) key (0008), id unique through a key of its own
        pk = inspect(conn).get_pk_constraint("lecentral_deployments")["constrained_columns"]
        if conn.dialect.name in ("mysql", "mariadb"):
            assert pk == ["name", "host", "entry"]
            [id_key] = [i for i in inspect(conn).get_indexes("lecentral_deployments")
                        if i["name"] == "uq_lecentral_deployments_id"]
            assert id_key["column_names"] == ["id"] and id_key["unique"]
        else:
            assert pk == ["id"]
    store.close()


def previous_version(url: str) -> Engine:
    """A database made by the lecentral before migrations: certs, its three own tables (as its
    init made them: create_all of these definitions) with rows, no version table; and an
    ``alembic_version`` of the user's own, which must stay theirs."""
    engine = engine_for(url)
    make_certs(engine)
    for table in (events, renew_lock, leftovers):  # with the charset that init gave them
        made = table.to_metadata(MetaData())
        made.dialect_kwargs["mysql_charset"] = "utf8mb4"
        made.create(engine)
    with engine.begin() as conn:
        conn.execute(insert(events).values(ts=5, name="www.example.test", kind="issued",
                                           host="central", message="issued"))
        conn.execute(insert(renew_lock).values(scope="renew", host="central", pid=1, since=5))
        conn.execute(insert(leftovers).values(ts=5, name="www.example.test", kind="dns-txt",
                                              host="central", target="t", data="{}", error="e",
                                              attempts=1, ts_last_try=5))
        conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('their_own')")
    return engine


def test_a_database_of_the_previous_version_is_adopted(url: str) -> None:
    engine = previous_version(url)
    before, definition = rows(engine), certs_definition(engine)
    store = SqlStore(url)
    unseen = r"( \(or this account may not see it: [^)]*\))?"  # said on a server, not SQLite
    with pytest.raises(StoreError, match=f"has no table {', '.join(FLEET + SETTINGS)}{unseen}; run lecentral init"):
        store.check_schema()
    assert store.init_schema() == [*FLEET, *SETTINGS]
    store.check_schema()
    assert store.schema_revision() == HEAD
    assert rows(engine) == before
    assert certs_definition(engine) == definition
    with engine.begin() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [("their_own",)]
    # the event log keeps working, after the rows it had
    store.record_event("www.example.test", "added", "after the upgrade", 6)
    assert [e.message for e in store.events("www.example.test")] == ["after the upgrade", "issued"]
    engine.dispose()
    store.close()


def cli(tmp_path: Path, url: str, *args: str) -> Any:
    config = tmp_path / "lecentral.toml"
    config.write_text(f'[database]\nurl = "{url}"\n')
    return CliRunner().invoke(main, ["--config", str(config), *args])


def test_upgrade_runs_the_pending_revisions(url: str, tmp_path: Path) -> None:
    """A database at revision 1 (made by a lecentral before the fleet tables): every command
    says to run lecentral upgrade, which runs revisions 2 to 4 once; certs untouched."""
    engine = engine_for(url)
    make_certs(engine)
    with engine.begin() as conn:
        assert migrations.upgrade(conn, "0001_baseline") == (None, "0001_baseline")
    definition = certs_definition(engine)
    listed = cli(tmp_path, url, "list")
    assert listed.exit_code == 4
    assert (f"lecentral's tables are at revision 0001_baseline, this lecentral needs {HEAD}; "
            "run lecentral upgrade") in listed.stderr
    first = cli(tmp_path, url, "upgrade")
    assert first.exit_code == 0, first.output
    assert f"lecentral's tables upgraded from revision 0001_baseline to {HEAD}" in first.stdout
    again = cli(tmp_path, url, "upgrade", "--json")
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == {"from": HEAD, "to": HEAD, "head": HEAD, "changed": False}
    assert cli(tmp_path, url, "list").exit_code == 0
    assert certs_definition(engine) == definition
    assert "password" not in first.output + again.output and "********" not in again.output
    engine.dispose()


def test_revision_3_adds_the_settings_table_keeping_every_row(url: str, tmp_path: Path) -> None:
    """A database at 0002_fleet with rows (certs, events): lecentral upgrade adds
    lecentral_cert_settings and nothing else; the rows and certs' definition stay as they were;
    a profile set afterwards lives in the new table, never in certs."""
    engine = engine_for(url)
    make_certs(engine)
    with engine.begin() as conn:
        assert migrations.upgrade(conn, "0002_fleet") == (None, "0002_fleet")
        conn.execute(insert(events).values(ts=5, name="www.example.test", kind="issued",
                                           host="central", message="issued"))
    before, definition, names = rows(engine), certs_definition(engine), table_names(engine)
    result = cli(tmp_path, url, "upgrade", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"from": "0002_fleet", "to": HEAD, "head": HEAD,
                                         "changed": True}
    assert table_names(engine) == names | set(SETTINGS)
    assert rows(engine) == before and certs_definition(engine) == definition
    store = SqlStore(url)
    store.check_schema()
    store.set_profile("WWW.example.test", "shortlived", 7)
    assert store.profiles() == {"www.example.test": "shortlived"}
    assert rows(engine)["certs"] == before["certs"]
    store.remove("www.example.test")  # a name added again later starts without the setting
    assert store.profiles() == {}
    store.close()
    engine.dispose()


def test_revision_4_adds_the_issuing_ca_keeping_every_setting(url: str, tmp_path: Path) -> None:
    """A database at 0003_cert_settings with a profile set: lecentral upgrade adds the two
    issuing-CA columns and nothing else; the profile stays; a renewal's save records the CA
    (and names it in the issued event) without losing the profile, and setting the profile
    afterwards keeps the CA."""
    from lecentral_testing.pki import make_csr, make_self_signed

    from lecentral.certificates import Certificate, Csr

    engine = engine_for(url)
    make_certs(engine)
    with engine.begin() as conn:
        assert migrations.upgrade(conn, "0003_cert_settings") == (None, "0003_cert_settings")
        conn.execute(text("INSERT INTO lecentral_cert_settings (name, profile, ts_changed) "
                          "VALUES ('www.example.test', 'classic', 3)"))
    before, definition, names = rows(engine), certs_definition(engine), table_names(engine)
    result = cli(tmp_path, url, "upgrade", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"from": "0003_cert_settings", "to": HEAD, "head": HEAD,
                                         "changed": True}
    assert table_names(engine) == names | {"lecentral_cert_facts", "lecentral_ari_windows"}
    assert rows(engine) == before and certs_definition(engine) == definition
    columns = {c["name"] for c in inspect(engine).get_columns("lecentral_cert_settings")}
    assert columns == {"name", "profile", "ts_changed", "issuer_ca", "issuer_ca_directory"}
    store = SqlStore(url)
    store.check_schema()
    assert store.profiles() == {"www.example.test": "classic"}
    assert store.issuing_cas() == {}
    csr_pem, key = make_csr(["www.example.test"])
    crt, _ = make_self_signed(["www.example.test"], key)
    store.set_csr("www.example.test", csr_pem, Csr.load(csr_pem).md5_modulus, 4)
    store.save_issued("www.example.test", crt, crt, Certificate.load(crt).not_after, 9,
                      issuer_ca=("backup", "https://ca.example.test/dir"))
    assert store.issuing_cas() == {"www.example.test": ("backup", "https://ca.example.test/dir")}
    assert store.profiles() == {"www.example.test": "classic"}
    assert store.events("www.example.test")[0].message.startswith(
        "issued by CA backup (https://ca.example.test/dir), expires at ")
    store.set_profile("www.example.test", "shortlived", 10)
    assert store.issuing_cas() == {"www.example.test": ("backup", "https://ca.example.test/dir")}
    store.close()
    engine.dispose()


def test_revision_5_adds_the_facts_cache_and_the_next_sweep_fills_it(url: str,
                                                                     tmp_path: Path) -> None:
    """A database at 0004_issuer_ca: lecentral upgrade adds lecentral_cert_facts (empty) and
    nothing else; certs, its rows and its definition stay as they were; the next renew sweep
    reads every row and records its facts."""
    from lecentral_testing.pki import make_csr

    from lecentral.certificates import Csr
    from lecentral.config import RenewConfig

    engine = engine_for(url)
    make_certs(engine)
    csr, _ = make_csr(["www.example.test"])
    with engine.begin() as conn:
        assert migrations.upgrade(conn, "0004_issuer_ca") == (None, "0004_issuer_ca")
        conn.execute(text("UPDATE certs SET csr = :csr, md5_modulus = :md5"),
                     {"csr": csr, "md5": Csr.load(csr).md5_modulus})
    before, definition, names = rows(engine), certs_definition(engine), table_names(engine)
    result = cli(tmp_path, url, "upgrade", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"from": "0004_issuer_ca", "to": HEAD, "head": HEAD,
                                         "changed": True}
    assert table_names(engine) == names | {"lecentral_cert_facts", "lecentral_ari_windows"}
    assert rows(engine) == before and certs_definition(engine) == definition
    store = SqlStore(url)
    store.check_schema()
    swept = store.sweep(RenewConfig(), 100)
    assert [s.stored_name for s in swept.rows] == ["www.example.test"] and swept.unchanged == 0
    store.record_facts(swept.rows)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT name, state FROM lecentral_cert_facts")).all() == [
            ("www.example.test", "none")]
    assert rows(engine)["certs"] == before["certs"]
    store.close()
    engine.dispose()


def test_revision_7_adds_the_ari_window_cache(url: str, tmp_path: Path) -> None:
    """A database at 0006_cert_facts (with facts recorded): lecentral upgrade adds
    lecentral_ari_windows (empty) and nothing else; the other tables' rows and certs'
    definition stay as they were; the store then keeps and reads back a window, and remove
    removes it."""
    from lecentral_testing.pki import make_csr

    from lecentral.certificates import Csr
    from lecentral.config import RenewConfig
    from lecentral.store.rows import AriWindowRow

    engine = engine_for(url)
    make_certs(engine)
    csr, _ = make_csr(["www.example.test"])
    with engine.begin() as conn:
        assert migrations.upgrade(conn, "0006_cert_facts") == (None, "0006_cert_facts")
        conn.execute(text("UPDATE certs SET csr = :csr, md5_modulus = :md5"),
                     {"csr": csr, "md5": Csr.load(csr).md5_modulus})
    store = SqlStore(url)
    store.record_facts(store.sweep(RenewConfig(), 100).rows)
    store.close()
    before, definition, names = rows(engine), certs_definition(engine), table_names(engine)
    result = cli(tmp_path, url, "upgrade", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"from": "0006_cert_facts", "to": HEAD, "head": HEAD,
                                         "changed": True}
    assert table_names(engine) == names | {"lecentral_ari_windows"}
    assert rows(engine) == before and certs_definition(engine) == definition
    store = SqlStore(url)
    store.check_schema()
    window = AriWindowRow(name="www.example.test", ari_cert_id="a.b", fingerprint="f" * 64,
                          window_start=10, window_end=20, due_at=15, explanation=None,
                          ts_fetched=5, ts_retry=6)
    store.save_ari_windows([window])
    store.save_ari_windows([window])  # replaced, not a duplicate key
    assert store.ari_windows(["www.example.test", "other.example.test"]) == {
        "www.example.test": window}
    store.remove("www.example.test")
    assert store.ari_windows(["www.example.test"]) == {}
    store.close()
    engine.dispose()


def test_a_database_of_a_newer_lecentral_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    store = SqlStore(sqlite_url)
    store.init_schema()
    with store.engine.begin() as conn:
        conn.execute(text(f"UPDATE {migrations.VERSION_TABLE} SET version_num = '0099_future'"))
    expected = f"at revision 0099_future, which this lecentral does not know (its newest is {HEAD})"
    with pytest.raises(StoreError, match=rf"\(its newest is {HEAD}\): a newer lecentral"):
        store.check_schema()
    result = cli(tmp_path, sqlite_url, "upgrade")
    assert result.exit_code == 4 and expected in result.stderr
    assert f"lecentral: error: database {sqlite_url}: its lecentral tables" in result.stderr
    assert "upgrade lecentral on this host" in result.stderr
    assert store.schema_revision() == "0099_future"
    store.close()


def test_check_schema_says_what_to_run(sqlite_url: str, tmp_path: Path) -> None:
    result = cli(tmp_path, sqlite_url, "list")
    assert result.exit_code == 4 and "does not exist; run lecentral init" in result.stderr
    store = SqlStore(sqlite_url)
    store.init_schema()
    with store.engine.begin() as conn:  # lecentral's tables, no version: made by hand, or a beta
        conn.execute(text(f"DROP TABLE {migrations.VERSION_TABLE}"))
    with pytest.raises(StoreError, match="record no schema revision .*; run lecentral upgrade"):
        store.check_schema()
    assert store.upgrade_schema() == (None, HEAD)
    store.check_schema()
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE lecentral_runs"))
    with pytest.raises(StoreError, match="has no table lecentral_runs although its schema is at "
                                         f"revision {HEAD}: it was dropped by hand"):
        store.check_schema()
    store.close()


def test_upgrade_without_certs_says_init(sqlite_url: str, tmp_path: Path) -> None:
    engine = engine_for(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE other (x INTEGER)")
    result = cli(tmp_path, sqlite_url, "upgrade")
    assert result.exit_code == 4 and "has no table certs; run lecentral init" in result.stderr
    assert table_names(engine) == {"other"}
    engine.dispose()


def test_mariadb_failed_upgrade_is_finished_by_the_next(mariadb_server: Any, mariadb_url: str) -> None:
    """MariaDB commits each DDL statement: a central account without the TRIGGER right gets a
    clear error half-way, and once granted the next init finishes the revision (re-runnable)."""
    from sqlalchemy.engine import make_url

    database = make_url(mariadb_url).database
    mariadb_server.execute(f"CREATE USER 'notrig'@'%' IDENTIFIED BY 'pw-notrig'; GRANT SELECT, "
                           f"INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, DROP ON `{database}`.* "
                           "TO 'notrig'@'%'")
    try:
        url = make_url(mariadb_url).set(username="notrig", password="pw-notrig")
        store = SqlStore(url.render_as_string(hide_password=False))
        with pytest.raises(StoreError) as caught:
            store.init_schema()
        assert "TRIGGER command denied" in str(caught.value)
        assert "pw-notrig" not in str(caught.value)
        assert "contrib/sql/" in str(caught.value)
        assert store.schema_revision() == "0001_baseline"
        mariadb_server.execute(f"GRANT TRIGGER ON `{database}`.* TO 'notrig'@'%'")
        store.engine.dispose()  # a database-level grant counts from the next connection
        # every fleet table was there already (the triggers were not); revision 3 follows
        assert store.init_schema() == SETTINGS
        assert store.schema_revision() == HEAD
        with store.engine.begin() as conn:
            triggers = conn.execute(text("SELECT trigger_name FROM information_schema.triggers "
                                         "WHERE trigger_schema = :db ORDER BY 1"), {"db": database})
            assert [t for (t,) in triggers] == ["lecentral_deployments_ins", "lecentral_deployments_upd",
                                                "lecentral_events_ins", "lecentral_runs_ins"]
        store.close()
    finally:
        mariadb_server.execute("DROP USER 'notrig'@'%'")


def test_postgresql_failed_init_leaves_nothing(postgres_server: Any, postgres_url: str) -> None:
    """PostgreSQL's DDL is transactional: an init that fails half-way (here: the trigger
    functions' CREATE is refused) leaves no table behind, certs included."""
    from sqlalchemy.engine import make_url

    database = make_url(postgres_url).database
    postgres_server.execute("CREATE ROLE nofunc LOGIN PASSWORD 'pw-nofunc'; GRANT USAGE, CREATE ON "
                            "SCHEMA public TO nofunc; REVOKE USAGE ON LANGUAGE plpgsql FROM PUBLIC",
                            database=database)
    try:
        url = make_url(postgres_url).set(username="nofunc", password="pw-nofunc")
        store = SqlStore(url.render_as_string(hide_password=False))
        with pytest.raises(StoreError) as caught:
            store.init_schema()
        assert "permission denied for language plpgsql" in str(caught.value)
        assert "pw-nofunc" not in str(caught.value)
        with store.engine.begin() as conn:
            assert inspect(conn).get_table_names() == []
        store.close()
    finally:
        postgres_server.execute("GRANT USAGE ON LANGUAGE plpgsql TO PUBLIC; DROP OWNED BY nofunc; "
                                "DROP ROLE nofunc", database=database)


def test_the_revisions_never_name_certs_nor_import_the_live_schema() -> None:
    for path in sorted((Path(migrations.__file__).parent / "versions").glob("0*.py")):
        source = path.read_text()
        assert "lecentral.store.schema" not in source and "from lecentral" not in source, path
        assert '"certs"' not in source and " certs " not in source, path


def test_the_agents_never_migrate() -> None:
    """lecentral-install (lecentral/install, its CLI) never creates or migrates a table: its
    least-privileged account could not, and a half-upgraded database must not come from a server."""
    root = Path(__file__).parents[1] / "lecentral"
    sources = [*sorted((root / "install").rglob("*.py")), root / "cli" / "agent.py",
               root / "cli" / "agent_commands.py"]
    for path in sources:
        source = path.read_text()
        for word in ("init_schema", "upgrade_schema", "migrations", "create_all"):
            assert word not in source, f"{path}: {word}"


def test_head_constant_is_alembics_head() -> None:
    """``migrations.HEAD`` (what every command compares with, without importing Alembic) is the
    newest revision of versions/: a new revision must move it."""
    assert migrations.scripts().get_current_head() == migrations.HEAD


def test_revision_8_keeps_mariadb_deployments_in_key_order(mariadb_url: str,
                                                           tmp_path: Path) -> None:
    """A MariaDB database at 0007 with deployments: lecentral upgrade makes (name, host, entry)
    the PRIMARY KEY of lecentral_deployments (the rows kept, ids too, AUTO_INCREMENT going on
    from them), a second upgrade does nothing, and an agent's report still upserts; the
    certificate's deployments are then read through the primary key."""
    from lecentral.fleet.store import Deployment, FleetStore, Run

    engine = engine_for(mariadb_url)
    make_certs(engine)
    with engine.begin() as conn:
        assert migrations.upgrade(conn, "0007_ari_windows") == (None, "0007_ari_windows")
    store = SqlStore(mariadb_url)
    fleet = FleetStore(store)

    def report(host: str, entry: str, fp: str) -> None:
        item = Deployment(name="www.example.test", entry=entry, service="files",
                          installed_fp=fp, installed_not_after=10, served_fp=None,
                          served_not_after=None, served_names=None, served_key_md5=None,
                          served_url=None, served_error=None, ts_served=None, verify_urls=[],
                          paths=[], result="installed", message="")
        fleet.report(host, [item], Run("agent", host, 1, 2, 0, {}), "test", 3)

    def listed() -> list[tuple[Any, ...]]:
        with engine.begin() as conn:
            return [tuple(r) for r in conn.execute(text(
                "SELECT id, host, entry, installed_fp FROM lecentral_deployments ORDER BY id"))]

    report("web2", "b", "1" * 64)
    report("web1", "a", "2" * 64)
    before = listed()
    result = cli(tmp_path, mariadb_url, "upgrade", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["to"] == HEAD
    again = cli(tmp_path, mariadb_url, "upgrade", "--json")
    assert json.loads(again.stdout)["changed"] is False
    assert listed() == before
    with engine.begin() as conn:
        pk = inspect(conn).get_pk_constraint("lecentral_deployments")["constrained_columns"]
        assert pk == ["name", "host", "entry"]
        plan = conn.execute(text("EXPLAIN SELECT installed_fp FROM lecentral_deployments "
                                 "WHERE name = 'www.example.test'")).mappings().all()
        assert [p["key"] for p in plan] == ["PRIMARY"], plan
    report("web1", "a", "3" * 64)  # an upsert of a row there
    report("web3", "c", "4" * 64)  # a new row: a new id after the others
    found = listed()
    assert [(h, fp[0]) for _, h, _, fp in found] == [("web2", "1"), ("web1", "3"), ("web3", "4")]
    assert found[2][0] > max(r[0] for r in before)
    store.close()
    engine.dispose()
