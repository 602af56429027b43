"""``[renew] processes``: a pass of many certificates forked over several processes
(lecentral/renew/forked.py), against the real world (BIND, Pebble) of tests/renew_world.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from renew_world import (
    BADSECRET,
    World,
    add_row,
    assert_issued,
    make_config,
    new_zone,
    open_store,
)
from test_renew_errors import FailureHook, registry_with, with_issuer

from lecentral.builtin.dns_subzone import DnsSubzoneIssuer
from lecentral.config import CentralConfig
from lecentral.errors import IssueError
from lecentral.hookspecs import hookimpl
from lecentral.interfaces import IssuedCertificate, Issuer
from lecentral.renew import RenewJob, RenewRequest
from lecentral.types import IssuerContext, IssuerType


class IssuedHook:
    """Hears ``lecentral_cert_issued``: the parent emits it for every certificate it saves."""

    def __init__(self) -> None:
        self.names: list[str] = []

    @hookimpl
    def lecentral_cert_issued(self, name: str, crt: bytes, ca: bytes, ts_expire: int,
                              issuer_ca: str) -> None:
        self.names.append(name)


def test_a_pass_on_two_processes_issues_saves_and_fails_as_one(dns_world: World,
                                                                tmp_path: Path) -> None:
    """Each certificate is issued (by this process or the forked one), saved by this process
    with its events, its TXT removed, nothing left in the spool; a zone whose key is refused
    fails in whichever process had it, counted and alerted here, as in one process."""
    config = make_config(dns_world, tmp_path, workers=2, processes=2, max_failures=0)
    store = open_store(config)
    names = [new_zone(dns_world, "fork") for _ in range(5)]
    keys = {name: add_row(store, [name])[1] for name in names}
    add_row(store, [BADSECRET])
    failures, issued = FailureHook(), IssuedHook()
    report = RenewJob(config, store, registry_with(failures, issued)).run(
        RenewRequest(once=True))
    by_name = {o.name: o for o in report.final}
    assert sorted(by_name) == sorted([*names, BADSECRET])
    for name in names:
        assert by_name[name].status == "issued", by_name[name].message
        assert_issued(store, name, [name], keys[name])
        assert dns_world.bind.txt_values(f"_acme-challenge.{name}") == []
        assert "save" in by_name[name].phases and by_name[name].cpu_seconds > 0
    assert sorted(issued.names) == sorted(names)
    bad = by_name[BADSECRET]
    assert bad.status == "failed" and "BADSIG" in bad.message
    assert [(n, c) for n, _, c in failures.failures] == [(BADSECRET, 1)]
    row = store.get(BADSECRET)
    assert row is not None and row.count_fail_update == 1
    assert list((Path(config.renew.state_dir) / "spool").glob("*.json")) == []
    store.close()


PARENT = os.getpid()


class DyingIssuer(Issuer):
    """Kills the worker process it runs in (as the OOM killer would); fails in the parent."""

    processes_safe = True

    def __init__(self, context: IssuerContext) -> None:
        self.config = context.config

    def issue(self, row: Any, csr: Any) -> IssuedCertificate:
        if os.getpid() != PARENT:
            os._exit(3)
        raise IssueError("the parent's own failure")


class DyingPlugin:
    @hookimpl
    def lecentral_register_issuers(self) -> list[IssuerType]:
        return [IssuerType("dying", DyingIssuer, "test: kills its worker process")]


def test_a_worker_process_that_dies_is_the_runs_problem_not_its_certificates(
        dns_world: World, tmp_path: Path) -> None:
    """The certificates a dead worker process did not report are not tried by this run, said
    once as the run's problem (where an issued one would be: the spool); their failure counts
    and last attempt stay as they were, so the next run tries them at once (a new-user trial
    found them recorded as failures, held back by renew.min_interval while that next run said
    all was well). The parent's own certificates are unaffected."""
    config = with_issuer(make_config(dns_world, tmp_path, workers=1, processes=2,
                                     max_failures=0), "dying")
    store = open_store(config)
    names = [new_zone(dns_world, "dies") for _ in range(4)]
    for name in names:
        add_row(store, [name])
    before = {n: store.get(n).ts_last_update for n in names}  # type: ignore[union-attr]
    failures = FailureHook()
    report = RenewJob(config, store, registry_with(DyingPlugin(), failures)).run(
        RenewRequest(once=True))
    by_name = {o.name: o for o in report.final}
    due = sorted(names)  # the selection's order: by name
    parents, childs = due[0::2], due[1::2]
    assert all(by_name[n].status == "failed" for n in parents)
    assert all(by_name[n].message == "the parent's own failure" for n in parents)
    assert all(by_name[n].status == "blocked" for n in childs)
    assert not report.ok
    [problem] = report.problems
    assert "exited with status 3 before it reported these certificates" in problem.message
    assert "spool" in problem.message
    assert sorted(problem.names) == childs
    assert sorted(n for n, _, _ in failures.failures) == parents
    for name in parents:
        assert store.get(name).count_fail_update == 1  # type: ignore[union-attr]
    for name in childs:
        row = store.get(name)
        assert row is not None and row.count_fail_update in (0, None)
        assert row.ts_last_update == before[name]  # not an attempt: due again at once
    store.close()


