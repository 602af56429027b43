"""Fleet truth from the agents: reports, the judge's states, ``lecentral fleet``, change alerts.

Real agent runs against a real nginx (TLS verify) on 127.0.0.1, an SQLite store (MariaDB with the
shipped grants: tests/test_fleet_mariadb.py), the central CLI in-process, mail through the test
SMTP catcher. Times in the judge are given explicitly (``now``) where a test needs a host to have
been silent for days: no sleeping, no clock mock.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from agent_world import Mailbox, placeholder_nginx
from click.testing import CliRunner
from lecentral_testing.agent import AgentWorld
from lecentral_testing.daemons.nginx import NginxServer
from lecentral_testing.pki import make_self_signed

from lecentral.certificates import Certificate, now_ts
from lecentral.fleet.model import FleetSettings
from lecentral.fleet.states import compute, probe_url_host
from lecentral.fleet.store import (
    Deployment,
    FleetStore,
    ProbeResult,
    Run,
    pem_fingerprint,
)
from lecentral.hookspecs import hookimpl

NAME = "www.example.test"
HOST = "www-1.example.test"


@pytest.fixture
def nginx(world: AgentWorld) -> Iterator[NginxServer]:
    """nginx serving a placeholder (self-signed, same key) from the paths the agent manages."""
    with placeholder_nginx(world, NAME) as server:
        yield server


def reporting(world: AgentWorld, nginx: NginxServer, **keys: Any) -> None:
    world.agent.update({"report": True, "host": HOST})
    base = {"check": nginx.check_command, "reload": nginx.reload_command,
            "verify": nginx.verify_urls["https"], "verify_timeout": 15.0}
    world.write_config(world.entry(NAME, **{**base, **keys}))


def central(world: AgentWorld, *args: str, fleet: str = "") -> tuple[int, str, str]:
    """``lecentral --config lecentral.toml ARGS`` in-process, on the agents' database."""
    from lecentral.cli.central import main

    config = world.workdir / "lecentral.toml"
    notify = "".join(f"{k} = {json.dumps(v)}\n" for k, v in world.notify.items())
    config.write_text(f'[database]\nurl = "{world.db_url}"\n[notify]\n{notify}[fleet]\n{fleet}\n')
    result = CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def fleet_json(world: AgentWorld, *args: str, fleet: str = "") -> dict[str, Any]:
    code, out, err = central(world, "fleet", "--json", *args, fleet=fleet)
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def targets(data: dict[str, Any], name: str = NAME) -> list[dict[str, Any]]:
    (cert,) = [c for c in data["certs"] if c["name"] == name]
    found: list[dict[str, Any]] = cert["targets"]
    return found


def test_agent_reports_what_it_installed_and_what_is_served(world: AgentWorld,
                                                            nginx: NginxServer) -> None:
    """A reporting run writes one deployment (installed = served = the database's leaf) and one
    run; ``lecentral fleet`` shows the host current, and the run counted."""
    leaf = world.issue(NAME, days=30)
    reporting(world, nginx)

    out = world.run("run")

    assert out.exit_code == 0, out.stderr
    data = fleet_json(world)
    (target,) = targets(data)
    assert target["kind"] == "agent" and target["target"] == f"{HOST} (files-{NAME})"
    assert target["installed"]["fingerprint"] == leaf.fingerprint
    assert target["served"]["fingerprint"] == leaf.fingerprint
    assert target["served"]["url"] == nginx.verify_urls["https"]
    assert target["state"] == "current" and target["result"] == "installed"
    agent_run = [r for r in data["runs"] if r["kind"] == "agent"]
    assert agent_run and agent_run[0]["host"] == HOST and agent_run[0]["counts"] == {"installed": 1}
    assert data["renew_state"] == "never-run"

    # an up-to-date run looks at the service again (one TLS handshake) and refreshes the report
    assert world.run("run").exit_code == 0
    (target,) = targets(fleet_json(world))
    assert target["result"] == "up-to-date" and target["served"]["fingerprint"] == leaf.fingerprint


def test_renewed_certificate_not_installed_is_pending_then_stale(world: AgentWorld,
                                                                 nginx: NginxServer) -> None:
    """The central host saved a new certificate; the host still has the previous one: pending
    while the new one is younger than stale_after, stale after; current once the agent runs."""
    world.issue(NAME, days=30)
    reporting(world, nginx)
    assert world.run("run").exit_code == 0
    renewed = world.issue(NAME, days=60)

    (target,) = targets(fleet_json(world))
    assert target["state"] == "pending", target
    assert "previous certificate" in target["detail"]

    (target,) = targets(fleet_json(world, fleet="stale_after = 0"))
    assert target["state"] == "stale", target
    assert "newer one" in target["detail"]

    assert world.run("run").exit_code == 0
    (target,) = targets(fleet_json(world, fleet="stale_after = 0"))
    assert target["state"] == "current" and target["served"]["fingerprint"] == renewed.fingerprint


