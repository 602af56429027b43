"""A renew process killed between adding a challenge TXT and removing it: the next run removes it.

Real parts: Pebble, BIND, SQLite, the ``lecentral renew`` command in its own process. Only the
moment of the ``kill -9`` is chosen: the script below replaces ``wait_propagated`` (called
after the TXT records are added, before they are removed) by a SIGKILL of its own process, or,
with ``child``, of a forked worker process only. The journal (lecentral/journal.py) noted the
records before they were added; the next run, finding the process gone, removes them from BIND
(asked with a real query) or, BIND being down, stores them as leftovers that ``check`` shows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from renew_world import (
    World,
    add_row,
    make_config,
    new_zone,
    open_store,
    run,
    write_toml,
)
from webroot_world import SITES, WebWorld
from webroot_world import add_row as add_web_row
from webroot_world import leftovers as web_leftovers
from webroot_world import make_config as make_web_config

from lecentral import journal
from lecentral.builtin.dns_subzone import DnsSubzoneIssuer
from lecentral.config import CentralConfig
from lecentral.dns.challenge import DnsChallenges, PublishedTxt
from lecentral.hookspecs import hookimpl
from lecentral.plugins import get_plugin_manager
from lecentral.registry import Registry
from lecentral.renew import RenewJob, RenewRequest
from lecentral.types import IssuerContext, IssuerType

KILLED_AFTER_PUBLISH = """
import os, signal, sys
from lecentral.dns.challenge import DnsChallenges
parent = os.getpid()
only_child = sys.argv[2] == "child"
how = int(sys.argv[3])
def killed(self, records):
    if records and (not only_child or os.getpid() != parent):
        os.kill(os.getpid(), how)
    return original(self, records)
