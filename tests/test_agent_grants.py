"""A reporting agent's database account, made with exactly the shipped grants (contrib/sql/,
executed with the names replaced, so the files themselves are proven), against real MariaDB and
PostgreSQL servers: what a stolen agent credential can and cannot do.

The central account is made from the same files and runs ``lecentral init`` itself (so its grants
are proven sufficient for the migrations and the triggers). Two agents: ``web1`` and ``web2``,
each mapped to its own account by ``lecentral agent add``.
"""

from __future__ import annotations

import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from lecentral_testing.mariadb import MariaDBServer
from lecentral_testing.pki import make_csr
from lecentral_testing.postgres import PostgresServer
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError

from lecentral.certificates import Csr
from lecentral.cli.central import main
from lecentral.errors import StoreError
from lecentral.fleet.store import Deployment, FleetStore, Run
from lecentral.store.rows import CertRow
from lecentral.store.sql import SqlStore

CONTRIB = Path(__file__).parents[1] / "contrib" / "sql"
WEB1, WEB2 = "web1.example.test", "web2.example.test"
PASSWORD = re.compile("'CHANGE-ME[-A-Z]*'")


def substitute(sql: str, replacements: dict[str | re.Pattern[str], str]) -> str:
    """``sql`` with each example name (a string, or a compiled pattern) replaced; every name must
    be there (a renamed example must fail here, not silently leave a grant out)."""
    for old, new in replacements.items():
        pattern = old if isinstance(old, re.Pattern) else re.compile(re.escape(old))
        assert pattern.search(sql), f"{old!r} is no longer in the contrib file"
        sql = pattern.sub(lambda _m, new=new: new, sql)  # type: ignore[misc]
    return sql


def sections(sql: str) -> dict[str, str]:
    """The ``-- == title ==`` parts of a contrib file, comments and blank lines dropped."""
    found: dict[str, str] = {}
    title = ""
    for line in sql.splitlines():
        marker = re.match(r"-- == (.*) ==$", line)
        if marker:
            title = marker.group(1)
            found[title] = ""
        elif title and line.strip() and not line.startswith("--"):
            found[title] += line + "\n"
    return found


@dataclass
class Fleet:
    """The central store, and one store per agent account, on one database."""

    dialect: str
    central: SqlStore
    agents: dict[str, SqlStore]  # host -> the store of its agent account
    users: dict[str, str]  # host -> its agent account's user name
    stranger: SqlStore  # an account with the agent grants, mapped to no host
    central_user: str

    def engine(self, host: str) -> Engine:
        return self.agents[host].engine

    def close(self) -> None:
        for store in [self.central, self.stranger, *self.agents.values()]:
            store.close()


def url_as(url: str, user: str, password: str) -> str:
    return make_url(url).set(username=user, password=password).render_as_string(hide_password=False)


def _names(dialect: str) -> dict[str, str]:
    """Fresh account names (the accounts are server-wide, the servers shared by the session)."""
    tag = secrets.token_hex(3)
    return {"central": f"c_{tag}", WEB1: f"a1_{tag}", WEB2: f"a2_{tag}", "stranger": f"s_{tag}",
            "reader": f"r_{tag}"}


def mariadb_accounts(server: MariaDBServer, url: str, agents: Sequence[str],
                     init: Callable[[str], None]) -> tuple[str, dict[str, str], str]:
    """The accounts of contrib/sql/grants-mysql.sql, made from the file (names replaced): the
    central one, ``init(its URL)`` run as it, then a read-only one and one reporting account per
    key of ``agents``. Return the central URL, each agent's user name (and the read-only
    account's, under ``"reader"``), and the password."""
    database = make_url(url).database
    tag = secrets.token_hex(3)  # the accounts are server-wide, the servers shared by the session
    password = secrets.token_urlsafe(12)
    parts = sections(substitute((CONTRIB / "grants-mysql.sql").read_text(), {
        "`certs`.": f"`{database}`.", PASSWORD: f"'{password}'",
        "'lecentral'@'central.example.com'": f"'c_{tag}'@'%'",
        "'reader'@'%.example.com'": f"'r_{tag}'@'%'",
        "'agent_web1'@'web1.example.com'": "'agent_web1'@'%'"}))
    server.execute(parts["the central host (before lecentral init)"])
    central_url = url_as(url, f"c_{tag}", password)
    init(central_url)
    server.execute(parts["an agent that does not report (agent.report = false): read-only (after "
                         "lecentral init)"])
    agent_sql = parts["one account per reporting agent (after lecentral init; repeat for each server)"]
    users = {"reader": f"r_{tag}"}
    for i, key in enumerate(agents):
        users[key] = f"a{i}_{tag}"
        server.execute(substitute(agent_sql, {"'agent_web1'": f"'{users[key]}'"}))
    return central_url, users, password


