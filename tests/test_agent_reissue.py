"""A certificate reissued within an hour of the installed one, and staged key rotation.

The flows an operator follows, through the real ``lecentral-install`` and ``lecentral`` CLIs, with
real Pebble certificates: more names (``csr --san`` + ``set-csr`` + renew), a new key
(``csr --rotate``), a new CA (a second Pebble: Pebble makes new roots at every start). Pebble's
leaves all expire at the same distance from their issuance, so each reissue expires within
seconds of the installed one: the seed's "newer by an hour" compare called them up to date
forever. The renew job's part (``lecentral renew --force NAME``) is ``PebbleOrders.issue``: the
same ACME client and the same ``save_issued`` without the DNS-01 round (Pebble is always-valid).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from agent_world import Mailbox, PebbleOrders, temp_files, tree
from click.testing import CliRunner
from lecentral_testing.agent import AgentWorld
from lecentral_testing.pebble import PebbleServer
from test_agent_safety import KILLER

from lecentral.certificates import Certificate, load_private_key_public, md5_modulus
from lecentral.install.csr import KeySpec, write_key

NAME = "www.example.test"
ALT = "alt.example.test"


def central(world: AgentWorld, *args: str) -> None:
    """``lecentral --config lecentral.toml ARGS`` on the central host (the same database)."""
    from lecentral.cli.central import main

    config = world.workdir / "lecentral.toml"
    config.write_text(f'[database]\nurl = "{world.db_url}"\n')
    result = CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def status(world: AgentWorld) -> tuple[int, dict[str, Any]]:
    out = world.run("status", "--json")
    (row,) = json.loads(out.stdout)["certs"]
    return out.exit_code, row


def assert_status_matches(world: AgentWorld) -> None:
    """After a run: status says up to date, and the installed certificate is the database's."""
    code, row = status(world)
    assert code == 0 and row["state"].startswith("up to date"), row
    assert row["installed"]["fingerprint"] == row["database"]["fingerprint"]


def first_install(world: AgentWorld, pebble: PebbleOrders, **entry: Any) -> Certificate:
    world.add(NAME)
    leaf = pebble.issue(world, NAME)
    world.write_config(world.entry(NAME, **entry))
    out = world.run("run")
    assert out.by_name(NAME)["status"] == "installed", out.stdout + out.stderr
    return leaf


def installed(world: AgentWorld) -> Certificate:
    return Certificate.load((world.ssl / "certs" / f"{NAME}.crt").read_bytes())


def key_of(path: Path) -> str:
    return md5_modulus(load_private_key_public(path))


def test_more_names_reissued_within_the_hour_is_installed(world: AgentWorld,
                                                          agent_pebble: PebbleOrders) -> None:
    """csr --san + set-csr + renew --force: the new certificate (same key, one more name) expires
    seconds after the installed one; status says "to install" and the run installs it."""
    first = first_install(world, agent_pebble)
    key = world.key_path(NAME)
    csr_file = world.workdir / "more.csr"
    made = world.run("csr", NAME, "--key", str(key), "--san", ALT, "--out", str(csr_file))
    assert made.exit_code == 0 and "reused the existing key" in made.stderr, made.stderr
    central(world, "set-csr", NAME, str(csr_file))
    new = agent_pebble.issue(world, NAME)
    assert abs(new.not_after - first.not_after) < 3600 and new.names == [NAME, ALT]

    code, row = status(world)
    assert code == 0 and row["state"].startswith("to install: reissued certificate for "
                                                 f"{NAME}, {ALT}"), row
    assert row["installed"]["fingerprint"] == first.fingerprint != row["database"]["fingerprint"]
    out = world.run("run")

    assert out.exit_code == 0 and out.by_name(NAME)["status"] == "installed", out.results
    assert installed(world).fingerprint == new.fingerprint and installed(world).names == [NAME, ALT]
    assert world.run("run").by_name(NAME)["status"] == "up-to-date"
    assert_status_matches(world)


def test_new_ca_reissued_within_the_hour_installs_leaf_and_chain(world: AgentWorld,
                                                                 agent_pebble: PebbleOrders) -> None:
    """A new leaf from a new CA root (Pebble restarted: new roots), expiring within the hour of
    the installed one: leaf and chain file are both replaced."""
    first_install(world, agent_pebble)
    with PebbleServer(world.workdir / "pebble2", env={"PEBBLE_VA_ALWAYS_VALID": "1"}) as pebble:
        restarted = PebbleOrders(pebble, world.workdir)
        try:
            new = restarted.issue(world, NAME)
        finally:
            restarted.close()
    row = world.store.get(NAME)
    assert row is not None
    chain = world.ssl / "certs" / f"{NAME}.ca"
    assert chain.read_bytes() != row.ca

    out = world.run("run")

    assert out.by_name(NAME)["status"] == "installed", out.results
    assert installed(world).fingerprint == new.fingerprint
    assert chain.read_bytes() == row.ca
    assert (world.ssl / "certs" / f"{NAME}.full").read_bytes() == new.pem + row.ca
    assert_status_matches(world)


