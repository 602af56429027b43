"""``lecentral check`` and ``lecentral doctor`` read the challenge journals (lecentral/journal.py)
that renew processes left in ``[renew] state_dir``/journal, and never change them.

A renew process killed mid-pass (``kill -9``, the OOM killer) leaves its TXT records in the DNS
and its journal behind, until the next ``lecentral renew`` removes them: until then check says
WARNING (``journal-left``, perfdata ``journal_records``) and doctor a warning line; a journal
the renew job does not trust is CRITICAL (an error for doctor); a journal directory the user
cannot read (check run by a monitoring user) is itself a WARNING, not a traceback.

Real parts: Pebble, BIND, SQLite and the ``lecentral renew`` command killed in its own process
(tests/test_renew_journal.py's script); SQLite fleets (monitor_world) for the other cases, and
the real console script run as the ``nobody`` user for the unreadable directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from monitor_world import Fleet
from renew_world import World, add_row, make_config, new_zone, open_store, write_toml
from test_renew_journal import DEAD, _add, _write, journals, killed_run, main, txt

from lecentral import journal
from lecentral.leftovers import DNS_TXT, Leftover

A, B = "a.example.test", "b.example.test"
LECENTRAL = shutil.which("lecentral") or "lecentral"
NOBODY = 65534
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"


def fingerprint(directory: Path) -> dict[str, tuple[str, int, int, int]]:
    """Every entry of the journal directory: content hash, mode, size, mtime (nanoseconds)."""
    found = {}
    for path in sorted(directory.iterdir()):
        st = path.lstat()
        body = os.readlink(path) if path.is_symlink() else path.read_bytes()
        found[path.name] = (hashlib.sha256(str(body).encode()).hexdigest(), st.st_mode,
                            st.st_size, st.st_mtime_ns)
    st = directory.lstat()
    found["."] = ("", st.st_mode, 0, st.st_mtime_ns)
    return found


def doctor_json(config: Path) -> tuple[int, list[dict[str, Any]]]:
    result = CliRunner().invoke(main(), ["--config", str(config), "doctor", "--no-dns", "--json"])
    return result.exit_code, json.loads(result.stdout)["findings"]


def by_kind(data: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [p for p in data["problems"] if p["kind"] == kind]


def test_a_killed_renew_is_seen_by_check_and_doctor_until_the_next_run(
        dns_world: World, tmp_path: Path) -> None:
    """``kill -9`` of ``lecentral renew`` with its TXT added: check WARNING naming the record,
    the count and what will happen, perfdata journal_records=1; doctor a warning, exit 1; the
    journal and the TXT untouched by both. The next renew removes them: check and doctor say
    nothing more, journal_records=0."""
    name = new_zone(dns_world, "seen")
    config = make_config(dns_world, tmp_path)
    store = open_store(config)
    add_row(store, [name])
    toml = write_toml(config, tmp_path / "lecentral.toml", processes=1)
    before = CliRunner().invoke(main(), ["--config", str(toml), "check", "--json"])
    assert "journal_records=0;;;0" in json.loads(before.stdout)["perfdata"]

    killed = killed_run(toml)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (value,) = txt(dns_world, name)
    (path,) = journals(config)
    pid = int(path.name.split("-")[1])
    untouched = fingerprint(path.parent)

    result = CliRunner().invoke(main(), ["--config", str(toml), "check", "--json"])
    data = json.loads(result.stdout)
    (left,) = by_kind(data, "journal-left")
    assert left["severity"] == "WARNING" and left["name"] == name
    assert left["text"].startswith(f"renew process {pid} ended mid-pass (killed?) ")
    assert (f'did not remove 1 challenge record(s) it had added: TXT _acme-challenge.{name}. '
            f'"{value}" ({name}) (noted in {path}): the next lecentral renew removes them'
            in left["text"])
    assert "journal_records=1;;;0" in data["perfdata"]
    assert result.exit_code == 1 and data["status"] == "WARNING"
    text = CliRunner().invoke(main(), ["--config", str(toml), "check"])
    assert f"WARNING: renew process {pid} ended mid-pass" in text.stdout

    code, findings = doctor_json(toml)
    (found,) = [f for f in findings if f["check"] == "journal"]
    assert found["name"] == "[renew]" and found["level"] == "warning" and code == 1
    assert found["message"] == (
        f"renew process {pid} ended mid-pass (killed?) and did not remove 1 challenge record(s) "
        f"it had added, for {name} (noted in {path}): the next lecentral renew removes them")

    assert fingerprint(path.parent) == untouched  # read, never changed
    assert txt(dns_world, name) == [value]

    again = CliRunner().invoke(main(), ["--config", str(toml), "renew", "--once"])
    assert again.exit_code == 0, again.output
    assert journals(config) == [] and value not in txt(dns_world, name)
    data = json.loads(CliRunner().invoke(main(), ["--config", str(toml), "check", "--json"])
                      .stdout)
    assert by_kind(data, "journal-left") == [] and "journal_records=0;;;0" in data["perfdata"]
    assert data["status"] == "OK", data
    code, findings = doctor_json(toml)
    assert [f for f in findings if f["check"] == "journal"] == [] and code == 0
    store.close()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Two healthy certificates, a recent renew run, ``[renew] state_dir`` in tmp_path."""
    world = Fleet(tmp_path, config_extra=f'[renew]\nstate_dir = "{tmp_path}/state"\n')
    world.issue(A)
    world.issue(B)
    world.renew_run()
    yield world
    world.close()


