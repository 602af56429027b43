"""A problem of the run's configuration is the operator's, not the certificates': an ACME account
key that cannot be created or read, a TSIG key file that cannot be read. Each is said once (one
error, one alert, exit 2); the rows it stopped are BLOCKED with their failure counts, event logs
and alerts untouched. A key file of one zone stops that zone's rows only; the others are issued.
Real Pebble, BIND and SMTP server (renew_world, agent_world)."""

from __future__ import annotations

import dataclasses
import json
from email.message import Message
from pathlib import Path

import pytest
from agent_world import Mailbox
from click.testing import CliRunner
from lecentral_testing.ports import LOOPBACK
from renew_world import (
    World,
    add_row,
    make_config,
    new_zone,
    open_store,
    run,
    write_toml,
)

from lecentral.cli.central import main
from lecentral.config import CentralConfig, NotifyConfig, ZoneConfig
from lecentral.store.sql import SqlStore


def mailed(config: CentralConfig, smtp: tuple[Mailbox, int]) -> CentralConfig:
    return dataclasses.replace(config, notify=NotifyConfig(mail_to=["ops@example.test"],
                                                           smtp=f"{LOOPBACK}:{smtp[1]}"))


def with_account_key(config: CentralConfig, path: str) -> CentralConfig:
    return dataclasses.replace(config, acme=dataclasses.replace(config.acme, account_key=path))


def subject(mail: Message) -> str:
    return " ".join(str(mail["Subject"]).split())  # unfolded


def assert_untouched(store: SqlStore, names: list[str]) -> None:
    """No failure counted, no event but the row's creation, no certificate."""
    for name in names:
        row = store.get(name)
        assert row is not None and row.count_fail_update == 0 and not row.crt, name
        assert [e.kind for e in store.events(name)] == ["added"], name


@pytest.mark.parametrize("where", ["missing directory", "a directory"])
def test_an_unusable_account_key_is_one_error_of_the_run(
        dns_world: World, tmp_path: Path, smtp: tuple[Mailbox, int], where: str) -> None:
    """/proc/nonexistent/account.key cannot be created; a directory cannot be read as a key (the
    service user's unreadable key, as root can read any file): one problem, one alert."""
    path = "/proc/nonexistent/account.key" if where == "missing directory" else str(tmp_path)
    config = mailed(with_account_key(make_config(dns_world, tmp_path), path), smtp)
    store = open_store(config)
    names = [new_zone(dns_world, f"acctkey{i}") for i in range(3)]
    for name in names:
        add_row(store, [name])
    try:
        report = run(config, store, force=True)
        assert {o.name: o.status for o in report.final} == dict.fromkeys(names, "blocked")
        (problem,) = report.problems
        assert problem.exit_code == 2 and sorted(problem.names) == sorted(names)
        verb = "create" if where == "missing directory" else "read"
        assert problem.message.startswith(f"cannot {verb} the ACME account key {path} "
                                          "([acme] account_key): ")
        assert "lecentral runs as user root (uid 0)" in problem.message
        assert not report.ok
        assert_untouched(store, names)
    finally:
        store.close()
    (mail,) = smtp[0].messages  # one alert for the run, none per certificate
    assert subject(mail) == "[lecentral] ERROR: renew: configuration problem, 3 certificate(s) not tried"
    body = str(mail.get_payload(decode=True).decode())
    assert problem.message in " ".join(body.split())
    assert not Path("/proc/nonexistent").exists()


def test_the_cli_says_it_once_and_exits_2(dns_world: World, tmp_path: Path) -> None:
    """`lecentral renew --force A B` with the account key in a missing directory."""
    config = with_account_key(make_config(dns_world, tmp_path), "/proc/nonexistent/account.key")
    store = open_store(config)
    names = sorted(new_zone(dns_world, f"acctcli{i}") for i in range(2))
    for name in names:
        add_row(store, [name])
    toml = write_toml(config, tmp_path / "lecentral.toml")
    try:
        result = CliRunner().invoke(main, ["--config", str(toml), "renew", "--force", *names])
        assert result.exit_code == 2, result.output
        errors = [line for line in result.stderr.splitlines() if line.startswith("lecentral: error:")]
        assert errors == [(
            "lecentral: error: cannot create the ACME account key /proc/nonexistent/account.key "
            "([acme] account_key): No such file or directory; lecentral runs as user root (uid 0): "
            "create /proc/nonexistent writable by that user (install -d -o root -m 700 "
            "/proc/nonexistent), or set [acme] account_key to a path in its state directory "
            f"(2 certificate(s) not tried, their failure counts unchanged: {', '.join(names)})")]
        assert result.stdout.count("not tried: the run's error on stderr") == 2
        assert "2 blocked" in result.stdout
        as_json = CliRunner().invoke(main, ["--config", str(toml), "renew", "--force", "--json",
                                            *names])
        assert as_json.exit_code == 2, as_json.output
        data = json.loads(as_json.stdout)
        assert [p["exit_code"] for p in data["problems"]] == [2]
        assert sorted(data["problems"][0]["names"]) == names
        assert [c["status"] for c in data["certificates"]] == ["blocked", "blocked"]
        assert_untouched(store, names)
    finally:
        store.close()