def test_new_chain_for_the_same_leaf_is_installed(world: AgentWorld) -> None:
    """md5_ca changed, the leaf did not (the CA's certificate was reissued with the same key): the
    chain and fullchain files are rewritten; the leaf file is left alone."""
    world.add(NAME)
    world.issue(NAME)
    world.write_config(world.entry(NAME))
    assert world.run("run").by_name(NAME)["status"] == "installed"
    certs = world.ssl / "certs"
    leaf_inode = (certs / f"{NAME}.crt").stat().st_ino
    row = world.store.get(NAME)
    assert row is not None and row.crt
    reissued_ca = world.ca.reissued()
    world.store.save_issued(NAME, row.crt, reissued_ca, row.ts_expire, row.ts_last_update)

    code, state = status(world)
    assert code == 0 and state["state"].startswith("to install:") and "new CA chain" in state["state"]
    out = world.run("run")

    result = out.by_name(NAME)
    assert result["status"] == "installed" and "new CA chain" in result["message"], result
    assert (certs / f"{NAME}.ca").read_bytes() == reissued_ca
    assert (certs / f"{NAME}.full").read_bytes() == row.crt + reissued_ca
    assert (certs / f"{NAME}.crt").stat().st_ino == leaf_inode
    assert world.run("run").by_name(NAME)["status"] == "up-to-date"


def rotate(world: AgentWorld, pebble: PebbleOrders, how: str = "--rotate") -> tuple[bytes, Certificate]:
    """csr --rotate (or --force), set-csr, renew: return the old key's bytes and the new certificate."""
    key = world.key_path(NAME)
    old = key.read_bytes()
    csr_file = world.workdir / "rotated.csr"
    made = world.run("csr", NAME, "--key", str(key), how, "--out", str(csr_file))
    assert made.exit_code == 0, made.stderr
    assert key.read_bytes() == old and "stays in use until" in made.stderr
    assert f"lecentral set-csr {NAME} rotated.csr and lecentral renew --force {NAME}" in made.stderr
    central(world, "set-csr", NAME, str(csr_file))
    return old, pebble.issue(world, NAME)


def test_staged_rotation_switches_key_and_certificate_together(world: AgentWorld,
                                                               agent_pebble: PebbleOrders) -> None:
    """csr --rotate leaves the live key alone until the certificate for the new key is in the
    database; then one run switches key, certificate and the key-bearing combined file together,
    the new key takes the old one's owner and mode, the old key stays in the backups, KEY.next goes."""
    combined = world.ssl / "private" / f"{NAME}.pem"
    first_install(world, agent_pebble, combined=str(combined))
    key, pending = world.key_path(NAME), world.key_path(NAME).with_name(f"{NAME}.key.next")
    os.chown(key, 0, 65534)
    os.chmod(key, 0o640)  # the daemon's group reads it
    old = key.read_bytes()

    made = world.run("csr", NAME, "--key", str(key), "--rotate")
    assert made.exit_code == 0 and "stays in use until" in made.stderr, made.stderr
    assert key.read_bytes() == old and stat.S_IMODE(pending.stat().st_mode) == 0o600
    again = world.run("csr", NAME, "--key", str(key), "--rotate")
    assert "reused the pending new key" in again.stderr and again.stdout == made.stdout
    out = world.run("run")  # nothing for the new key yet: the live pair stays, and says so
    assert out.by_name(NAME)["status"] == "up-to-date"
    assert f"the new key {pending} waits for its certificate" in out.by_name(NAME)["message"]
    (world.workdir / "rotated.csr").write_text(made.stdout)
    central(world, "set-csr", NAME, str(world.workdir / "rotated.csr"))
    assert world.run("run").by_name(NAME)["status"] == "up-to-date"  # renew has not run yet
    new = agent_pebble.issue(world, NAME)
    new_key = pending.read_bytes()

    code, row = status(world)
    assert code == 0 and "for the new key" in row["state"] and row["state"].startswith("to install")
    before = tree(world.ssl)
    dry = world.run("run", "--dry-run", json_output=False)
    assert f"write {key} (key: the new key {pending}" in dry.stdout, dry.stdout
    assert tree(world.ssl) == before
    out = world.run("run")

    result = out.by_name(NAME)
    assert result["status"] == "installed" and "key and certificate switched together" in result["message"]
    assert key.read_bytes() == new_key and not pending.exists()
    st = key.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 65534, 0o640)
    assert installed(world).fingerprint == new.fingerprint and key_of(key) == new.md5_modulus
    assert combined.read_bytes().startswith(new_key)
    backups = sorted((world.state_dir / "entries" / f"files-{NAME}" / "backups").iterdir())
    assert (backups[-1] / "key").read_bytes() == old
    assert stat.S_IMODE((backups[-1] / "key").stat().st_mode) == 0o640
    assert not temp_files(world.ssl)
    assert world.run("run").by_name(NAME)["status"] == "up-to-date"
    assert_status_matches(world)