class PidIssuer(DnsSubzoneIssuer):
    """The built-in DNS-01 issuer, noting in which process each certificate was issued."""

    def __init__(self, context: IssuerContext, notes: Path) -> None:
        super().__init__(context)
        self.notes = notes

    def issue(self, row: Any, csr: Any) -> IssuedCertificate:
        issued = super().issue(row, csr)
        with self.notes.open("a") as notes:
            notes.write(f"{os.getpid()}\n")
        return issued


class TurnsIssuer(PidIssuer):
    """An issuer that does not say its certificates may go to other processes (the default,
    as certbot's, whose state directories and webroots are taken in turns by one process's
    threads)."""

    processes_safe = False


class PidPlugin:
    def __init__(self, notes: Path) -> None:
        self.notes = notes

    @hookimpl
    def lecentral_register_issuers(self) -> list[IssuerType]:
        return [IssuerType("pids", lambda c: PidIssuer(c, self.notes),
                           "test: dns-subzone noting its process"),
                IssuerType("turns", lambda c: TurnsIssuer(c, self.notes),
                           "test: dns-subzone noting its process, not processes_safe")]


def test_an_issuer_not_processes_safe_keeps_its_certificates_in_the_first_process(
        dns_world: World, tmp_path: Path) -> None:
    """With ``processes = 2``, the certificates of an issuer that does not set
    ``Issuer.processes_safe`` are all issued by the first process (a new-user trial found
    certbot-webroot rows failing "Another instance of Certbot is already running" when two
    processes ran certbot on one state directory)."""
    config = with_issuer(make_config(dns_world, tmp_path, workers=1, processes=2), "turns")
    assert issued_by(dns_world, config, tmp_path / "pids") == [str(os.getpid())] * 4


def issued_by(dns_world: World, config: CentralConfig, notes: Path) -> list[str]:
    """Four due certificates renewed by one run with ``config`` (its issuer a PidPlugin one),
    each checked issued and saved: the pid of the process that issued each."""
    store = open_store(config)
    names = [new_zone(dns_world, "pids") for _ in range(4)]
    keys = {name: add_row(store, [name])[1] for name in names}
    report = RenewJob(config, store, registry_with(PidPlugin(notes))).run(
        RenewRequest(once=True))
    assert report.ok and {o.status for o in report.final} == {"issued"}
    for name in names:
        assert_issued(store, name, [name], keys[name])
    store.close()
    return notes.read_text().split()


def test_by_default_a_large_pass_uses_two_processes_where_two_cores_may_run_them(
        dns_world: World, tmp_path: Path) -> None:
    """``processes = "auto"`` (the default): a pass of more certificates than ``workers`` is
    shared by two processes on a machine (an affinity) of 2 cores or more, one process
    otherwise; every certificate is issued and saved either way."""
    config = with_issuer(make_config(dns_world, tmp_path, workers=2), "pids")
    assert config.renew.processes == "auto"
    pids = set(issued_by(dns_world, config, tmp_path / "pids"))
    assert len(pids) == (2 if len(os.sched_getaffinity(0)) >= 2 else 1)
    assert str(os.getpid()) in pids


def test_lecentral_vv_renew_says_the_auto_choice_also_on_one_core(dns_world: World,
                                                                   tmp_path: Path) -> None:
    """``lecentral -vv renew`` under ``taskset -c 0`` (one core in its affinity): the debug log
    says why "auto" chose one process, as docs/renew.md says it does for every choice."""
    import shutil
    import subprocess

    from renew_world import write_toml

    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    for _ in range(3):
        add_row(store, [new_zone(dns_world, "one-core")])
    store.close()
    toml = write_toml(config, tmp_path / "lecentral.toml", workers=2)
    done = subprocess.run(["taskset", "-c", "0", shutil.which("lecentral") or "lecentral", "-vv",
                           "--config", str(toml), "renew"], check=False, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert ("renew.processes auto: 1 process: 1 core(s) in this process's CPU affinity, "
            in done.stderr), done.stderr


def test_a_retry_round_measures_its_own_start(dns_world: World, tmp_path: Path) -> None:
    """``lecentral -vv renew --rounds``: round 2's "auto" choice is measured (at the end of its
    sleep, with the console script's mark: tests/test_idle.py checks what that mark counts) and
    said again, as round 1's."""
    import shutil
    import subprocess

    from renew_world import UNKNOWNKEY, write_toml

    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    add_row(store, [BADSECRET])
    add_row(store, [UNKNOWNKEY])
    store.close()
    toml = write_toml(config, tmp_path / "lecentral.toml", workers=1, retry_pause=1,
                      max_failures=1)
    done = subprocess.run([shutil.which("lecentral") or "lecentral", "-vv", "--config",
                           str(toml), "renew", "--rounds"], check=False, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    choices = [line for line in done.stderr.splitlines() if "renew.processes auto:" in line]
    assert len(choices) == 2, done.stderr
    assert all("(not measured)" not in line for line in choices), choices