def test_service_that_keeps_serving_the_old_certificate_is_stale(world: AgentWorld,
                                                                 nginx: NginxServer) -> None:
    """``action = "syslog"``: the agent puts the new files in place and asks an operator to
    restart; nobody does, so nginx still serves the previous certificate. The agent's look at
    the verify URL reports it: installed is current, served is stale."""
    first = world.issue(NAME, days=30)
    reporting(world, nginx)
    assert world.run("run").exit_code == 0
    nginx.wait_presented(first.fingerprint, timeout=10)
    world.issue(NAME, days=60)
    reporting(world, nginx, action="syslog")

    out = world.run("run")

    assert out.by_name(NAME)["status"] == "installed", out.stderr
    (target,) = targets(fleet_json(world, fleet='stale_after = "0s"'))
    assert target["state"] == "stale", target
    assert target["served"]["fingerprint"] == first.fingerprint
    assert "served at" in target["detail"]


def test_report_refused_by_the_database_is_loud_and_the_install_stands(
        world: AgentWorld, nginx: NginxServer) -> None:
    """The database takes no report (here its table is gone): the certificate is installed all
    the same, and the run says the report was not delivered and exits 1."""
    leaf = world.issue(NAME, days=30)
    reporting(world, nginx)
    db = sqlite3.connect(world.workdir / "lecentral.db")
    db.execute("DROP TABLE lecentral_deployments")
    db.commit()
    db.close()

    out = world.run("run")

    assert out.exit_code == 1
    assert out.by_name(NAME)["status"] == "installed"
    report = out.by_name("(report)")
    assert report["status"] == "failed"
    assert "not delivered" in report["message"] and "lecentral_deployments" in report["message"]
    nginx.wait_presented(leaf.fingerprint, timeout=10)


def test_renew_run_is_recorded_and_a_dead_timer_is_seen(world: AgentWorld) -> None:
    """A complete ``lecentral renew`` (nothing to do) is a run in lecentral_runs; with
    renew_max_age 0 the next look says dead-timer; a named run does not count."""
    code, _, err = central(world, "renew")
    assert code == 0, err
    data = fleet_json(world)
    assert data["renew_state"] == "current", data["renew_detail"]
    (run,) = [r for r in data["runs"] if r["kind"] == "renew"]
    assert run["exit_code"] == 0 and run["last_success"] == run["ts_end"]

    store = FleetStore(world.store)
    view = compute(store.snapshot(), FleetSettings(renew_max_age=3600), now_ts() + 7200, store)
    assert view.renew_state == "dead-timer" and "renew_max_age 1h" in view.renew_detail


def test_fleet_unknown_name_and_problems_filter(world: AgentWorld, nginx: NginxServer) -> None:
    world.issue(NAME, days=30)
    reporting(world, nginx)
    assert world.run("run").exit_code == 0

    code, out, err = central(world, "fleet", "nosuch.example.test")
    assert code == 1 and "no certificate named nosuch.example.test" in err

    code, out, _ = central(world, "fleet", "--problems")
    assert code == 0 and "every certificate is current" in out
    code, out, _ = central(world, "fleet")
    assert code == 0 and HOST in out and "renew timer: never-run" in out


# --- the judge on recorded observations ---------------------------------------------------------


def _report(store: FleetStore, host: str, name: str, fp: str | None, *, served: Certificate | None = None,
            error: str | None = None, now: int) -> None:
    store.report(host, [Deployment(
        name=name, entry=f"nginx-{name}", service="nginx", installed_fp=fp, installed_not_after=None,
        served_fp=served.fingerprint if served else None,
        served_not_after=served.not_after if served else None,
        served_names=served.names if served else None,
        served_key_md5=served.md5_modulus if served else None,
        served_url="tls://127.0.0.1:443" if (served or error) else None, served_error=error,
        ts_served=now, verify_urls=["tls://127.0.0.1:443"], paths=[], result="up-to-date",
        message="")], Run("agent", host, now, now, 0, {"up-to-date": 1}), "test", now)


