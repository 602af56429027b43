"""``lecentral agent add/remove/list``: the host -> database user mapping the reporting triggers
read (their enforcement: tests/test_agent_grants.py). SQLite: the mapping itself, no server needed."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text

from lecentral.cli.central import main


class Env:
    def __init__(self, tmp: Path) -> None:
        self.db = tmp / "lecentral.db"
        self.config = tmp / "lecentral.toml"
        self.config.write_text(f'[database]\nurl = "sqlite:///{self.db}"\n')

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(main, ["--config", str(self.config), *args])


def test_add_list_replace_remove(tmp_path: Path) -> None:
    env = Env(tmp_path)
    assert env.run("init").exit_code == 0
    empty = env.run("agent", "list")
    assert empty.exit_code == 0 and "no agent mapped yet" in empty.stdout
    added = env.run("agent", "add", "web1.example.test", "--db-user", "agent_web1")
    assert added.exit_code == 0, added.output
    assert "web1.example.test: may now report as database user agent_web1" in added.stdout
    same = env.run("agent", "add", "web1.example.test", "--db-user", "agent_web1")
    assert "already reports as database user agent_web1; nothing changed" in same.stdout
    moved = env.run("agent", "add", "web1.example.test", "--db-user", "agent_new")
    assert "now reports as database user agent_new (was agent_web1)" in moved.stdout
    assert env.run("agent", "add", "web2.example.test", "--db-user", "agent_web2").exit_code == 0
    listed = env.run("agent", "list", "--json")
    assert listed.exit_code == 0
    got = json.loads(listed.stdout)
    assert [(a["host"], a["db_user"]) for a in got] == [("web1.example.test", "agent_new"),
                                                        ("web2.example.test", "agent_web2")]
    assert all(isinstance(a["ts_added"], int) for a in got)
    text_list = env.run("agent", "list").stdout.splitlines()
    assert text_list[0].split() == ["HOST", "DB", "USER"]
    assert text_list[1].split() == ["web1.example.test", "agent_new"]
    removed = env.run("agent", "remove", "web1.example.test")
    assert removed.exit_code == 0 and "drop or lock its database account" in removed.stdout
    again = env.run("agent", "remove", "web1.example.test")
    assert again.exit_code == 1
    assert "no database user is mapped to host web1.example.test (see lecentral agent list)" in again.stderr
    assert [a["host"] for a in json.loads(env.run("agent", "list", "--json").stdout)] == \
        ["web2.example.test"]


def test_bad_names_are_refused_before_any_write(tmp_path: Path) -> None:
    env = Env(tmp_path)
    assert env.run("init").exit_code == 0
    for host, user, says in (("web 1", "u", "is not a host name"),
                             ("web1.example.test", "agent@web1", "give the user part only"),
                             ("web1.example.test", "a'; DROP TABLE certs; --", "not a database user")):
        result = env.run("agent", "add", host, "--db-user", user)
        assert result.exit_code == 1 and says in result.stderr, result.output
    assert json.loads(env.run("agent", "list", "--json").stdout) == []


def test_an_invalid_row_is_reported_not_used(tmp_path: Path) -> None:
    env = Env(tmp_path)
    assert env.run("init").exit_code == 0
    engine = create_engine(f"sqlite:///{env.db}")
    with engine.begin() as conn:  # SQLite keeps whatever type it is given
        conn.execute(text("INSERT INTO lecentral_agents VALUES ('web9', X'FF00', 1)"))
    engine.dispose()
    result = env.run("agent", "list")
    assert result.exit_code == 4 and "lecentral_agents holds an invalid row" in result.stderr


def test_agent_needs_init_first(tmp_path: Path) -> None:
    env = Env(tmp_path)
    result = env.run("agent", "list")
    assert result.exit_code == 4 and "run lecentral init" in result.stderr


def test_host_names_ignore_case_and_forget_deletes_a_retired_hosts_reports(tmp_path: Path) -> None:
    """``agent add WEB1.Example.Test`` is the host the agent reports as (lower case); ``agent
    forget`` deletes a retired host's deployments (runs stay), and says so when there are none."""
    from lecentral.fleet.model import Run
    from lecentral.fleet.store import Deployment, FleetStore
    from lecentral.store.sql import SqlStore

    env = Env(tmp_path)
    assert env.run("init").exit_code == 0
    assert env.run("agent", "add", "WEB1.Example.Test.", "--db-user", "agent_web1").exit_code == 0
    assert [a["host"] for a in json.loads(env.run("agent", "list", "--json").stdout)] == \
        ["web1.example.test"]
    store = SqlStore(f"sqlite:///{env.db}")
    FleetStore(store).report("web1.example.test", [Deployment(
        "www.example.test", "files-www.example.test", "files", None, None, None, None, None, None,
        None, None, None, [], [], "failed", "x")], Run("agent", "web1.example.test", 1, 2, 1, {}),
        "0.1.0", 2)

    gone = env.run("agent", "forget", "Web1.example.test")

    assert gone.exit_code == 0 and "web1.example.test: 1 deployment report(s) deleted" in gone.stdout
    with create_engine(f"sqlite:///{env.db}").begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM lecentral_deployments")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM lecentral_runs")).scalar() == 1
    again = env.run("agent", "forget", "web1.example.test")
    assert again.exit_code == 1 and "has reported nothing" in again.stderr
    store.close()