def _mariadb_fleet(server: MariaDBServer, url: str) -> Fleet:
    central: list[SqlStore] = []

    def init(central_url: str) -> None:  # lecentral init, as the central account
        central.append(SqlStore(central_url))
        central[0].init_schema()

    central_url, users, password = mariadb_accounts(server, url, [WEB1, WEB2, "stranger"], init)
    users.pop("reader")
    agents = {key: SqlStore(url_as(url, user, password)) for key, user in users.items()}
    names = {**users, "central": str(make_url(central_url).username)}
    return _fleet("mariadb", central[0], agents, names)


def _postgres_fleet(server: PostgresServer, url: str) -> Fleet:
    database = str(make_url(url).database)
    names = _names("postgres")
    password = secrets.token_urlsafe(12)
    parts = sections(substitute((CONTRIB / "grants-postgresql.sql").read_text(), {
        "DATABASE certs": f'DATABASE "{database}"', PASSWORD: f"'{password}'",
        re.compile(r"\breader\b"): names["reader"]}))
    central = substitute(parts["the central host (before lecentral init)"],
                         {re.compile(r"\blecentral\b"): names["central"]})
    server.execute(central, database=database)
    central_store = SqlStore(url_as(url, names["central"], password))
    central_store.init_schema()
    server.execute(parts["an agent that does not report (agent.report = false): read-only (after "
                         "lecentral init)"], database=database)
    agent_sql = parts["one role per reporting agent (after lecentral init; repeat for each server)"]
    stores = {}
    for key in (WEB1, WEB2, "stranger"):
        server.execute(substitute(agent_sql, {"agent_web1": names[key]}), database=database)
        stores[key] = SqlStore(url_as(url, names[key], password))
    return _fleet("postgresql", central_store, stores, names)


def _fleet(dialect: str, central: SqlStore, stores: dict[str, SqlStore], names: dict[str, str]) -> Fleet:
    with tempfile.TemporaryDirectory() as tmp:  # the mapping, as the operator makes it
        config = Path(tmp) / "lecentral.toml"
        config.write_text(f'[database]\nurl = "{central.url}"\n')
        for host in (WEB1, WEB2):
            added = CliRunner().invoke(main, ["--config", str(config), "agent", "add", host,
                                              "--db-user", names[host]])
            assert added.exit_code == 0, added.output
    pem, _ = make_csr(["www.example.test"])
    central.add(CertRow(name="www.example.test", csr=pem, md5_modulus=Csr.load(pem).md5_modulus,
                        enable=True, ts_expire=1, ts_last_update=1, count_fail_update=0))
    stranger = stores.pop("stranger")
    return Fleet(dialect, central, stores, {h: names[h] for h in (WEB1, WEB2)}, stranger,
                 names["central"])


@pytest.fixture(params=["mariadb", "postgres"])
def fleet(request: pytest.FixtureRequest) -> Iterator[Fleet]:
    url = str(request.getfixturevalue(f"{request.param}_url"))
    server = request.getfixturevalue(f"{request.param}_server")
    made = _mariadb_fleet(server, url) if request.param == "mariadb" else _postgres_fleet(server, url)
    yield made
    made.close()