def test_judge_mismatch_silent_unreachable_never_reported(world: AgentWorld) -> None:
    """Each state from recorded observations: another key (mismatch), another name (mismatch),
    a host silent for three days, a failed look (unreachable), a certificate nobody reports."""
    world.add(NAME)
    leaf = world.issue(NAME, days=30)
    world.add("other.example.test")
    other = world.issue("other.example.test", days=30)
    world.add("lonely.example.test")
    world.issue("lonely.example.test", days=30)
    store = FleetStore(world.store)
    now = now_ts()
    _report(store, "a.example.test", NAME, leaf.fingerprint, served=other, now=now)
    _report(store, "b.example.test", NAME, leaf.fingerprint, served=leaf, now=now - 3 * 86400)
    _report(store, "c.example.test", NAME, leaf.fingerprint, error="connection refused", now=now)
    store.save_probes([ProbeResult(NAME, "tls://d.example.test:443?sni=" + NAME, "operator",
                                   fingerprint=leaf.fingerprint, not_after=leaf.not_after,
                                   names=leaf.names, key_md5=leaf.md5_modulus)], "central", now)
    # a certificate for the right name but another key
    foreign, _ = make_self_signed([NAME], None, days=30)
    foreign_leaf = Certificate.load(foreign)
    store.save_probes([ProbeResult(NAME, "tls://e.example.test:443?sni=" + NAME, "operator",
                                   fingerprint=foreign_leaf.fingerprint, not_after=foreign_leaf.not_after,
                                   names=foreign_leaf.names, key_md5=foreign_leaf.md5_modulus)],
                      "central", now)

    view = compute(store.snapshot(), FleetSettings(), now, store)

    by_cert = {c.name: c for c in view.certs}
    states = {t.target.split(" ")[0]: (t.state, t.detail) for t in by_cert[NAME].targets}
    assert states["a.example.test"][0] == "mismatch"
    assert "another key" in states["a.example.test"][1] or "not www" in states["a.example.test"][1]
    assert states["b.example.test"][0] == "silent" and "3d ago" in states["b.example.test"][1]
    assert states["c.example.test"] == ("unreachable", "tls://127.0.0.1:443: connection refused")
    assert states[f"tls://d.example.test:443?sni={NAME}"][0] == "current"
    assert states[f"tls://e.example.test:443?sni={NAME}"][0] == "mismatch"
    assert "another key" in states[f"tls://e.example.test:443?sni={NAME}"][1]
    assert by_cert[NAME].state == "silent"  # the worst
    assert by_cert["lonely.example.test"].state == "never-reported"
    assert by_cert["other.example.test"].state == "never-reported"


def test_state_changes_are_mailed_once_and_recovery_too(world: AgentWorld, nginx: NginxServer,
                                                        smtp: tuple[Mailbox, int]) -> None:
    """``fleet --notify`` (what probe and renew do after each run) mails a change once: the
    host going stale, not again on the next look, and once more when it is current again."""
    mailbox, _ = smtp
    world.issue(NAME, days=30)
    reporting(world, nginx)
    assert world.run("run").exit_code == 0
    central(world, "fleet", "--notify", fleet="stale_after = 0")
    mailbox.messages.clear()
    world.issue(NAME, days=60)

    central(world, "fleet", "--notify", fleet="stale_after = 0")
    central(world, "fleet", "--notify", fleet="stale_after = 0")

    stale = [s for s in mailbox.subjects() if "is stale" in s]
    assert stale == [f"[lecentral] WARNING: fleet: {NAME} on {HOST} (files-{NAME}) is stale"], mailbox.subjects()
    events = world.store.events(NAME)
    assert any(e.kind == "fleet" and "stale" in e.message for e in events)

    assert world.run("run").exit_code == 0
    central(world, "fleet", "--notify", fleet="stale_after = 0")
    assert any("is current again" in s for s in mailbox.subjects()), mailbox.subjects()


def test_probe_url_host_and_pem_fingerprint() -> None:
    assert probe_url_host("tls://127.0.0.1:443", "www-3.example.test") == "tls://www-3.example.test:443"
    assert probe_url_host("smtp+starttls://localhost:25?ehlo=x", "h") == "smtp+starttls://h:25?ehlo=x"
    assert probe_url_host("tls://[::1]:443", "2001:db8::1") == "tls://[2001:db8::1]:443"
    assert probe_url_host("tls://mail.example.test:465", "h") == "tls://mail.example.test:465"
    pem, _ = make_self_signed(["x.example.test"], None, days=1)
    assert pem_fingerprint(pem) == Certificate.load(pem).fingerprint
    assert pem_fingerprint(b"garbage") is None and pem_fingerprint(None) is None


class FleetSpy:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None, str]] = []

    @hookimpl
    def lecentral_fleet_state_changed(self, name: str, target: str, old: str | None, new: str,
                                      detail: str) -> None:
        self.seen.append((name, target, old, new))
        raise RuntimeError("a broken event handler must not stop the others")


def test_state_changes_reach_the_event_hook_once(world: AgentWorld, nginx: NginxServer) -> None:
    """``lecentral_fleet_state_changed`` is called once per change (first sighting included),
    even when a handler raises; the next look with nothing changed calls nothing."""
    from lecentral.config import CentralConfig, FleetConfig
    from lecentral.fleet.watch import load_view, notify_changes

    spy = FleetSpy()
    world.registry.loaded.pm.register(spy, name="fleet-spy")
    world.issue(NAME, days=30)
    reporting(world, nginx)
    assert world.run("run").exit_code == 0
    config = CentralConfig(fleet=FleetConfig(stale_after=0))

    notify_changes(*load_view(world.store, config, now_ts()), world.registry, config)
    target = f"{HOST} (files-{NAME})"
    assert spy.seen == [(NAME, target, None, "current")]
    notify_changes(*load_view(world.store, config, now_ts()), world.registry, config)
    assert len(spy.seen) == 1

    world.issue(NAME, days=60)
    notify_changes(*load_view(world.store, config, now_ts()), world.registry, config)
    assert spy.seen[1:] == [(NAME, target, "current", "stale")]