original = DnsChallenges.wait_propagated
DnsChallenges.wait_propagated = killed
sys.argv = ["lecentral", "--config", sys.argv[1], "renew", "--once"]
from lecentral.cli.start import central
central()
"""


def killed_run(toml: Path, which: str = "all",
               how: int = signal.SIGKILL) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", KILLED_AFTER_PUBLISH, str(toml), which,
                           str(int(how))],
                          capture_output=True, text=True, timeout=120, check=False)


def txt(world: World, name: str) -> list[str]:
    return world.bind.txt_values(f"_acme-challenge.{name}")


def journals(config: CentralConfig) -> list[Path]:
    directory = journal.journal_dir(config.renew.state_dir)
    return sorted(directory.iterdir()) if directory.exists() else []


def main() -> Any:
    from lecentral.cli.central import main as cli

    return cli


def test_a_renew_stopped_by_sigterm_after_publishing_finishes_its_certificate(
        dns_world: World, tmp_path: Path) -> None:
    """``kill -TERM`` (``systemctl stop``) of ``lecentral renew`` with its TXT record added:
    the certificate in flight is finished (docs/renew.md, "Stopping a run"), so its record is
    removed and no journal is left; exit 143."""
    name = new_zone(dns_world, "termed")
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    add_row(store, [name])
    toml = write_toml(config, tmp_path / "lecentral.toml", processes=1)
    stopped = killed_run(toml, how=signal.SIGTERM)
    assert stopped.returncode == 143, stopped.stderr
    assert "the run was stopped by SIGTERM" in stopped.stderr
    assert txt(dns_world, name) == []
    assert journals(config) == []
    assert store.get(name).crt  # type: ignore[union-attr]
    store.close()


def test_a_renew_killed_after_publishing_leaves_no_txt_after_the_next_run(
        dns_world: World, tmp_path: Path) -> None:
    """``kill -9`` of ``lecentral renew`` with its TXT record added (the OOM killer, a
    ``systemctl stop`` that ran out of time): the record is in BIND and noted in a 0600
    journal; the next run removes it from BIND, says so, deletes the journal."""
    name = new_zone(dns_world, "killed")
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    add_row(store, [name])
    toml = write_toml(config, tmp_path / "lecentral.toml", processes=1)
    killed = killed_run(toml)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (value,) = txt(dns_world, name)  # left in the sub-zone by the killed run
    (path,) = journals(config)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    (line,) = path.read_text().splitlines()
    noted = json.loads(line)
    assert noted["op"] == "add" and noted["value"] == value and noted["zone"] == name
    assert noted["cert"] == name and "secret" not in line.lower()

    again = CliRunner().invoke(main(), ["--config", str(toml), "renew", "--once"])
    assert again.exit_code == 0, again.output
    assert f"removed, left behind by an earlier run: TXT _acme-challenge.{name}. \"{value}\"" \
        in again.output
    assert value not in txt(dns_world, name)
    assert journals(config) == []  # and that run's own journal, all removed, is gone too
    assert store.get(name).crt  # type: ignore[union-attr]  # and the certificate was issued
    store.close()


@pytest.mark.parametrize("case", ["edited", "by-hand"])
def test_a_journal_record_the_zone_does_not_hold_is_not_claimed_removed(
        dns_world: World, tmp_path: Path, case: str) -> None:
    """The record a journal notes is not in the zone: an RFC 2136 delete of it would succeed
    all the same, so the run must not say it removed it (a new-user trial edited a journal's
    value and got "removed, left behind by an earlier run" while the real TXT stayed).
    ``edited``: the zone holds another value there: the journal is refused loudly (exit 1,
    nothing deleted, the journal kept); ``by-hand``: nothing there any more: no claim, the
    journal deleted."""
    name = new_zone(dns_world, f"absent{case[0]}")
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    add_row(store, [name])
    toml = write_toml(config, tmp_path / "lecentral.toml", processes=1)
    assert killed_run(toml).returncode == -signal.SIGKILL
    (value,) = txt(dns_world, name)
    (path,) = journals(config)
    noted = json.loads(path.read_text())
    if case == "edited":
        path.write_text(path.read_text().replace(value, "X" + value[1:]))  # mode kept: 0600
    else:
        fields = {k: noted[k] for k in ("name", "fqdn", "zone", "server", "key_name", "value")}
        DnsChallenges(config.dns).delete(PublishedTxt(**fields))
        assert txt(dns_world, name) == []

    again = CliRunner().invoke(main(), ["--config", str(toml), "renew", "--once"])
    assert "removed, left behind by an earlier run" not in again.output
    if case == "edited":
        assert again.exit_code == 1, again.output
        assert "which the server does not serve; the server serves other TXT values there: " \
            f"'{value}'" in again.output
        assert "the journal does not match what was published" in again.output
        assert txt(dns_world, name) == [value]  # nothing deleted
        assert path in journals(config)
    else:
        assert again.exit_code == 0, again.output
        assert journals(config) == []
    assert store.get(name).crt  # type: ignore[union-attr]  # the run went on with its pass
    store.close()


def test_with_bind_down_at_the_next_run_the_txt_becomes_a_stored_leftover(
        dns_world: World, tmp_path: Path) -> None:
    """The next run cannot reach BIND: the record is stored in lecentral_leftovers (check is
    not OK, the run exits non-zero), the journal is deleted; once BIND is back, the run after
    removes it."""
    name = new_zone(dns_world, "killeddown")
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    add_row(store, [name])
    toml = write_toml(config, tmp_path / "lecentral.toml", processes=1)
    assert killed_run(toml).returncode == -signal.SIGKILL
    (value,) = txt(dns_world, name)
    store.set_enable(name, False)  # the next runs only clean up: nothing else reaches BIND
    dns_world.bind.stop()
    try:
        report = run(config, store)
        assert not report.ok
        (left,) = report.kept
        assert left.kind == "dns-txt" and left.name == name and left.data["value"] == value
        assert "which ended (killed?) before removing it" in left.error
        assert [lo.data["value"] for lo in store.leftovers()] == [value]
        assert journals(config) == []  # its record is stored: the leftovers path has it now
        checked = CliRunner().invoke(main(), ["--config", str(toml), "check"])
        assert checked.exit_code != 0, checked.output
        assert f"_acme-challenge.{name}." in checked.output
    finally:
        dns_world.bind.start()
    assert value in txt(dns_world, name)
    report = run(config, store)
    assert report.ok and [c.data["value"] for c in report.cleaned] == [value]
    assert value not in txt(dns_world, name) and store.leftovers() == []
    store.close()


def test_a_worker_process_killed_alone_leaves_no_txt_after_the_next_run(
        dns_world: World, tmp_path: Path) -> None:
    """``processes = 2``: only the forked worker process is killed after publishing; the parent
    finishes its share, then, still under the lock, removes what the child added (the run
    exits non-zero: its worker process died)."""
    names = sorted(new_zone(dns_world, "childkilled") for _ in range(2))
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    for name in names:
        add_row(store, [name])
    toml = write_toml(config, tmp_path / "lecentral.toml", processes=2, workers=1)
    killed = killed_run(toml, "child")
    assert killed.returncode != 0 and "was killed by signal 9" in killed.stderr, killed.stderr
    parents, child = names[0], names[1]
    assert txt(dns_world, parents) == [] and store.get(parents).crt  # type: ignore[union-attr]
    assert txt(dns_world, child) == [] and journals(config) == []
    assert f"removed, left behind by an earlier run: TXT _acme-challenge.{child}. " \
        in killed.stdout, killed.stdout
    assert "which ended (killed?) before removing it" in killed.stderr
    row = store.get(child)
    assert row is not None and not row.crt and not row.count_fail_update  # blocked, not failed
    store.close()


def test_the_journal_of_a_live_process_is_not_touched(dns_world: World, tmp_path: Path) -> None:
    """A journal whose pid and start time are a running process (a run between its rounds, a
    worker process still removing its records) is left alone."""
    name = new_zone(dns_world, "live")
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        start = journal.process_start(sleeper.pid)
        directory = journal.journal_dir(config.renew.state_dir)
        directory.mkdir(mode=0o700, parents=True)
        path = directory / f"challenges-{sleeper.pid}-{start}.jsonl"
        _write(path, [_add(name, "live-value-1", server=config.dns.server)])
        report = run(config, store)
        assert report.ok and report.cleaned == [] and path.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    report = run(config, store)  # now gone: its record, never published, is not claimed
    assert report.ok and report.cleaned == []
    assert not path.exists()
    store.close()


def _add(zone: str, value: str, **changes: str) -> dict[str, str]:
    return {"op": "add", "kind": "dns-txt", "cert": zone, "name": zone,
            "fqdn": f"_acme-challenge.{zone}.", "zone": zone, "server": "127.0.0.1:53",
            "key_name": "acme-update", "value": value, **changes}


def _write(path: Path, entries: list[dict[str, str]], tail: str = "\n", mode: int = 0o600) -> None:
    text = "\n".join(json.dumps(e) for e in entries) + tail
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.write(fd, text.encode())
    os.close(fd)
    os.chmod(path, mode)


DEAD = "challenges-999999999-1.jsonl"  # no such pid


@pytest.mark.parametrize("case", ["mode", "symlink", "torn", "unknown-field", "bad-op", "name",
                                  "dir-mode"])
def test_a_foreign_or_corrupt_journal_is_refused_loudly(dns_world: World, tmp_path: Path,
                                                        case: str) -> None:
    """A journal that is not lecentral's (mode, symbolic link, directory open to others, a name
    it does not write) or does not parse (a torn last line, an unknown field or op) is not
    trusted: nothing it names is removed, the run fails saying why, the file stays."""
    name = new_zone(dns_world, "foreign")
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    directory = journal.journal_dir(config.renew.state_dir)
    directory.mkdir(mode=0o700, parents=True)
    path = directory / DEAD
    entry = _add(name, "foreign-value")
    if case == "mode":
        _write(path, [entry], mode=0o644)
    elif case == "symlink":
        _write(tmp_path / "elsewhere", [entry])
        path.symlink_to(tmp_path / "elsewhere")
    elif case == "torn":
        _write(path, [entry, entry], tail="")
        path.write_bytes(path.read_bytes()[:-5])
    elif case == "unknown-field":
        _write(path, [{**entry, "extra": "x"}])
    elif case == "bad-op":
        _write(path, [{**entry, "op": "drop"}])
    elif case == "name":
        path = directory / "challenges-x.jsonl"
        _write(path, [entry])
    elif case == "dir-mode":
        _write(path, [entry])
        directory.chmod(0o755)
    report = run(config, store)
    assert not report.ok
    (refused,) = report.start
    assert refused.name == "(journal)" and refused.status == "failed"
    assert "not trusted" in refused.message or "not lecentral's" in refused.message
    assert os.path.lexists(path) and store.leftovers() == []
    store.close()


def test_a_journal_record_lecentral_could_not_have_written_becomes_a_leftover(
        dns_world: World, tmp_path: Path) -> None:
    """A well-formed journal of ours naming a record that fails the cleanup's checks (an owner
    outside its zone) is not acted on: it is stored as a leftover, loud, for the admin."""
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    directory = journal.journal_dir(config.renew.state_dir)
    directory.mkdir(mode=0o700, parents=True)
    _write(directory / DEAD, [_add("a.example.test", "v1", fqdn="_acme-challenge.other.test.")])
    report = run(config, store)
    assert not report.ok
    (left,) = report.kept
    assert "is not a TXT record lecentral could have written" in left.error
    assert [lo.target for lo in store.leftovers()] == ["_acme-challenge.other.test."]
    store.close()


def test_a_journal_that_cannot_be_written_stops_before_the_txt_is_added(
        dns_world: World, tmp_path: Path) -> None:
    """``state_dir``/journal cannot be made (a file is in the way; root ignores modes): the
    certificate is not tried past its order, no TXT is added, the run's problem says where."""
    name = new_zone(dns_world, "nojournal")
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    add_row(store, [name])
    directory = journal.journal_dir(config.renew.state_dir)
    directory.parent.mkdir(parents=True)
    directory.write_text("in the way\n")
    report = run(config, store)
    assert not report.ok
    (problem,) = report.problems
    assert problem.names == [name] and problem.exit_code == 2
    assert f"cannot note the challenge record about to be added in the journal {directory}/" \
        in problem.message and "nothing was added" in problem.message
    assert txt(dns_world, name) == []
    (refused,) = report.start  # and the start of the run said the journal directory is odd
    assert refused.name == "(journal)" and "not lecentral's" in refused.message
    row = store.get(name)
    assert row is not None and not row.crt and not row.count_fail_update
    store.close()


