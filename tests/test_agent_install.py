"""``lecentral-install run`` at the file level: first install, no-op, dry run, every refusal.

Certificates come from Pebble (ordered as the renew job does) where the test is about the normal
flow, and from a local test CA where a validity Pebble cannot give is needed (expired, newer by
minutes). The store is SQLite in tmp_path; mail goes to aiosmtpd, syslog to a local socket.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

from agent_world import Mailbox, PebbleOrders, SyslogSocket, temp_files, tree
from lecentral_testing.agent import AgentWorld, TestCA

from lecentral.certificates import Certificate

NAME = "www.example.test"
UTC = dt.UTC


def counter_command(path: Path) -> str:
    """A reload command that appends a line to ``path`` (to count reloads)."""
    return f"sh -c 'echo reload >> {path}'"


def test_first_install_writes_the_set(world: AgentWorld, agent_pebble: PebbleOrders,
                                      smtp: tuple[Mailbox, int], syslog: SyslogSocket) -> None:
    """A Pebble certificate lands as cert, chain, fullchain and combined, the reload runs once,
    and mail and syslog say so."""
    key = world.add(NAME, key="rsa2048")
    leaf = agent_pebble.issue(world, NAME)
    row = world.store.get(NAME)
    assert row is not None and row.ca
    reloads = world.workdir / "reloads"
    combined = world.ssl / "private" / f"{NAME}.pem"
    world.write_config(world.entry(NAME, combined=str(combined), reload=counter_command(reloads)))

    out = world.run("run")

    assert out.exit_code == 0, out.stderr
    result = out.by_name(NAME)
    assert result["status"] == "installed" and "first install" in result["message"]
    assert result["fingerprint"] == leaf.fingerprint
    certs = world.ssl / "certs"
    assert Certificate.load((certs / f"{NAME}.crt").read_bytes()).fingerprint == leaf.fingerprint
    assert (certs / f"{NAME}.ca").read_bytes() == row.ca
    assert (certs / f"{NAME}.full").read_bytes() == leaf.pem + row.ca
    assert combined.read_bytes() == key.read_bytes() + leaf.pem + row.ca
    assert stat.S_IMODE(combined.stat().st_mode) == 0o600  # key-bearing, nothing configured
    assert stat.S_IMODE((certs / f"{NAME}.crt").stat().st_mode) == 0o644
    assert reloads.read_text().count("reload") == 1
    assert any("new certificate installed" in s for s in smtp[0].subjects())
    assert leaf.fingerprint in smtp[0].bodies()
    assert any("new certificate installed" in line for line in syslog.lines())
    assert not temp_files(world.ssl)


def test_second_run_does_nothing(world: AgentWorld) -> None:
    """Right after a successful run: nothing written, nothing reloaded, no mail."""
    world.add(NAME)
    world.issue(NAME)
    reloads = world.workdir / "reloads"
    world.write_config(world.entry(NAME, reload=counter_command(reloads)))
    assert world.run("run").exit_code == 0
    before = tree(world.ssl)
    mtimes = {p: p.stat().st_mtime_ns for p in (world.ssl / "certs").iterdir()}

    out = world.run("run")

    assert out.exit_code == 0
    assert out.by_name(NAME)["status"] == "up-to-date"
    assert tree(world.ssl) == before
    assert {p: p.stat().st_mtime_ns for p in (world.ssl / "certs").iterdir()} == mtimes
    assert reloads.read_text().count("reload") == 1


def test_a_damaged_row_behind_an_installed_certificate_is_never_up_to_date(
        world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """The installed leaf is the database's, but the row's chain was damaged afterwards (a bad
    restore, a hand edit): the agent says so, exits 1 and alerts every run, and touches nothing;
    status says it too. (It used to say "up to date".)"""
    from sqlalchemy import text

    world.add(NAME)
    world.issue(NAME)
    world.write_config(world.entry(NAME))
    assert world.run("run").exit_code == 0
    before = tree(world.ssl)
    with world.store.engine.begin() as conn:
        conn.execute(text("UPDATE certs SET ca = :ca WHERE name = :n"), {"ca": b"garbage", "n": NAME})

    out = world.run("run")

    assert out.exit_code == 1
    result = out.by_name(NAME)
    assert result["status"] == "failed", result
    assert "the installed certificate is the database's, but the database row is damaged" in \
        result["message"]
    assert tree(world.ssl) == before
    assert any("NOT installed" in s or "damaged" in s for s in smtp[0].subjects()), smtp[0].subjects()
    status = world.run("status")
    assert status.exit_code != 0 and "up to date" not in status.stdout


def test_dry_run_changes_nothing(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """--dry-run lists the files and commands, and writes, reloads and sends nothing."""
    world.add(NAME)
    world.issue(NAME)
    reloads = world.workdir / "reloads"
    world.write_config(world.entry(NAME, reload=counter_command(reloads)))
    before = tree(world.ssl)

    out = world.run("run", "--dry-run", json_output=False)

    assert out.exit_code == 0, out.stderr
    assert f"{NAME}: would-install: first install" in out.stdout
    assert f"write {world.ssl}/certs/{NAME}.crt" in out.stdout
    assert "then: reload: sh -c" in out.stdout
    assert tree(world.ssl) == before
    assert not reloads.exists() and not world.state_dir.exists()
    assert smtp[0].messages == []


def test_renewal_replaces_the_set_and_keeps_backups(world: AgentWorld) -> None:
    """A newer certificate replaces the set; the previous files are kept as a backup with their
    mode, and --keep limits the generations."""
    world.add(NAME)
    world.issue(NAME, days=30)
    world.write_config(world.entry(NAME))
    assert world.run("run").exit_code == 0
    first = (world.ssl / "certs" / f"{NAME}.crt").read_bytes()
    fingerprints = []
    for days in (40, 50, 60):
        fingerprints.append(world.issue(NAME, days=days).fingerprint)
        out = world.run("run", "--keep", "2")
        assert out.by_name(NAME)["status"] == "installed", out.stdout
        assert "newer certificate" in out.by_name(NAME)["message"]
    installed = Certificate.load((world.ssl / "certs" / f"{NAME}.crt").read_bytes())
    assert installed.fingerprint == fingerprints[-1]
    backups = sorted((world.state_dir / "entries" / f"files-{NAME}" / "backups").iterdir())
    assert len(backups) == 2
    assert Certificate.load((backups[-1] / "cert").read_bytes()).fingerprint == fingerprints[-2]
    assert (backups[0] / "cert").read_bytes() != first  # the oldest generation was pruned
    # the CA did not change: the chain file was left alone, so it is in no backup
    assert not (backups[-1] / "chain").exists()


def test_ca_file_installed_when_md5_ca_changes(world: AgentWorld) -> None:
    """The seed's rule: the chain file is rewritten only when the CA (md5_ca) changed. Each run
    is checked: what it reports, and which files it replaced."""
    world.add(NAME)
    world.issue(NAME, days=30)
    world.write_config(world.entry(NAME))
    first = world.run("run")
    assert first.exit_code == 0 and first.by_name(NAME)["status"] == "installed"
    assert "first install" in first.by_name(NAME)["message"]
    certs = world.ssl / "certs"
    chain, crt = certs / f"{NAME}.ca", certs / f"{NAME}.crt"
    assert chain.read_bytes() == world.ca.pem
    inode, crt_inode = chain.stat().st_ino, crt.stat().st_ino

    same_ca = world.issue(NAME, days=40)
    second = world.run("run")
    assert second.exit_code == 0 and second.by_name(NAME)["status"] == "installed"
    assert "newer certificate" in second.by_name(NAME)["message"]
    assert second.by_name(NAME)["fingerprint"] == same_ca.fingerprint
    assert str(chain) not in second.by_name(NAME)["paths"] and str(crt) in second.by_name(NAME)["paths"]
    assert chain.stat().st_ino == inode and crt.stat().st_ino != crt_inode  # same CA: untouched
    assert world.run("run").by_name(NAME)["status"] == "up-to-date"

    old_ca = world.ca.pem
    world.ca = TestCA("another CA")
    other_ca = world.issue(NAME, days=50)
    third = world.run("run")
    result = third.by_name(NAME)
    assert third.exit_code == 0 and result["status"] == "installed", result
    assert result["fingerprint"] == other_ca.fingerprint and str(chain) in result["paths"]
    assert chain.read_bytes() == world.ca.pem != old_ca and chain.stat().st_ino != inode
    assert Certificate.load(crt.read_bytes()).fingerprint == other_ca.fingerprint
    assert world.run("run").by_name(NAME)["status"] == "up-to-date"


def test_expired_certificate_is_not_installed(world: AgentWorld) -> None:
    world.add(NAME)
    world.issue(NAME, start=dt.datetime.now(UTC) - dt.timedelta(days=100), days=90)
    world.write_config(world.entry(NAME))

    out = world.run("run")

    assert out.exit_code == 0
    result = out.by_name(NAME)
    assert result["status"] == "skipped" and "expired" in result["message"]
    assert list((world.ssl / "certs").iterdir()) == []


def test_reissue_within_an_hour_is_installed_but_never_an_older_one(world: AgentWorld) -> None:
    """The seed's hour of tolerance only guards against going backwards: a certificate reissued
    50 minutes after the installed one is a different certificate and is installed (it used to be
    "up to date" forever); one that expires more than an hour before the installed one never
    replaces it."""
    world.add(NAME)
    start = dt.datetime.now(UTC) - dt.timedelta(minutes=5)
    world.issue(NAME, start=start, days=60)
    world.write_config(world.entry(NAME))
    assert world.run("run").by_name(NAME)["status"] == "installed"

    reissued = world.issue(NAME, start=start + dt.timedelta(minutes=50), days=60)
    out = world.run("run")
    result = out.by_name(NAME)
    assert result["status"] == "installed" and "reissued certificate" in result["message"], result
    crt = world.ssl / "certs" / f"{NAME}.crt"
    assert Certificate.load(crt.read_bytes()).fingerprint == reissued.fingerprint
    assert world.run("run").by_name(NAME)["status"] == "up-to-date"

    installed = crt.read_bytes()
    world.issue(NAME, start=start, days=30)
    out = world.run("run")
    assert out.exit_code == 0
    assert out.by_name(NAME)["status"] == "skipped" and "newer than the database" in \
        out.by_name(NAME)["message"]
    assert crt.read_bytes() == installed


def test_disabled_row_and_row_without_certificate_are_skipped(world: AgentWorld) -> None:
    world.add(NAME, enable=False)
    world.issue(NAME)
    world.add("new.example.test")
    world.write_config(world.entry(NAME), world.entry("new.example.test"))

    out = world.run("run")

    assert out.exit_code == 0
    assert "disabled" in out.by_name(NAME)["message"]
    assert "no certificate in the database" in out.by_name("new.example.test")["message"]
    assert list((world.ssl / "certs").iterdir()) == []


def test_missing_file_is_written_again(world: AgentWorld) -> None:
    """A configured file that disappeared (or was added to the config later) is written again."""
    world.add(NAME)
    world.issue(NAME)
    world.write_config(world.entry(NAME))
    world.run("run")
    (world.ssl / "certs" / f"{NAME}.full").unlink()

    out = world.run("run")

    assert out.by_name(NAME)["status"] == "installed" and "missing" in out.by_name(NAME)["message"]
    assert (world.ssl / "certs" / f"{NAME}.full").exists()


def test_one_broken_entry_does_not_stop_the_others(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """An unknown key or an uninstalled service plugin fails that entry only, with the fix named."""
    world.add(NAME)
    world.issue(NAME)
    world.write_config(world.entry("bad.example.test", colour="blue"),
                       world.entry("post.example.test", service="nosuchd"), world.entry(NAME))

    out = world.run("run")

    assert out.exit_code == 1
    assert out.by_name(NAME)["status"] == "installed"
    assert "unknown key 'cert[0].colour'" in out.by_name("bad.example.test")["message"]
    missing = out.by_name("post.example.test")["message"]
    assert "no service plugin named 'nosuchd'" in missing and "check the service name" in missing
    assert "pip install" not in missing  # never a package named after what was typed
    assert any("configuration error" in s for s in smtp[0].subjects())


def test_action_mail_asks_an_operator(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """action = "mail": files in place, no reload, an operator is asked to restart by hand."""
    world.add(NAME)
    world.issue(NAME)
    reloads = world.workdir / "reloads"
    world.write_config(world.entry(NAME, action="mail", service="files",
                                   reload=counter_command(reloads)))

    out = world.run("run")

    assert out.by_name(NAME)["status"] == "installed"
    assert not reloads.exists()
    assert any("restart files on" in s and "by hand" in s for s in smtp[0].subjects())


def test_action_reboot_runs_the_reboot_command_once(world: AgentWorld) -> None:
    marker = world.workdir / "rebooted"
    world.agent["reboot_command"] = counter_command(marker)
    for name in (NAME, "two.example.test"):
        world.add(name)
        world.issue(name)
    world.write_config(world.entry(NAME, action="reboot"), world.entry("two.example.test", action="reboot"))

    out = world.run("run")

    assert out.exit_code == 0
    assert marker.read_text().count("reload") == 1


def test_unknown_name_on_the_command_line(world: AgentWorld) -> None:
    world.write_config(world.entry(NAME))
    out = world.run("run", "nosuch.example.test")
    assert out.exit_code == 1  # an unknown NAME is 1 in every command of both CLIs (was 2 here)
    assert "lecentral-install: error: nosuch.example.test not configured" in out.stderr


def test_only_the_named_certificates_run(world: AgentWorld) -> None:
    for name in (NAME, "two.example.test"):
        world.add(name)
        world.issue(name)
    world.write_config(world.entry(NAME), world.entry("two.example.test"))
    out = world.run("run", "two.example.test")
    assert [r["name"] for r in out.results] == ["two.example.test"]
    assert not (world.ssl / "certs" / f"{NAME}.crt").exists()


def test_quiet_prints_nothing_on_success(world: AgentWorld) -> None:
    world.add(NAME)
    world.issue(NAME)
    world.write_config(world.entry(NAME))
    out = world.run("run", "--quiet", json_output=False)
    assert out.exit_code == 0 and out.stdout == "" and out.stderr == ""


def test_summary_lines(world: AgentWorld) -> None:
    world.add(NAME)
    world.issue(NAME)
    world.write_config(world.entry(NAME))
    out = world.run("run", json_output=False)
    assert out.stdout.startswith(f"{NAME}: installed: first install")
    assert world.run("run", json_output=False).stdout.startswith(f"{NAME}: up-to-date: up to date")


def test_another_run_holding_the_lock(world: AgentWorld) -> None:
    import fcntl

    world.add(NAME)
    world.issue(NAME)
    world.write_config(world.entry(NAME))
    world.state_dir.mkdir(mode=0o700)
    with open(world.state_dir / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        out = world.run("run")
    assert out.exit_code == 7 and "another lecentral-install run holds" in out.stderr
    assert not (world.ssl / "certs" / f"{NAME}.crt").exists()
    assert os.path.exists(world.state_dir / "lock")


def test_unusable_state_directory(world: AgentWorld) -> None:
    world.add(NAME)
    world.issue(NAME)
    world.state_dir.write_text("not a directory\n")
    world.write_config(world.entry(NAME))
    out = world.run("run")
    assert out.exit_code == 7 and f"cannot use the state directory {world.state_dir}" in out.stderr
    assert not (world.ssl / "certs" / f"{NAME}.crt").exists()


def test_action_syslog_only_logs(world: AgentWorld, syslog: SyslogSocket) -> None:
    world.add(NAME)
    world.issue(NAME)
    reloads = world.workdir / "reloads"
    world.write_config(world.entry(NAME, action="syslog", reload=counter_command(reloads)))

    out = world.run("run")

    assert out.by_name(NAME)["status"] == "installed"
    assert "logged; the service was not restarted" in out.by_name(NAME)["message"]
    assert not reloads.exists()
    assert any(f"{NAME}: new certificate installed" in line for line in syslog.lines())


def test_combined_order_cert_then_key(world: AgentWorld) -> None:
    """lighttpd's ssl.pemfile: leaf then key, no chain; still key-bearing, so 0600."""
    key = world.add(NAME)
    leaf = world.issue(NAME)
    pem = world.ssl / "private" / f"{NAME}.pem"
    world.write_config(world.entry(NAME, combined=str(pem), combined_order=["cert", "key"]))
    assert world.run("run").by_name(NAME)["status"] == "installed"
    assert pem.read_bytes() == leaf.pem + key.read_bytes()
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