def journal_dir(fleet: Fleet) -> Path:
    directory = fleet.tmp / "state" / "journal"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def test_a_live_process_journal_is_not_a_problem(fleet: Fleet) -> None:
    """The journal of a renew running now (its pid and start time alive) says nothing."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        path = journal_dir(fleet) / f"challenges-{sleeper.pid}-{journal.process_start(sleeper.pid)}.jsonl"
        _write(path, [_add(A, "live-value")])
        data = fleet.check_json()
        assert data["status"] == "OK" and "journal_records=0;;;0" in data["perfdata"]
    finally:
        sleeper.kill()
        sleeper.wait()
    data = fleet.check_json()  # gone now: its record is the next run's to remove
    assert [p["kind"] for p in data["problems"]] == ["journal-left"]


def test_records_stored_as_leftovers_are_not_counted_twice(fleet: Fleet) -> None:
    """A run whose removal failed stored the record as a leftover and kept its journal: check
    shows the leftover once, not again as a journal record."""
    entry = _add(A, "stored-value")
    _write(journal_dir(fleet) / DEAD, [entry, _add(B, "only-noted")])
    fields = {k: entry[k] for k in journal.ADD_FIELDS[DNS_TXT]}
    fleet.store.add_leftover(Leftover(DNS_TXT, A, entry["fqdn"], fields, "SERVFAIL"),
                             fleet.now - 60)
    data = fleet.check_json()
    assert [p["name"] for p in by_kind(data, "leftover")] == [A]
    (left,) = by_kind(data, "journal-left")
    assert left["name"] == B and "only-noted" in left["text"] and "stored-value" not in left["text"]
    assert "journal_records=1;;;0" in data["perfdata"] and "leftovers=1;;;0" in data["perfdata"]


def journal_samples(fleet: Fleet) -> dict[str, float]:
    """The challenge-journal samples of ``lecentral metrics`` (checked by promtool)."""
    from test_metrics import promtool_check, samples

    result = fleet.run("metrics")
    assert result.exit_code == 0, result.output
    data = result.stdout.encode()
    promtool_check(data)
    return {k: v for k, v in samples(data).items() if k.startswith("lecentral_challenge_j")}


def test_metrics_tell_what_check_tells_of_the_journals(fleet: Fleet) -> None:
    """``lecentral metrics`` reads the journals as check does, changing nothing: the records a
    killed renew left (less those stored as leftovers), the journals the renew job refuses, and
    that it could read them (a Prometheus-only site sees what NRPE sees)."""
    directory = journal_dir(fleet)
    assert journal_samples(fleet) == {"lecentral_challenge_journals_readable": 1.0,
                                      "lecentral_challenge_journal_records": 0.0,
                                      "lecentral_challenge_journals_refused": 0.0}
    entry = _add(A, "stored-value")
    _write(directory / DEAD, [entry, _add(B, "only-noted"), _add(B, "also-noted")])
    fields = {k: entry[k] for k in journal.ADD_FIELDS[DNS_TXT]}
    fleet.store.add_leftover(Leftover(DNS_TXT, A, entry["fqdn"], fields, "SERVFAIL"),
                             fleet.now - 60)
    _write(directory / "challenges-999999998-1.jsonl", [_add(B, "torn")], tail="")
    untouched = fingerprint(directory)
    assert journal_samples(fleet) == {"lecentral_challenge_journals_readable": 1.0,
                                      "lecentral_challenge_journal_records": 2.0,
                                      "lecentral_challenge_journals_refused": 1.0}
    assert fingerprint(directory) == untouched


def test_a_journal_removed_while_it_is_read_is_gone_not_refused(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """A renew run removes a journal it cleaned up between check's (or metrics') listing of
    the directory and its opening of the file: that journal is gone, not refused (no CRITICAL,
    no refused sample for nothing). The race is made certain by removing the file just before
    the real read (the one part staged here)."""
    directory = journal_dir(fleet)
    _write(directory / DEAD, [_add(A, "cleaned")])
    real = journal.read_left

    def removed_first(path: Path, owner: int | None = None) -> Any:
        path.unlink()
        return real(path, owner)

    monkeypatch.setattr(journal, "read_left", removed_first)
    data = fleet.check_json()
    assert data["status"] == "OK" and data["problems"] == [], data
    assert "journal_records=0;;;0" in data["perfdata"]


def test_a_named_check_counts_only_its_records(fleet: Fleet) -> None:
    """``check NAME``: the journal's records of NAME only; a refused journal is left to the
    fleet-wide check (it names no certificate one can trust)."""
    directory = journal_dir(fleet)
    _write(directory / DEAD, [_add(A, "a-value")])
    _write(directory / "challenges-999999998-1.jsonl", [_add(B, "torn")], tail="")
    data = fleet.check_json(B)
    assert data["status"] == "OK" and "journal_records=0;;;0" in data["perfdata"]
    data = fleet.check_json(A)
    assert [p["kind"] for p in data["problems"]] == ["journal-left"]
    assert "journal_records=1;;;0" in data["perfdata"]
    data = fleet.check_json()
    assert sorted(p["kind"] for p in data["problems"]) == ["journal-left", "journal-refused"]


@pytest.mark.parametrize("case", ["mode", "symlink", "torn", "name", "dir-mode"])
def test_a_journal_the_renew_job_refuses_is_critical(fleet: Fleet, tmp_path: Path,
                                                     case: str) -> None:
    """As the renew job refuses it (an ERROR alert at every run, nothing it names removed, kept
    for the admin): CRITICAL in check, an error in doctor; the files untouched."""
    directory = journal_dir(fleet)
    entry = _add(A, "foreign-value")
    if case == "mode":
        _write(directory / DEAD, [entry], mode=0o644)
    elif case == "symlink":
        _write(tmp_path / "elsewhere", [entry])
        (directory / DEAD).symlink_to(tmp_path / "elsewhere")
    elif case == "torn":
        _write(directory / DEAD, [entry, entry], tail="")
    elif case == "name":
        _write(directory / "challenges-x.jsonl", [entry])
    elif case == "dir-mode":
        _write(directory / DEAD, [entry])
        directory.chmod(0o755)
    untouched = fingerprint(directory)
    code, lines = fleet.check()
    assert code == 2 and lines[0].startswith("LECENTRAL CRITICAL - 1 critical problem(s)")
    (problem,) = [line for line in lines[1:] if line.startswith("CRITICAL: ")]
    assert problem.startswith("CRITICAL: challenge journal: ")
    assert "not trusted" in problem or "not lecentral's" in problem
    code, findings = doctor_json(fleet.config)
    (found,) = [f for f in findings if f["check"] == "journal"]
    assert found["level"] == "error" and code == 1
    assert found["message"] == problem.removeprefix("CRITICAL: ")
    assert fingerprint(directory) == untouched


def test_root_reads_the_journals_of_the_renew_user(fleet: Fleet) -> None:
    """Run as root, check reads a journal directory owned by the renew job's user (here
    ``nobody``) as that user's: a journal of nobody's is trusted, one of root's is not (the
    renew job, running as nobody, would refuse it)."""
    directory = journal_dir(fleet)
    _write(directory / DEAD, [_add(A, "nobodys")])
    os.chown(directory, NOBODY, NOBODY)
    os.chown(directory / DEAD, NOBODY, NOBODY)
    data = fleet.check_json()
    assert [p["kind"] for p in data["problems"]] == ["journal-left"]
    _write(directory / "challenges-999999998-1.jsonl", [_add(B, "roots")])
    data = fleet.check_json()
    (refused,) = by_kind(data, "journal-refused")
    assert f"owned by uid 0, mode 600, 1 link(s); expected a file of uid {NOBODY}" in \
        refused["text"]


def test_a_monitoring_user_that_cannot_read_the_journals_gets_a_warning(fleet: Fleet) -> None:
    """``lecentral check`` run as another user than the renew job's (NRPE's nagios; here
    ``nobody``), with the state directory mode 700: WARNING saying so and what to do, no
    journal_records perfdata (not known), no traceback; the rest of the check as usual."""
    shared = Path(tempfile.mkdtemp(prefix="lcnobody"))
    try:
        shared.chmod(0o755)
        fleet.store.close()
        for name in ("lecentral.toml", "lecentral.db"):
            shutil.copy(fleet.tmp / name, shared / name)
            (shared / name).chmod(0o644)
        config = shared / "lecentral.toml"
        config.write_text(config.read_text().replace(str(fleet.tmp), str(shared)))
        state = shared / "state"
        (state / "journal").mkdir(mode=0o700, parents=True)
        state.chmod(0o700)
        _write(state / "journal" / DEAD, [_add(A, "unseen")])
        # setpriv (util-linux): the uid, gid and groups of nobody, no capability left
        done = subprocess.run([SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}",
                               "--clear-groups", LECENTRAL, "--config", str(config), "check",
                               "--json"], cwd=shared, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.stderr == "" and done.returncode == 1, done.stderr
        data = json.loads(done.stdout)
        assert [p["kind"] for p in data["problems"]] == ["journal-unreadable"]
        assert data["problems"][0]["text"] == (
            f"challenge journals: cannot read {state}/journal (Permission denied): challenge "
            "records a killed renew process left would not be seen here; run lecentral check as "
            "the renew job's user, or root (docs/monitoring.md)")
        assert not [p for p in data["perfdata"] if p.startswith("journal_records=")]
        assert "certificates=2;;;0" in data["perfdata"]
        doctor = subprocess.run([SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}",
                                 "--clear-groups", LECENTRAL, "--config", str(config), "doctor",
                                 "--no-dns", "--json"], cwd=shared, capture_output=True,
                                text=True, timeout=120, check=False)
        metrics = subprocess.run([SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}",
                                  "--clear-groups", LECENTRAL, "--config", str(config),
                                  "metrics"], cwd=shared, capture_output=True, text=True,
                                 timeout=120, check=False)
        assert metrics.returncode == 0 and metrics.stderr == "", metrics.stderr
        assert "\nlecentral_challenge_journals_readable 0.0\n" in metrics.stdout
        assert "\nlecentral_challenge_journal_records " not in metrics.stdout  # not known: no 0
        assert doctor.returncode == 1 and "Traceback" not in doctor.stderr, doctor.stderr
        (found,) = [f for f in json.loads(doctor.stdout)["findings"] if f["check"] == "journal"]
        assert found["level"] == "warning" and found["message"] == (
            f"challenge journals not looked at: cannot read {state}/journal (Permission denied); "
            "run lecentral doctor as the renew job's user, or root")
    finally:
        shutil.rmtree(shared)
        fleet.store = type(fleet.store)(fleet.url)