KILLED_AFTER_TOKEN = """
import os, pickle, signal, sys
from lecentral.http01.webroot import ChallengeFiles
from lecentral.registry import Registry
from lecentral.renew import RenewJob, RenewRequest
from lecentral.store.sql import SqlStore
def write(self, token, content):
    path = original(self, token, content)
    if not token.startswith("lecentral-probe-"):  # the CA's token, not the self-check's probe
        os.kill(os.getpid(), signal.SIGKILL)
    return path
original = ChallengeFiles.write
ChallengeFiles.write = write
with open(sys.argv[1], "rb") as f:
    config = pickle.load(f)
RenewJob(config, SqlStore(config.database.url), Registry.load(entrypoints=False)).run(
    RenewRequest(once=True))
"""


def test_a_renew_killed_with_its_webroot_file_written_leaves_none_after_the_next_run(
        web_world: WebWorld, tmp_path: Path) -> None:
    """HTTP-01: ``kill -9`` once the CA's token file is in the webroot: the next run removes it,
    and the ``.well-known/acme-challenge`` directories lecentral made for it."""
    import pickle

    webroot = web_world.webroot("one")
    assert web_leftovers(webroot) == []
    config = make_web_config(web_world, tmp_path)
    store = open_store(config)
    add_web_row(store, SITES["one"], webroot=webroot)
    pickled = tmp_path / "config.pickle"
    pickled.write_bytes(pickle.dumps(config))
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_TOKEN, str(pickled)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (token,) = [p for p in web_leftovers(webroot) if p.count("/") == 2]
    (path,) = journals(config)
    assert '"kind":"http01-file"' in path.read_text()
    store.set_enable(SITES["one"][0], False)
    report = run(config, store)
    assert report.ok and [c.target for c in report.cleaned] == [str(webroot / token)]
    assert web_leftovers(webroot) == [] and journals(config) == []
    store.close()