def deployment(name: str = "www.example.test", entry: str = "nginx-www", **kw: Any) -> Deployment:
    values: dict[str, Any] = {
        "name": name, "entry": entry, "service": "nginx", "installed_fp": "ab" * 32,
        "installed_not_after": 2000000000, "served_fp": "ab" * 32, "served_not_after": 2000000000,
        "served_names": [name], "served_key_md5": "cd" * 16, "served_url": "https://127.0.0.1:443",
        "served_error": None, "ts_served": 100, "verify_urls": ["https://127.0.0.1:443"],
        "paths": ["/etc/ssl/www.pem"], "result": "unchanged", "message": "ok", **kw}
    return Deployment(**values)


def agent_run(host: str, kind: str = "agent") -> Run:
    return Run(kind=kind, host=host, ts_start=90, ts_end=100, exit_code=0, counts={"unchanged": 1})


def refused(engine: Engine, sql: str, params: dict[str, Any] | None = None) -> str:
    """Run ``sql`` as that account; it must fail: return the server's message."""
    with pytest.raises(DBAPIError) as caught, engine.begin() as conn:
        conn.execute(text(sql), params or {})
    return str(caught.value.orig)


def dump(fleet: Fleet) -> dict[str, list[tuple[Any, ...]]]:
    """Everything an attack could have changed, read as the central account."""
    with fleet.central.engine.begin() as conn:
        return {table: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1"))]
                for table in ("certs", "lecentral_deployments", "lecentral_runs",
                              "lecentral_events", "lecentral_agents")}


def report(fleet: Fleet, host: str, as_host: str | None = None, **kw: Any) -> None:
    FleetStore(fleet.agents[as_host or host]).report(host, [deployment(**kw)], agent_run(host),
                                                     "0.1.0", 100)


INSERT_DEPLOYMENT = (
    "INSERT INTO lecentral_deployments (name, host, entry, service, verify_urls, paths, result, "
    "message, agent_version, ts_reported, db_user) VALUES ('www.example.test', :host, 'e', 'nginx', "
    "'[]', '[]', 'installed', 'm', '0.1.0', 1, :db_user)")
INSERT_RUN = ("INSERT INTO lecentral_runs (kind, host, ts_start, ts_end, exit_code, counts, message, "
              "version) VALUES (:kind, :host, 1, 2, 0, '{}', '', '0.1.0')")


def test_agent_reports_for_its_own_host(fleet: Fleet) -> None:
    """FleetStore.report() as the agent's account works; db_user is the server's, not the client's."""
    report(fleet, WEB1)
    report(fleet, WEB1, message="again")  # the update of its own row
    with fleet.engine(WEB1).begin() as conn:  # a db_user sent by the client is replaced
        conn.execute(text(INSERT_DEPLOYMENT), {"host": WEB1, "db_user": fleet.users[WEB2]})
        conn.execute(text("UPDATE lecentral_deployments SET db_user = :u WHERE host = :h"),
                     {"u": fleet.central_user, "h": WEB1})
    with fleet.central.engine.begin() as conn:
        deps = conn.execute(text("SELECT host, entry, message, db_user FROM lecentral_deployments "
                                 "ORDER BY entry")).all()
        runs = conn.execute(text("SELECT kind, host, db_user FROM lecentral_runs")).all()
    assert deps == [(WEB1, "e", "m", fleet.users[WEB1]), (WEB1, "nginx-www", "again", fleet.users[WEB1])]
    assert runs == [("agent", WEB1, fleet.users[WEB1])] * 2
    snapshot = FleetStore(fleet.central).snapshot()
    assert [(d.host, d.db_user) for d in snapshot.deployments] == [(WEB1, fleet.users[WEB1])] * 2


def test_agent_logs_install_events_for_its_host(fleet: Fleet) -> None:
    """What lecentral-install's ``[agent] report`` does (SqlStore.record_event under its
    ``[agent] host``): its own host is taken, another host refused."""
    now = int(time.time())
    with pytest.raises(StoreError) as caught:
        fleet.agents[WEB1].record_event("www.example.test", "installed", "on web2", now, host=WEB2)
    assert f"may report only for host(s) {WEB1}, not {WEB2}" in str(caught.value)
    assert "lecentral agent add" in str(caught.value)
    fleet.agents[WEB1].record_event("www.example.test", "installed", "on web1", now, host=WEB1)
    assert [(e.host, e.message) for e in fleet.central.events("www.example.test", 1)] == \
        [(WEB1, "on web1")]