def test_rotation_killed_in_the_switch_is_finished_by_the_next_run(world: AgentWorld,
                                                                   agent_pebble: PebbleOrders) -> None:
    """``csr --force`` (staged too), then SIGKILL right after the certificate was renamed into
    place, before the key: the files disagree; the next run finishes the journaled switch (key
    included) and activates it."""
    reloads = world.workdir / "reloads"
    first_install(world, agent_pebble, reload=f"sh -c 'echo reload >> {reloads}'")
    key, pending = world.key_path(NAME), world.key_path(NAME).with_name(f"{NAME}.key.next")
    old, new = rotate(world, agent_pebble, "--force")
    new_key = pending.read_bytes()
    certs = world.ssl / "certs"

    killed = subprocess.run([sys.executable, "-c", KILLER, str(certs), "--config",
                             str(world.config_path), "run"], capture_output=True, text=True, check=False)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert installed(world).fingerprint == new.fingerprint and key.read_bytes() == old  # a mix
    out = world.run("run")

    result = out.by_name(NAME)
    assert result["status"] == "installed" and "interrupted" in result["message"], result
    assert key.read_bytes() == new_key and key_of(key) == installed(world).md5_modulus
    assert not pending.exists() and not temp_files(world.ssl)
    assert reloads.read_text().count("reload") == 2
    assert world.run("run").by_name(NAME)["status"] == "up-to-date"


def test_rotation_rolled_back_keeps_the_new_key_for_the_next_run(world: AgentWorld,
                                                                 agent_pebble: PebbleOrders,
                                                                 smtp: tuple[Mailbox, int]) -> None:
    """The config test fails with the new pair: the old key and certificate come back, KEY.next
    stays, and the next run (the config fixed) switches them."""
    broken = world.workdir / "broken"
    first_install(world, agent_pebble, check=f"sh -c 'test ! -e {broken}'")
    key, pending = world.key_path(NAME), world.key_path(NAME).with_name(f"{NAME}.key.next")
    old, new = rotate(world, agent_pebble)
    new_key = pending.read_bytes()
    broken.touch()
    before = tree(world.ssl)

    out = world.run("run")

    assert out.exit_code == 1 and out.by_name(NAME)["status"] == "rolled-back"
    assert tree(world.ssl) == before and key.read_bytes() == old and pending.read_bytes() == new_key
    assert any("rolled back" in s for s in smtp[0].subjects())
    broken.unlink()
    assert world.run("run").by_name(NAME)["status"] == "installed"
    assert key.read_bytes() == new_key and not pending.exists()
    assert installed(world).fingerprint == new.fingerprint


def test_key_replaced_at_once_is_an_alert_until_its_certificate_is_installed(
        world: AgentWorld, agent_pebble: PebbleOrders, smtp: tuple[Mailbox, int]) -> None:
    """The key on disk was replaced at once (``csr --force`` before it was staged, or by hand):
    the installed certificate no longer matches it, and the daemon fails at its next restart.
    Every run alerts (never "up to date") until the certificate for the new key arrives; then it
    is installed even though it expires within the hour of the installed one."""
    first_install(world, agent_pebble)
    key = world.key_path(NAME)
    write_key(key, KeySpec().generate(), force=True)
    before = tree(world.ssl)

    out = world.run("run")

    assert out.exit_code == 1
    result = out.by_name(NAME)
    assert result["status"] == "failed" and f"does not match the private key {key}" in result["message"]
    assert f"lecentral set-csr {NAME}" in result["message"]
    assert tree(world.ssl) == before
    assert any(f"{NAME}: NOT installed" in s for s in smtp[0].subjects())
    code, row = status(world)
    assert code == 1 and row["error"] and not row["state"].startswith("up to date")

    csr_file = world.workdir / "new.csr"
    assert world.run("csr", NAME, "--key", str(key), "--out", str(csr_file)).exit_code == 0
    central(world, "set-csr", NAME, str(csr_file))
    new = agent_pebble.issue(world, NAME)
    out = world.run("run")
    assert out.by_name(NAME)["status"] == "installed", out.results
    assert installed(world).fingerprint == new.fingerprint and key_of(key) == new.md5_modulus
    assert_status_matches(world)


def test_csr_rotate_needs_a_key(tmp_path: Path) -> None:
    from lecentral.cli.agent import main

    result = CliRunner().invoke(main, ["csr", NAME, "--key", str(tmp_path / "k"), "--rotate"])
    assert result.exit_code == 5 and "nothing to rotate" in result.stderr
    assert list(tmp_path.iterdir()) == []
