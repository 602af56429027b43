"""Fleet truth end to end, in one real local world: the proof of docs/fleet.md.

One MariaDB database with the accounts of contrib/sql/grants-mysql.sql as shipped (names
replaced): the central account ran ``lecentral init``; three servers, each with its own agent
account mapped by ``lecentral agent add``, each a loopback address of its own:

* ``127.0.0.2`` runs nginx for www.example.test and a reporting agent that reloads and verifies;
* ``127.0.0.1`` runs Postfix for mail.example.test (STARTTLS) and a reporting agent that then
  stops running (its last report is moved three days back in the database, as the clock would:
  the only thing in this module that is not lived through);
* ``127.0.0.4`` runs nginx for www.example.test too, with a "reload" that does nothing and no
  verify URL: its files change, nginx keeps serving the old certificate, its agent says
  "installed"; only the central probe (an operator's ``endpoint add``) sees the truth.

Renewals come from Pebble. The central host probes over TLS and SMTP STARTTLS; ``fleet``,
``check`` and ``metrics`` (checked by ``promtool check metrics``) show every state, and each state
change is mailed once.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from agent_world import Mailbox
from click.testing import CliRunner
from lecentral_testing.agent import AgentWorld, PebbleOrders
from lecentral_testing.daemons.nginx import NginxServer
from lecentral_testing.daemons.postfix import PostfixServer
from lecentral_testing.mariadb import MariaDBServer
from lecentral_testing.pki import make_self_signed
from sqlalchemy import text
from test_agent_grants import mariadb_accounts, url_as

from lecentral.cli.central import main
from lecentral.install.csr import load_key

WWW, MAIL = "www.example.test", "mail.example.test"
# the three servers' names, and the addresses their daemons listen on (Postfix accepts only an
# address an interface has: 127.0.0.1)
WEB, POST, LAZY = "127.0.0.2", "127.0.0.1", "127.0.0.4"


@dataclass
class Fleet:
    central_url: str
    config: Path
    mailbox: Mailbox
    users: dict[str, str] = field(default_factory=dict)  # host -> its agent's database user
    worlds: dict[str, AgentWorld] = field(default_factory=dict)
    daemons: dict[str, Any] = field(default_factory=dict)

    def central(self, *args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(main, ["--config", str(self.config), *args],
                                    catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr

    def fleet(self) -> dict[str, Any]:
        code, out, err = self.central("fleet", "--json")
        assert code == 0, err
        data: dict[str, Any] = json.loads(out)
        return data

    def states(self) -> dict[tuple[str, str], str]:
        """(certificate, target) -> state, from ``lecentral fleet --json``."""
        return {(c["name"], t["target"]): t["state"] for c in self.fleet()["certs"]
                for t in c["targets"]}

    def agent(self, host: str) -> dict[str, Any]:
        out = self.worlds[host].run("run")
        assert out.exit_code == 0, out.stdout + out.stderr
        return {r["name"]: r for r in out.results}


@pytest.fixture
def fleet(tmp_path: Path, mariadb_server: MariaDBServer, mariadb_url: str,
          smtp: tuple[Mailbox, int]) -> Iterator[Fleet]:
    config = tmp_path / "lecentral.toml"
    made = Fleet("", config, smtp[0])

    def init(central_url: str) -> None:  # lecentral init, as the central account
        made.central_url = central_url
        config.write_text(
            f'[database]\nurl = "{central_url}"\n'
            f'[notify]\nmail_to = ["ops@example.test"]\nsmtp = "127.0.0.1:{smtp[1]}"\n'
            '[fleet]\nstale_after = "10m"\nprobe_timeout = 5.0\n')
        code, _, err = made.central("init")
        assert code == 0, err

    central_url, users, password = mariadb_accounts(mariadb_server, mariadb_url,
                                                    [WEB, POST, LAZY], init)
    users.pop("reader")
    made.users = users
    for host, user in users.items():
        code, _, err = made.central("agent", "add", host, "--db-user", user)
        assert code == 0, err
        world = AgentWorld(tmp_path / host, db_url=central_url)
        world.agent.update({"report": True, "host": host})
        world.notify = {"mail_to": ["ops@example.test"], "smtp": f"127.0.0.1:{smtp[1]}"}
        made.worlds[host] = world
    agent_url = {host: url_as(mariadb_url, user, password) for host, user in users.items()}

    key = made.worlds[WEB].add(WWW)
    shutil.copy2(key, made.worlds[LAZY].key_path(WWW))  # two servers of one name share its key
    mail_key = made.worlds[POST].add(MAIL)
    for host, name, k in ((WEB, WWW, key), (LAZY, WWW, key), (POST, MAIL, mail_key)):
        world = made.worlds[host]
        entry = world.entry(name)
        placeholder, _ = make_self_signed([name], load_key(k), days=2)  # type: ignore[arg-type]
        Path(entry["fullchain"]).write_bytes(placeholder)
        Path(entry["cert"]).write_bytes(placeholder)
        Path(entry["chain"]).write_bytes(placeholder)
        if name == MAIL:
            server: Any = PostfixServer(world.workdir / "postfix", cert=entry["cert"], key=k,
                                        chain=entry["chain"], myhostname=MAIL)
        else:
            server = NginxServer(world.workdir / "nginx", cert=entry["fullchain"], key=k,
                                 server_name=name)
        server.address = host
        server.start()
        made.daemons[host] = server
        verify = None if host == LAZY else server.verify_urls["smtp" if name == MAIL else "https"]
        keys: dict[str, Any] = {"check": server.check_command, "verify_timeout": 15.0}
        keys["reload"] = "true" if host == LAZY else server.reload_command  # LAZY: does nothing
        if verify:
            keys["verify"] = verify
        world.write_config(world.entry(name, **keys), database=agent_url[host])
    try:
        yield made
    finally:
        for server in made.daemons.values():
            server.close()
        for world in made.worlds.values():
            world.close()


def test_fleet_truth_end_to_end(fleet: Fleet, agent_pebble: PebbleOrders) -> None:
    web = fleet.worlds[WEB]
    lazy_url = fleet.daemons[LAZY].verify_urls["https"]
    first = web.issue(WWW, days=30)
    fleet.worlds[POST].issue(MAIL, days=30)
    for host in (WEB, POST, LAZY):
        assert fleet.agent(host)[WWW if host != POST else MAIL]["status"] == "installed"
    fleet.daemons[LAZY].reload()  # the operator set LAZY up by hand, its first certificate too
    fleet.daemons[LAZY].wait_presented(first.fingerprint, timeout=10)
    code, _, err = fleet.central("endpoint", "add", WWW, lazy_url)
    assert code == 0, err
    code, out, err = fleet.central("renew")  # nothing due: records the run (the timer is alive)
    assert code == 0, err

    # 1. everything current: the agents' reports and the central probes (TLS and STARTTLS)
    code, out, err = fleet.central("probe", "--json")
    assert code == 0, err
    probed = {(e["name"], e["url"]): e["state"] for e in json.loads(out)["endpoints"]}
    assert set(probed.values()) == {"current"}, probed
    assert any(url.startswith(f"smtp+starttls://{POST}:") for _, url in probed)
    assert any(url.startswith(f"tls://{WEB}:") for _, url in probed)
    states = fleet.states()
    assert set(states.values()) == {"current"}, states
    code, out, _ = fleet.central("check")
    assert code == 0 and out.startswith("LECENTRAL OK - "), out

    # db_user: written by the database from the account that reported, not by the client
    with web.store.engine.begin() as conn:  # web.store is the central account
        who = dict(conn.execute(text("SELECT host, db_user FROM lecentral_deployments")).all())
    assert who == {host: fleet.users[host] for host in (WEB, POST, LAZY)}

    # 2. the central host renews both through Pebble; WEB's agent installs it; POST's agent has
    # stopped running; LAZY's agent installs the files but its "reload" does nothing
    renewed = agent_pebble.issue(web, WWW)
    agent_pebble.issue(fleet.worlds[POST], MAIL)
    assert fleet.agent(WEB)[WWW]["status"] == "installed"
    assert fleet.agent(LAZY)[WWW]["status"] == "installed"  # what the agent believes
    fleet.daemons[LAZY].wait_presented(first.fingerprint, timeout=5)  # what nginx still serves
    with web.store.engine.begin() as conn:  # three days pass for the silent agent
        for table, column in (("lecentral_deployments", "ts_reported"), ("lecentral_runs", "ts_end")):
            conn.execute(text(f"UPDATE {table} SET {column} = {column} - 259200 WHERE host = :h"),
                         {"h": POST})
    # and the renewed certificates count as older than stale_after from now on
    fleet.config.write_text(fleet.config.read_text().replace('stale_after = "10m"',
                                                             'stale_after = "0s"'))
    fleet.mailbox.messages.clear()

    code, out, err = fleet.central("probe", "--json")

    assert code == 0, err
    states = fleet.states()
    assert states[(WWW, f"{WEB} (files-{WWW})")] == "current"
    assert states[(WWW, f"{LAZY} (files-{WWW})")] == "current"  # installed, and no verify URL
    lazy_probe = [t for (n, t) in states if n == WWW and t.startswith(f"tls://{LAZY}:")]
    assert [states[(WWW, t)] for t in lazy_probe] == ["stale"]  # the probe sees the old one
    assert states[(MAIL, f"{POST} (files-{MAIL})")] == "silent"
    data = fleet.fleet()
    (www,) = [c for c in data["certs"] if c["name"] == WWW]
    assert www["state"] == "stale" and www["fingerprint"] == renewed.fingerprint
    subjects = fleet.mailbox.subjects()
    assert any(f"{WWW} on tls://{LAZY}:" in s and "is stale" in s for s in subjects), subjects
    assert any(f"{MAIL} on {POST} (files-{MAIL}) is silent" in s for s in subjects), subjects

    # each change is told once: a second probe mails nothing new
    count = len(fleet.mailbox.messages)
    assert fleet.central("probe")[0] == 0
    assert len(fleet.mailbox.messages) == count

    # 3. monitoring: the Nagios plugin and the Prometheus textfile see the same
    code, out, _ = fleet.central("check")
    assert code == 1, out  # silent and stale are WARNINGs (docs/monitoring.md)
    first_line, *problems = out.splitlines()
    assert first_line.startswith("LECENTRAL WARNING - ") and " | " in first_line
    assert any(MAIL in p and "silent" in p for p in problems), problems
    assert any(WWW in p and "stale" in p for p in problems), problems
    textfile = web.workdir / "lecentral.prom"
    code, _, err = fleet.central("metrics", "--textfile", str(textfile))
    assert code == 0, err
    promtool = subprocess.run(["promtool", "check", "metrics"], input=textfile.read_bytes(),
                              capture_output=True, check=False)
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr
    metrics = textfile.read_text()
    assert f'host="{WEB}"' in metrics and f'host="{POST}"' in metrics

    # 4. the renew timer dies: no renew run for three days
    with web.store.engine.begin() as conn:
        conn.execute(text("UPDATE lecentral_runs SET ts_end = ts_end - 259200 WHERE kind = 'renew'"))
    assert fleet.fleet()["renew_state"] == "dead-timer"
    code, out, _ = fleet.central("check")
    assert code == 2 and "renew" in out
    assert fleet.central("fleet", "--notify")[0] == 0  # what the hourly probe does
    assert any("the central renew timer is dead (no renew run)" in s for s in fleet.mailbox.subjects())

    # 5. the silent agent comes back and LAZY's nginx is reloaded by hand: current again, told
    fleet.mailbox.messages.clear()
    fleet.agent(POST)
    fleet.daemons[LAZY].reload()
    fleet.daemons[LAZY].wait_presented(renewed.fingerprint, timeout=10)
    assert fleet.central("renew")[0] == 0
    assert fleet.central("probe")[0] == 0
    assert set(fleet.states().values()) == {"current"}, fleet.states()
    subjects = fleet.mailbox.subjects()
    assert any(f"{MAIL} on {POST} (files-{MAIL}) is current again" in s for s in subjects), subjects
    assert any("renew timer is current again" in s for s in subjects), subjects