def test_agent_reads_certs_and_cannot_change_them(fleet: Fleet) -> None:
    row = fleet.agents[WEB1].get("www.example.test")
    assert row is not None and row.enable
    before = dump(fleet)
    engine = fleet.engine(WEB1)
    for sql in ("UPDATE certs SET crt = NULL", "DELETE FROM certs",
                "INSERT INTO certs (name, csr, md5_modulus) VALUES ('x.example.test', 'x', 'x')"):
        message = refused(engine, sql)
        assert "denied" in message, message
    assert dump(fleet) == before


def test_agent_cannot_report_for_another_host(fleet: Fleet) -> None:
    """A whole report for web2 by web1's account: refused by the trigger, nothing written."""
    report(fleet, WEB2)  # web2's own report, which web1 then tries to overwrite
    before = dump(fleet)
    with pytest.raises(StoreError) as caught:
        report(fleet, WEB2, as_host=WEB1, message="forged")
    expected = f"lecentral: database user {fleet.users[WEB1]} may report only for host(s) {WEB1}, not {WEB2}"
    assert expected in str(caught.value)
    engine = fleet.engine(WEB1)
    for sql, params in ((INSERT_DEPLOYMENT, {"host": WEB2, "db_user": None}),
                        (INSERT_DEPLOYMENT, {"host": "new.example.test", "db_user": None}),
                        (INSERT_RUN, {"kind": "agent", "host": WEB2})):
        message = refused(engine, sql, params)
        assert f"lecentral: database user {fleet.users[WEB1]} may report only for host(s) {WEB1}, not" \
            in message, message
    assert dump(fleet) == before


def test_agent_cannot_change_another_hosts_rows_or_move_its_own(fleet: Fleet) -> None:
    report(fleet, WEB1)
    report(fleet, WEB2)
    before = dump(fleet)
    engine = fleet.engine(WEB1)
    message = refused(engine, "UPDATE lecentral_deployments SET message = 'forged' WHERE host = :h",
                      {"h": WEB2})
    assert f"may report only for host(s) {WEB1}, not {WEB2}" in message, message
    message = refused(engine, "UPDATE lecentral_deployments SET message = 'all'")
    assert f"may report only for host(s) {WEB1}, not {WEB2}" in message, message
    message = refused(engine, "UPDATE lecentral_deployments SET host = :to WHERE host = :h",
                      {"to": WEB2, "h": WEB1})
    assert f"may report only for host(s) {WEB1}, not {WEB2}" in message, message
    message = refused(engine, "UPDATE lecentral_deployments SET host = 'elsewhere.example.test' "
                              "WHERE host = :h", {"h": WEB1})
    assert "not elsewhere.example.test" in message, message
    assert dump(fleet) == before


def test_agent_cannot_rewrite_history(fleet: Fleet) -> None:
    """Runs and events are append-only for an agent; deployments cannot be deleted."""
    report(fleet, WEB1)
    with fleet.engine(WEB1).begin() as conn:
        conn.execute(text("INSERT INTO lecentral_events (ts, name, kind, host, message) VALUES "
                          "(:ts, 'www.example.test', 'installed', :h, 'installed')"),
                     {"h": WEB1, "ts": int(time.time())})
    before = dump(fleet)
    engine = fleet.engine(WEB1)
    for sql in ("DELETE FROM lecentral_runs", "UPDATE lecentral_runs SET exit_code = 0",
                "DELETE FROM lecentral_events", "UPDATE lecentral_events SET message = 'x'",
                "DELETE FROM lecentral_deployments",
                "INSERT INTO lecentral_agents (host, db_user, ts_added) VALUES ('x', 'y', 1)",
                "UPDATE lecentral_agents SET db_user = 'y'", "DELETE FROM lecentral_agents",
                "SELECT * FROM lecentral_agents",  # the triggers read it as their owner
                "SELECT * FROM lecentral_runs", "SELECT * FROM lecentral_events"):
        message = refused(engine, sql)
        assert "denied" in message, (sql, message)
    insert_event = ("INSERT INTO lecentral_events (ts, name, kind, host, message) VALUES "
                    "(:ts, 'www.example.test', :kind, :h, 'forged')")
    now = int(time.time())
    message = refused(engine, insert_event, {"h": WEB2, "kind": "installed", "ts": now})
    assert f"may report only for host(s) {WEB1}, not {WEB2}" in message, message
    # its own host, but history it never made: another kind, or another time
    message = refused(engine, insert_event, {"h": WEB1, "kind": "issued", "ts": now})
    assert "it may log install events only, not issued" in message, message
    message = refused(engine, insert_event, {"h": WEB1, "kind": "installed", "ts": 1})
    assert "may log events of now only, not of 1" in message, message
    assert dump(fleet) == before


