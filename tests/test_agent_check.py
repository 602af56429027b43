"""``lecentral-install check``: the NRPE plugin of a server, against a real nginx and database."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_world import placeholder_nginx
from lecentral_testing.agent import AgentWorld
from lecentral_testing.daemons.nginx import NginxServer
from lecentral_testing.pki import make_self_signed

from lecentral.install.csr import load_key

NAME = "www.example.test"
FIRST = re.compile(r"LECENTRAL-INSTALL (OK|WARNING|CRITICAL|UNKNOWN) - [^|\n]+( \| .+)?")


@pytest.fixture
def nginx(world: AgentWorld) -> Iterator[NginxServer]:
    """nginx serving a placeholder (self-signed, same key) from the paths the agent manages."""
    with placeholder_nginx(world, NAME, key="ec256") as server:
        yield server


def entry(world: AgentWorld, nginx: NginxServer) -> dict[str, object]:
    return world.entry(NAME, check=nginx.check_command, reload=nginx.reload_command,
                       verify=nginx.verify_urls["https"], verify_timeout=15.0)


def check(world: AgentWorld, *args: str) -> tuple[int, list[str]]:
    out = world.run("check", *args, json_output=False)
    lines = out.stdout.splitlines()
    assert FIRST.fullmatch(lines[0]), lines
    return out.exit_code, lines


def days_ago(days: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) - dt.timedelta(days=days)


def test_installed_and_served_is_ok(world: AgentWorld, nginx: NginxServer) -> None:
    world.issue(NAME, days=90, start=days_ago(10))
    world.write_config(entry(world, nginx))
    assert world.run("run").by_name(NAME)["status"] == "installed"
    code, lines = check(world)
    assert code == 0, lines
    assert lines == [(f"LECENTRAL-INSTALL OK - 1 certificate OK, soonest expiry {NAME} in 80.0d "
                     f"| {NAME}=80;22.50;9;;90")]


def test_expiring_installed_certificate_is_critical(world: AgentWorld, nginx: NginxServer) -> None:
    world.issue(NAME, days=6, start=days_ago(5.5))
    world.write_config(entry(world, nginx))
    assert world.run("run").by_name(NAME)["status"] == "installed"
    code, lines = check(world)
    assert code == 2
    assert lines[1] == (f"CRITICAL: {NAME} (files): the installed certificate expires in 12h "
                        "(below 14h)")
    assert check(world, "--warning", "0.4", "--critical", "0.2")[0] == 0


def test_newer_certificate_not_installed_is_stale(world: AgentWorld, nginx: NginxServer) -> None:
    world.issue(NAME, days=90, start=days_ago(30))
    world.write_config(entry(world, nginx))
    world.run("run")
    world.issue(NAME, days=90, start=days_ago(0.5))
    assert check(world)[0] == 0  # half a day: the next daily run installs it
    world.issue(NAME, days=90, start=days_ago(3))
    code, lines = check(world)
    assert code == 1
    assert lines[1].startswith(f"WARNING: {NAME} (files): the database has had a newer "
                               "certificate for 3.0d; not installed: to install: newer certificate")
    assert check(world, "--stale-after", "5")[0] == 0


def test_service_presenting_another_certificate_is_critical(world: AgentWorld,
                                                             nginx: NginxServer) -> None:
    world.issue(NAME, days=90, start=days_ago(1))
    world.write_config(entry(world, nginx))
    world.run("run")
    # someone put another certificate in nginx's file and reloaded: the agent's is not served
    full = Path(world.entry(NAME)["fullchain"])
    other, _ = make_self_signed([NAME], load_key(world.key_path(NAME)), days=5)  # type: ignore[arg-type]
    full.write_bytes(other)
    nginx.reload()
    code, lines = check(world)
    assert code == 2
    assert re.fullmatch(rf"CRITICAL: {NAME} \(files\): tls://127\.0\.0\.1:\d+ presents another "
                        r"certificate than the installed one \(sha256 [0-9a-f]{16}\): reload the "
                        r"service\?", lines[1]), lines


def test_service_down_is_a_warning(world: AgentWorld, nginx: NginxServer) -> None:
    world.issue(NAME, days=90, start=days_ago(1))
    world.write_config(entry(world, nginx))
    world.run("run")
    nginx.stop()
    out = world.run("check", "--json", json_output=False)
    data = json.loads(out.stdout)
    assert out.exit_code == 1 and data["status"] == "WARNING"
    (problem,) = data["problems"]
    assert problem["kind"] == "unreachable" and problem["name"] == NAME


def test_nothing_installed_and_unknown_names(world: AgentWorld) -> None:
    world.add(NAME, key="ec256")
    world.write_config(world.entry(NAME))
    code, lines = check(world)
    assert code == 1 and lines[1].startswith(f"WARNING: {NAME} (files): no certificate installed")
    code, lines = check(world, "other.example.test")
    assert code == 3
    assert lines[0] == ("LECENTRAL-INSTALL UNKNOWN - no [[cert]] entry named other.example.test "
                        "in this host's install.toml")


def test_database_unreachable_is_unknown(world: AgentWorld) -> None:
    world.add(NAME, key="ec256")
    world.issue(NAME, days=90, start=days_ago(1))
    world.write_config(world.entry(NAME))
    world.run("run")
    world.write_config(world.entry(NAME), database="sqlite:////nonexistent/dir/db.sqlite")
    code, lines = check(world)
    assert code == 3
    assert lines[0].startswith("LECENTRAL-INSTALL UNKNOWN - database: database file "
                               "/nonexistent/dir/db.sqlite does not exist")
    assert f"{NAME}=89;22.50;9;;90" in lines[0]  # what is installed is still measured


@pytest.mark.parametrize("args", [["--critical", "9", "--warning", "3"], ["--stale-after", "-1"],
                                  ["--nope"]])
def test_usage_errors_are_unknown(world: AgentWorld, args: list[str]) -> None:
    world.write_config()
    assert world.run("check", *args, json_output=False).exit_code == 3


def test_bad_install_toml_is_unknown(world: AgentWorld) -> None:
    world.config_path.write_text("[agent]\nnope = 1\n")
    out = world.run("check", json_output=False)
    assert out.exit_code == 3
    assert out.stdout.startswith("LECENTRAL-INSTALL UNKNOWN - cannot check: ")
    assert "nope" in out.stdout