def test_an_account_key_in_a_mistyped_directory_is_never_made(dns_world: World,
                                                               tmp_path: Path) -> None:
    """``account_key = "/var/lib/lecentrl/account.key"`` (a typo, or a state directory not
    mounted): exit 2 naming the directory, which is not made, and no new account registered
    (which would silently abandon the account in use, e.g. an imported one). Then, in the right
    directory, the first run makes the key and says so once on stderr, as a warning."""
    typo = tmp_path / "lecentrl" / "account.key"
    config = with_account_key(make_config(dns_world, tmp_path), str(typo))
    store = open_store(config)
    name = new_zone(dns_world, "typo")
    add_row(store, [name])
    toml = write_toml(config, tmp_path / "lecentral.toml")
    try:
        result = CliRunner().invoke(main, ["--config", str(toml), "renew", "--force", name])
        assert result.exit_code == 2, result.output
        assert (f"lecentral: error: cannot create the ACME account key {typo} ([acme] "
                f"account_key): No such file or directory") in result.stderr
        assert f"create {typo.parent} writable by that user" in result.stderr
        assert not typo.parent.exists()
        assert_untouched(store, [name])
        assert "created a new ACME account key" not in result.stderr

        right = tmp_path / "acme" / "account.key"
        toml = write_toml(with_account_key(config, str(right)), tmp_path / "lecentral.toml")
        first = CliRunner().invoke(main, ["--config", str(toml), "renew", "--force", name])
        assert first.exit_code == 0, first.output
        assert first.stderr.count(f"lecentral: WARNING: created a new ACME account key at {right} "
                                  "(mode 0600): a new account is registered with it") == 1
        again = CliRunner().invoke(main, ["--config", str(toml), "renew", "--force", name])
        assert again.exit_code == 0 and "created a new ACME account key" not in again.stderr
    finally:
        store.close()


def test_an_unreadable_key_file_of_one_zone_blocks_only_its_rows(
        dns_world: World, tmp_path: Path, smtp: tuple[Mailbox, int]) -> None:
    """[dns.zones."Z"] tsig_key_file names a directory: Z's row is blocked (not counted), the
    other row is issued; the run still exits 2 and alerts once, naming the setting."""
    broken, fine = new_zone(dns_world, "keydir"), new_zone(dns_world, "keyok")
    base = make_config(dns_world, tmp_path)
    keydir = tmp_path / "keys"
    keydir.mkdir()
    zones = {**base.dns.zones, broken: ZoneConfig(tsig_key_file=str(keydir))}
    config = mailed(dataclasses.replace(base, dns=dataclasses.replace(base.dns, zones=zones)), smtp)
    store = open_store(config)
    add_row(store, [broken])
    add_row(store, [fine])
    try:
        report = run(config, store)
        assert {o.name: o.status for o in report.final} == {broken: "blocked", fine: "issued"}
        (problem,) = report.problems
        assert problem.names == [broken] and problem.exit_code == 2
        assert problem.message.startswith(
            f'cannot read the TSIG key file {keydir} ([dns.zones."{broken}"] tsig_key_file): '
            "Is a directory; point the setting at the key file")
        assert_untouched(store, [broken])
    finally:
        store.close()
    subjects = [subject(m) for m in smtp[0].messages]
    assert subjects == ["[lecentral] ERROR: renew: configuration problem, 1 certificate(s) not tried"]