def test_the_refused_host_is_named_even_after_many_hosts(fleet: Fleet) -> None:
    """An account mapped to many hosts: the list is shortened, the refused host still named."""
    central = FleetStore(fleet.central)
    for number in range(12):
        central.add_agent(f"extra-{number:02d}.example.test", fleet.users[WEB1], 3)
    message = refused(fleet.engine(WEB1), INSERT_RUN, {"kind": "agent", "host": WEB2})
    first_line = message.splitlines()[0].rstrip("'\")")
    assert f"lecentral: database user {fleet.users[WEB1]} may report only for host(s) extra-00" \
        in first_line and first_line.endswith(f", not {WEB2}"), message


def test_agent_records_only_agent_runs(fleet: Fleet) -> None:
    before = dump(fleet)
    message = refused(fleet.engine(WEB1), INSERT_RUN, {"kind": "renew", "host": WEB1})
    assert (f"lecentral: database user {fleet.users[WEB1]} is an agent account: it may record runs "
            "of kind agent only, not renew") in message, message
    assert dump(fleet) == before


def test_an_unmapped_account_writes_nothing(fleet: Fleet) -> None:
    """An account with the agent grants that `lecentral agent add` never mapped, or whose
    mapping `lecentral agent remove` took away: no report, for any host, and no central run (a
    forged renew run would hide a dead renew timer)."""
    before = dump(fleet)
    refusal = "is neither the central account nor mapped to a host"
    with pytest.raises(StoreError) as caught:
        FleetStore(fleet.stranger).report(WEB1, [deployment()], agent_run(WEB1), "0.1.0", 100)
    assert refusal in str(caught.value)
    message = refused(fleet.stranger.engine, INSERT_RUN, {"kind": "renew", "host": "c.example.test"})
    assert refusal in message, message
    assert FleetStore(fleet.central).remove_agent(WEB2)
    before = dump(fleet)
    message = refused(fleet.engine(WEB2), INSERT_RUN, {"kind": "renew", "host": "c.example.test"})
    assert f"lecentral: database user {fleet.users[WEB2]} {refusal}" in message, message
    assert dump(fleet) == before


def test_central_account_writes_anything(fleet: Fleet) -> None:
    """The account that ran lecentral init: reports for any host, any run kind, history edits."""
    central = FleetStore(fleet.central)
    central.report(WEB2, [deployment()], agent_run(WEB2), "0.1.0", 100)
    central.record_run(Run(kind="renew", host=WEB1, ts_start=1, ts_end=2, exit_code=0, counts={}),
                       "0.1.0")
    with fleet.central.engine.begin() as conn:
        conn.execute(text(INSERT_DEPLOYMENT), {"host": WEB1, "db_user": "someone"})
        conn.execute(text("UPDATE lecentral_deployments SET host = :to WHERE host = :h"),
                     {"to": "moved.example.test", "h": WEB1})
        conn.execute(text("UPDATE lecentral_runs SET exit_code = 3"))
        users = set(conn.execute(text("SELECT db_user FROM lecentral_deployments")).scalars())
        conn.execute(text("DELETE FROM lecentral_runs WHERE kind = 'renew'"))
    assert users == {fleet.central_user}
    assert central.forget_host(WEB2) == 1
    assert central.remove_agent(WEB2)
    fleet.central.record_event("www.example.test", "installed", "by the central host", 5)
    assert [a["host"] for a in central.agents()] == [WEB1]