def test_a_reused_pid_is_not_taken_for_the_journals_process() -> None:
    """A journal names its process by pid and start time: the same pid started at another time
    (reused after a reboot or a wrap) is not it, so its journal is read."""
    me = os.getpid()
    started = journal.process_start(me)
    assert started is not None
    assert journal.is_live(Path(f"challenges-{me}-{started}.jsonl"))
    assert not journal.is_live(Path(f"challenges-{me}-{int(started) + 1}.jsonl"))
    assert not journal.is_live(Path(DEAD))


class StopBeforeRemoval:
    """A plugin registering the issuer ``stopping``: the built-in DNS-01 issuer, named stopped
    just before it removes its TXT (the removal fails: a leftover, and the journal keeps it)."""

    def __init__(self, world: World) -> None:
        self.world = world

    @hookimpl
    def lecentral_register_issuers(self) -> list[IssuerType]:
        world = self.world

        class Stopping(DnsChallenges):
            def remove(self, record: PublishedTxt) -> bool:
                world.bind.stop()
                return super().remove(record)

        def make(context: IssuerContext) -> DnsSubzoneIssuer:
            issuer = DnsSubzoneIssuer(context)
            issuer._dns = Stopping(context.config.dns)
            return issuer

        return [IssuerType("stopping", make, "test: named stopped before the removal")]


def test_a_record_both_journaled_and_stored_as_a_leftover_is_handled_once(
        dns_world: World, tmp_path: Path) -> None:
    """The removal failed (named stopped): the record is a stored leftover *and* still noted in
    the journal, which stays. When its process is gone, the next run retries the stored
    leftover only (one row, one more attempt), and deletes the journal."""
    name = new_zone(dns_world, "both")
    config = make_config(dns_world, tmp_path, dns01_issuer="stopping")
    store = open_store(config)
    add_row(store, [name])
    loaded = get_plugin_manager(entrypoints=False)
    loaded.pm.register(StopBeforeRemoval(dns_world), name="stopping")
    try:
        first = RenewJob(config, store, Registry(loaded)).run(RenewRequest(once=True))
        (left,) = first.leftovers
        (path,) = journals(config)  # kept: its record was not removed
        assert left.data["value"] in path.read_text()
        path.rename(path.with_name(DEAD))  # as if its process had ended
        store.set_enable(name, False)
        second = run(config, store)
        assert [lo.attempts for lo in store.leftovers()] == [2]
        assert [k.id for k in second.kept] == [left.id]
        assert journals(config) == []
    finally:
        dns_world.bind.start()
    assert run(config, store).ok and store.leftovers() == []
    assert left.data["value"] not in txt(dns_world, name)
    store.close()