def test_check_shows_the_run_problem_once_not_per_certificate(dns_world: World, tmp_path: Path) -> None:
    """The timer's run (no NAME) with the account key in a missing directory: `lecentral check`
    says CRITICAL once, for the renew run, naming the problem; no certificate is failing."""
    config = with_account_key(make_config(dns_world, tmp_path), "/proc/nonexistent/account.key")
    store = open_store(config)
    names = sorted(new_zone(dns_world, f"acctcheck{i}") for i in range(2))
    for name in names:
        add_row(store, [name])
    toml = write_toml(config, tmp_path / "lecentral.toml")
    try:
        result = CliRunner().invoke(main, ["--config", str(toml), "renew"])
        assert result.exit_code == 2, result.output
        check = CliRunner().invoke(main, ["--config", str(toml), "check", "--json"])
        data = json.loads(check.stdout)
        assert (data["status"], check.exit_code) == ("CRITICAL", 2)
        critical = [p for p in data["problems"] if p["severity"] == "CRITICAL"]
        assert [(p["kind"], p["name"]) for p in critical] == [("run-error", None)]
        assert "exited 2 on a configuration problem" in critical[0]["text"]
        assert "cannot create the ACME account key /proc/nonexistent/account.key" in \
            critical[0]["text"]
        assert not [p for p in data["problems"] if p["kind"] in ("failing", "given-up")]
        assert_untouched(store, names)
    finally:
        store.close()


#: run a command as root held to file modes like any service user: without CAP_DAC_OVERRIDE and
#: CAP_DAC_READ_SEARCH (util-linux's setpriv), a file another user owns with mode 0600 is unreadable
AS_SERVICE_USER = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps",
                   "-all", "--"]


@pytest.mark.parametrize("which", ["account key", "TSIG key file"])
def test_a_key_the_service_user_cannot_read(dns_world: World, tmp_path: Path, which: str) -> None:
    """The account key, or [dns] tsig_key_file, owned by another user with mode 0600: one error
    naming the file, the user lecentral runs as and the chown that fixes it; exit 2; the rows
    untouched. (`lecentral renew` runs in a process without the capabilities that let root read
    any file: the real kernel check a service user meets.)"""
    import os
    import shutil
    import subprocess
    import sys

    config = make_config(dns_world, tmp_path)
    keys = tmp_path / "keys"
    keys.mkdir()
    if which == "account key":
        from lecentral.acme.account import load_or_create

        locked = keys / "account.key"
        load_or_create(str(locked))
        config = with_account_key(config, str(locked))
    else:
        locked = keys / "tsig.key"
        shutil.copy(config.dns.tsig_key_file, locked)
        config = dataclasses.replace(config, dns=dataclasses.replace(
            config.dns, tsig_key_file=str(locked), zones={}))
    os.chown(locked, 65534, 65534)  # nobody
    locked.chmod(0o600)
    store = open_store(config)
    names = sorted(new_zone(dns_world, f"locked{i}") for i in range(2))
    for name in names:
        add_row(store, [name])
    toml = write_toml(config, tmp_path / "lecentral.toml")
    try:
        result = subprocess.run([*AS_SERVICE_USER, sys.executable, "-m", "lecentral.cli",
                                 "--config", str(toml), "renew", "--force", *names],
                                capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 2, result.stdout + result.stderr
        (error,) = [line for line in result.stderr.splitlines() if "error" in line]
        if which == "account key":
            assert error.startswith(f"lecentral: error: cannot read the ACME account key {locked} "
                                    "([acme] account_key): Permission denied; lecentral runs as "
                                    "user root (uid 0): the key must be a file that user owns "
                                    f"(chown root {locked} && chmod 600 {locked})")
        else:
            assert error.startswith(f"lecentral: error: TSIG key file {locked} ([dns] "
                                    "tsig_key_file) is not readable by user root (uid 0), whom "
                                    f"lecentral runs as: give it to that user (chown root {locked} "
                                    f"&& chmod 600 {locked})")
        assert error.endswith(f"(2 certificate(s) not tried, their failure counts unchanged: "
                              f"{', '.join(names)})")
        assert_untouched(store, names)
    finally:
        store.close()


def test_a_dead_worker_process_is_alerted_as_such_not_as_a_configuration_problem(
        dns_world: World, tmp_path: Path, smtp: tuple[Mailbox, int]) -> None:
    """[renew] processes = 2 and a worker process that dies (as the OOM killer kills it): the
    run's alert says a worker process died (a new-user trial read "configuration problem" there,
    and looked for a mistake in lecentral.toml that was not there), what became of the
    certificates and what to look at; not "fix it"."""
    from test_renew_errors import registry_with, with_issuer
    from test_renew_processes import DyingPlugin

    from lecentral.renew import RenewJob, RenewRequest

    config = mailed(with_issuer(make_config(dns_world, tmp_path, workers=1, processes=2,
                                            max_failures=0), "dying"), smtp)
    store = open_store(config)
    names = sorted(new_zone(dns_world, "diesmail") for _ in range(4))
    for name in names:
        add_row(store, [name])
    try:
        report = RenewJob(config, store, registry_with(DyingPlugin())).run(RenewRequest(once=True))
        (problem,) = report.problems
        assert problem.names == names[1::2] and problem.exit_code == 1
    finally:
        store.close()
    alerts = [m for m in smtp[0].messages if "not tried" in subject(m)]
    assert [subject(m) for m in alerts] == [
        "[lecentral] ERROR: renew: a worker process died, 2 certificate(s) not tried"]
    body = " ".join(str(alerts[0].get_payload(decode=True).decode()).split())
    assert problem.message in body and "exited with status 3" in body
    assert "The next lecentral renew tries them" in body and "lower [renew] processes" in body
    assert "Fix it" not in body
    # the parent's own certificates failed as certificates do: their own alerts
    assert sorted(s for s in map(subject, smtp[0].messages) if "renewal" in s) == sorted(
        f"[lecentral] WARNING: {name}: renewal failed" for name in names[0::2])


def test_plugin_and_configuration_problems_are_each_named_in_one_alert(
        dns_world: World, tmp_path: Path, smtp: tuple[Mailbox, int]) -> None:
    """A misnamed HTTP-01 issuer (a plugin problem, exit 3) and a zone's key file that is a
    directory (a configuration problem, exit 2) in one run: one alert whose subject names both,
    each problem in its body under its cause."""
    broken = new_zone(dns_world, "mixkey")
    base = make_config(dns_world, tmp_path)
    keydir = tmp_path / "keys"
    keydir.mkdir()
    zones = {**base.dns.zones, broken: ZoneConfig(tsig_key_file=str(keydir))}
    config = mailed(dataclasses.replace(
        base, dns=dataclasses.replace(base.dns, zones=zones),
        renew=dataclasses.replace(base.renew, http01_issuer="certbot-webrot")), smtp)
    store = open_store(config)
    add_row(store, [broken])
    add_row(store, ["web.mix.example.test"], certbot=True, webroot_path=str(tmp_path))
    try:
        report = run(config, store)
        assert sorted(p.exit_code for p in report.problems) == [2, 3]
    finally:
        store.close()
    (mail,) = smtp[0].messages
    assert subject(mail) == ("[lecentral] ERROR: renew: configuration problem and plugin problem, "
                             "2 certificate(s) not tried")
    body = str(mail.get_payload(decode=True).decode())
    assert "\nconfiguration problem: cannot read the TSIG key file" in body
    assert "\nplugin problem: no issuer plugin named 'certbot-webrot'" in body
    assert "Fix it, then run lecentral renew again." in body


def test_check_names_a_plugin_problem_as_such(dns_world: World, tmp_path: Path) -> None:
    """The timer's run stopped by a misnamed issuer (exit 3): `lecentral check` says CRITICAL
    for the run, calling it a plugin problem, not a configuration problem."""
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    name = new_zone(dns_world, "plugcheck")
    add_row(store, [name])
    toml = write_toml(config, tmp_path / "lecentral.toml", dns01_issuer="dns-subzon")
    try:
        result = CliRunner().invoke(main, ["--config", str(toml), "renew"])
        assert result.exit_code == 3, result.output
        check = CliRunner().invoke(main, ["--config", str(toml), "check", "--json"])
        data = json.loads(check.stdout)
        (critical,) = [p for p in data["problems"] if p["severity"] == "CRITICAL"]
        assert critical["kind"] == "run-error"
        assert "exited 3 on a plugin problem" in critical["text"]
        assert "configuration" not in critical["text"]
        assert_untouched(store, [name])
    finally:
        store.close()


def test_a_misnamed_issuer_is_alerted_as_a_plugin_problem(
        dns_world: World, tmp_path: Path, smtp: tuple[Mailbox, int]) -> None:
    """[renew] dns01_issuer names no installed plugin: exit 3, one alert "plugin problem"."""
    from test_renew_errors import with_issuer

    config = mailed(with_issuer(make_config(dns_world, tmp_path), "dns-subzon"), smtp)
    store = open_store(config)
    names = [new_zone(dns_world, f"plugmail{i}") for i in range(2)]
    for name in names:
        add_row(store, [name])
    try:
        (problem,) = run(config, store).problems
        assert problem.exit_code == 3
        assert_untouched(store, names)
    finally:
        store.close()
    (mail,) = smtp[0].messages
    assert subject(mail) == "[lecentral] ERROR: renew: plugin problem, 2 certificate(s) not tried"
    body = str(mail.get_payload(decode=True).decode())
    assert problem.message in " ".join(body.split())
    assert "Fix it, then run lecentral renew again." in body
