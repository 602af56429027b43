"""``lecentral metrics``, ``lecentral fleet --json`` and ``lecentral fleet`` in one pass over
``certs`` (issue 16: lecentral/fleet/spool.py, onepass.py, jsonpass.py, textpass.py): the
plainly current certificates are written to temporary files as they are read, the others
judged and written at their places.
The output must be the bytes the held view writes (the path taken when the pass cannot stand
for the judge's view), on SQLite, MariaDB and PostgreSQL, for plain fleets and for the rows
that make the pass give up; its temporary files go on every path."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from monitor_world import Fleet
from test_fleet_split import (
    OK,
    _disable,
    escaped_world,
    orphan_world,
    plain_world,
    separator_world,
    upper_world,
    world,
)
from test_metrics import promtool_check
from test_store_sqlite_errors import fill, tmpfs

from lecentral.fleet import jsonpass, onepass, spool, tempfiles, textpass
from lecentral.fleet import store as fleet_store
from lecentral.fleet.onepass import _in_order


@pytest.fixture(params=["sqlite", "mariadb", "postgresql"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fleet]:
    url = None
    if request.param != "sqlite":
        url = request.getfixturevalue("mariadb_url" if request.param == "mariadb"
                                      else "postgres_url")
    f = Fleet(tmp_path, url)
    yield f
    f.close()


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch, fleet: Fleet) -> Fleet:
    """Every ``now`` of the commands is the same second (the two outputs are compared)."""
    import lecentral.certificates
    import lecentral.cli.fleet
    import lecentral.names

    for module in (lecentral.names, lecentral.certificates, lecentral.cli.fleet):
        monkeypatch.setattr(module, "now_ts", lambda: fleet.now)
    return fleet


def odd_world(fleet: Fleet) -> None:
    """:func:`plain_world` (with a failed row: its lifetime from its crt), and the rows at the
    edges of "plainly current": targets whose (host, entry) order differs from their
    "host (entry)" order, quotes and backslashes in targets, a row without facts."""
    from lecentral.config import RenewConfig

    plain_world(fleet)
    name = "order.split.example.test"
    cert = fleet.issue(name, age=2)
    for host, entry in (("a", "z"), ("a b", "c"), ("a", "b"), ("b", "a"), ("web10", "x"),
                        ("web9", "x"), ('q"uote', "e\\n")):
        fleet.report(host, name, cert, cert, entry=entry)
    fleet.store.record_facts(fleet.store.sweep(RenewConfig(), fleet.now).rows)
    later = fleet.issue("nofacts.split.example.test", age=1)
    fleet.report("web1", "nofacts.split.example.test", later, later)


def _run_both(fleet: Fleet, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[bytes, bytes]:
    """The command's output in one pass, and with the pass giving up at once (the view held,
    as before)."""
    result = fleet.run(*args)
    assert result.exit_code == 0, result.output
    with monkeypatch.context() as m:
        m.setattr(spool.MetricsPass, "take",
                  lambda self, row, fp: bool(self.abandon("test")))
        m.setattr(onepass.OnePass, "take",
                  lambda self, row, fp: bool(self.abandon("test")))
        held = fleet.run(*args)
    assert held.exit_code == 0, held.output
    return result.stdout_bytes, held.stdout_bytes


class _Taken:
    """How many rows a pass took, and whether it wrote (spied on)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.taken = 0
        self.written = 0
        real_metrics, real_one = spool.MetricsPass.close, onepass.OnePass.close

        def metrics_close(this: spool.MetricsPass) -> None:
            self.taken = max(self.taken, this.taken if not this.abandoned else 0)
            real_metrics(this)

        def one_close(this: onepass.OnePass) -> None:
            self.taken = max(self.taken, this.taken if not this.abandoned else 0)
            real_one(this)

        monkeypatch.setattr(spool.MetricsPass, "close", metrics_close)
        monkeypatch.setattr(onepass.OnePass, "close", one_close)


@pytest.mark.parametrize("made", [world, plain_world, upper_world, odd_world, orphan_world,
                                  escaped_world, separator_world],
                         ids=["world", "plainly-ok", "upper-case", "odd", "orphans", "escaped",
                              "separators"])
def test_one_pass_writes_the_bytes_of_the_held_view(frozen: Fleet, made: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = frozen
    made(fleet)
    spied = _Taken(monkeypatch)
    for args in (("metrics",), ("fleet", "--json"), ("fleet",)):
        spied.taken = 0
        passed, held = _run_both(fleet, monkeypatch, *args)
        assert passed == held, args
        if made in (plain_world, odd_world):  # the plainly current ones were not held
            assert spied.taken >= len(OK) - 2, args
        elif made is escaped_world:  # and those whose targets' values need escaping
            assert spied.taken >= len(OK) - 2 + 4, args
        elif made is upper_world:  # a row filed under a taken name: given up
            assert spied.taken == 0, args
        if args == ("metrics",):
            promtool_check(passed)


def test_targets_the_judge_lists_are_judged_in_the_passes_own_read(
        frozen: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """A certificate with current targets and targets the judge lists anyway (A: web3
    stale; F: a probe result) is judged in full from the pass's own read, none of its
    targets counted: ``fleet --json`` and ``fleet`` read the fleet once (before: again for
    those certificates, 0.1 s of the 0.4 s after MariaDB's pass at 100,000 × 3), and write
    the held view's bytes."""
    fleet = frozen
    world(fleet)
    reads: list[tuple[Any, ...]] = []
    counted: list[str] = []
    outputs: dict[str, bytes] = {}
    real = fleet_store.FleetStore.snapshot

    def snapshot(self: Any, names: Any = (), **kwargs: Any) -> Any:
        reads.append(tuple(names))
        snap = real(self, names, **kwargs)
        if snap.split is not None:
            counted.extend(snap.split.counts)
        return snap

    for args in (("fleet", "--json"), ("fleet",)):
        reads.clear()
        counted.clear()
        with monkeypatch.context() as m:
            m.setattr(fleet_store.FleetStore, "snapshot", snapshot)
            result = fleet.run(*args)
        assert result.exit_code == 0, result.output
        assert reads == [()], (args, reads)
        assert "a.split.example.test" not in counted and "f.split.example.test" not in counted
        passed, held = _run_both(fleet, monkeypatch, *args)
        assert passed == held == result.stdout_bytes, args
        outputs[args[-1]] = passed
    document = json.loads(outputs["--json"])
    states = {c["name"]: [t["state"] for t in c["targets"]] for c in document["certs"]}
    assert states["a.split.example.test"].count("current") == 3
    assert "stale" in states["a.split.example.test"]
    assert "current" in states["f.split.example.test"]


def test_the_probe_results_are_read_before_the_pass_outside_sqlite() -> None:
    """On MariaDB and PostgreSQL the pass asks no EXISTS per row for a probe result (0.13 s
    of MariaDB's 1.7 s): the names are read before it in its transaction, exactly as stored;
    a row read before them is an error, never "not probed". SQLite's pass (maybe in two
    processes) keeps its column."""
    from sqlalchemy import select

    from lecentral.fleet.current import Split

    split = Split("mariadb", 0, json=True, probes_read=True)
    assert "EXISTS" not in str(select(split.probed_column()))
    with pytest.raises(AssertionError):
        split.is_probed("a.example.test", 0)
    split.probed_names = frozenset({"a.example.test"})
    assert split.is_probed("a.example.test", 0)
    assert not split.is_probed("A.example.test", 0) and not split.is_probed("b.example.test", 0)
    sqlite = Split("sqlite", 0, json=True)
    assert "EXISTS" in str(select(sqlite.probed_column()))
    assert sqlite.is_probed("a.example.test", 1) and not sqlite.is_probed("a.example.test", 0)


@pytest.mark.parametrize("planned", [True, False], ids=["key-order-plan", "keys-listed"])
def test_sqlite_targets_in_the_order_of_the_full_view(tmp_path: Path, planned: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite before 3.44 cannot order an aggregate: the pass trusts the order of the targets
    only where the plan reads them through the (name, host, entry) key (else their keys come
    along and are checked). Either way, targets whose "host (entry)" order differs from their
    key order come out as the held view writes them."""
    import lecentral.certificates
    import lecentral.cli.fleet
    import lecentral.fleet.store
    import lecentral.names

    fleet = Fleet(tmp_path, None)
    try:
        for module in (lecentral.names, lecentral.certificates, lecentral.cli.fleet):
            monkeypatch.setattr(module, "now_ts", lambda: fleet.now)
        odd_world(fleet)
        seen: list[bool] = []
        real = lecentral.fleet.store.reads_in_key_order

        def plan(conn: Any, query: Any) -> bool:
            seen.append(real(conn, query))
            return seen[-1] and planned

        monkeypatch.setattr(lecentral.fleet.store, "reads_in_key_order", plan)
        for args in (("fleet", "--json"), ("fleet",)):
            passed, held = _run_both(fleet, monkeypatch, *args)
            assert passed == held, args
        import sqlite3

        if sqlite3.sqlite_version_info < (3, 44):  # the plan was asked, and is the key's
            assert seen and all(seen)
        else:
            assert seen == []
    finally:
        fleet.close()


@pytest.mark.parametrize("widths", [(+12, True), (-8, True), (0, False), (0, True)],
                         ids=["wider", "narrower", "unserved", "as-measured"])
def test_fleet_table_whatever_the_provisional_widths(frozen: Fleet, widths: tuple[int, bool],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``lecentral fleet`` pads its spooled lines to provisional widths (the longest label the
    database holds, a served target): where the table comes out narrower (a longer label not
    shown), each line is padded again; a label longer than the provisional width is held. The
    table is always the held view's, byte for byte."""
    from lecentral.fleet.store import FleetStore

    fleet = frozen
    odd_world(fleet)
    real = FleetStore.label_widths
    extra, served = widths

    def provisional(self: FleetStore) -> tuple[int, bool]:
        width, was_served = real(self)
        return width + extra, served or was_served and extra == 0

    monkeypatch.setattr(FleetStore, "label_widths", provisional)
    spied = _Taken(monkeypatch)
    passed, held = _run_both(fleet, monkeypatch, "fleet")
    assert passed == held
    assert spied.taken if extra >= 0 else True


def test_fleet_table_columns_fit_the_spooled_and_the_held_lines(
        frozen: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """The STATE column is as wide as ``current`` of the spooled lines even where every held
    line's state is shorter (a certificate stale on its only host, with its WHY after it)."""
    from lecentral.config import RenewConfig

    fleet = frozen
    for name in OK[:3]:
        cert = fleet.issue(name, age=5)
        fleet.report("web1", name, cert, cert)
    stale = "stale.split.example.test"
    current = fleet.issue(stale, age=10)
    old = fleet.cert(stale, days=90, age=70)
    fleet.report("web1", stale, old, old)
    assert current
    fleet.renew_run()
    fleet.store.record_facts(fleet.store.sweep(RenewConfig(), fleet.now).rows)
    spied = _Taken(monkeypatch)
    passed, held = _run_both(fleet, monkeypatch, "fleet")
    assert passed == held
    assert spied.taken == 3
    assert b"  stale    installed: the previous certificate" in passed


def test_a_plan_through_another_index_is_not_trusted(tmp_path: Path) -> None:
    """:func:`reads_in_key_order` says True only for a search of the deployments by name
    through their (name, host, entry) key, in a real SQLite."""
    from sqlalchemy import select

    from lecentral.fleet.current import reads_in_key_order
    from lecentral.store.schema import deployments
    from lecentral.store.sql import SqlStore

    store = SqlStore(f"sqlite:///{tmp_path}/plan.db")
    store.init_schema()
    d = deployments.c
    with store.transaction("test") as conn:
        assert reads_in_key_order(conn, select(d.host, d.entry).where(d.name == "x"))
        assert not reads_in_key_order(conn, select(d.name).where(d.host == "web1"))  # by host
        assert not reads_in_key_order(conn, select(d.name))  # a scan
        assert not reads_in_key_order(conn, select(d.host).where(d.name > "x"))  # a range
    store.close()


def _raw(host: str, entry: str, installed_not_after: int | None, served_fp: str | None,
         served_not_after: int | None, url: str | None, error: str | None,
         ts_served: int | None, ts: int, result: str, db_user: str | None) -> str:
    """A target's values as Split.target_json has MariaDB and PostgreSQL write them."""
    def text(v: str | None) -> str:
        return "null" if v is None else f'"{v}"'

    def number(v: int | None) -> str:
        return "null" if v is None else str(v)

    return "\x1c".join((host, entry, number(installed_not_after), "1" if served_fp else "0",
                         number(served_not_after), text(url), text(error), number(ts_served),
                         number(ts), text(result), text(db_user)))


@pytest.mark.parametrize("values", [
    ("web1", "www", 1800000000, "FP", 1800000000, "tls://web1:443", None, 1790000000,
     1790000001, "up-to-date", None),
    ("web1", "www", None, None, None, None, None, None, 1790000001, "", ""),
    ("web1", "www", 5, "FP", -7, "", "", 0, 0, "installed", "agent@web1"),
    ('q"uote', "back\\slash", 1, "FP", 2, 'say "hi"', "", 3, 4, "up\u2013to-date",
     "caf\u00e9"),
    ("tab\there", "nul\x00", 1, None, 2, None, None, 3, 4, "bell\x07", "del\x7f"),
    ("web1", "www", -1, "FP", -2, "u", None, -3, -4, "r", None),
    ("web1", "a\x7fb", 1, "FP", 2, "u", None, 3, 4, "r", None),
], ids=["served", "nulls-and-empties", "edges", "escaped", "control", "negative", "del"])
def test_python_writes_a_targets_json_as_the_full_view(values: tuple[Any, ...]) -> None:
    """Where the database sends a current target's values (MariaDB, PostgreSQL), Python
    writes the bytes the full view's document holds for it (cert_json through json.dumps,
    compact, non-ASCII escaped), alone and in a certificate's list of targets."""
    import json

    from lecentral.cli.fleet import _current_json

    fp = "ab" * 32
    (host, entry, installed_not_after, served_fp, served_not_after, url, error, ts_served,
     ts, result, db_user) = values
    served_fp = fp if served_fp else served_fp
    row = ("name", host, entry, fp, installed_not_after, served_fp, served_not_after, url,
           error, ts_served, ts, result, db_user)
    want = json.dumps(_current_json(row), separators=(",", ":"))
    raw = _raw(host, entry, installed_not_after, served_fp, served_not_after, url, error,
               ts_served, ts, result, db_user)
    assert jsonpass.target_text(fp, raw) == want
    plain = _raw("web9", "x", 1, fp, 1, "u", None, 1, 1, "r", None)
    plain_json = jsonpass.target_text(fp, plain)
    assert jsonpass.targets_text(fp, f"{plain}\x1f{raw}\x1f{plain}") == (
        f"{plain_json},{want},{plain_json}")


def test_a_certificates_targets_of_every_shape_are_written_as_one_by_one() -> None:
    """Served and unserved targets in any order (each order its own format, cached): the
    targets written at once are those written one at a time, and the full view's JSON."""
    import itertools
    import json

    from lecentral.cli.fleet import _current_json

    fp = "cd" * 32
    shapes = itertools.chain(itertools.chain.from_iterable(
        itertools.product((True, False), repeat=n) for n in (1, 2, 5)), [(True, False) * 6])
    for shape in shapes:  # (the last one longer than those kept)
        targets = [(f"web{i}", f"/etc/e{i}", 10 + i, fp if served else None,
                    20 + i if served else None, f"tls://web{i}:443" if served else None,
                    None, 30 + i if served else None, 40 + i, "up-to-date",
                    None if i % 2 else f"u{i}") for i, served in enumerate(shape)]
        listed = "\x1f".join(_raw(*t) for t in targets)
        want = ",".join(json.dumps(_current_json(("name", *t[:2], fp, *t[2:])),
                                   separators=(",", ":")) for t in targets)
        assert jsonpass.targets_text(fp, listed) == want, shape
        assert ",".join(jsonpass.target_text(fp, _raw(*t)) or "" for t in targets) == want


def test_targets_current_against_a_newer_certificate_are_not_written_as_the_views(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    """``fleet --json NAME`` reads the counted targets after its snapshot: where a renew
    recorded a new certificate meanwhile and the agents report it, the targets are not written
    with the snapshot's fingerprint (their rows are read: what they installed is shown).
    A concurrent writer is stood in for by a write just before that read."""
    import json

    from sqlalchemy import update

    from lecentral.config import RenewConfig
    from lecentral.store.schema import cert_facts, deployments

    name, new = "race.split.example.test", "f" * 64
    cert = fleet.issue(name, age=3)
    fleet.report("web1", name, cert, cert)
    fleet.report("web2", name, cert, cert)
    fleet.store.record_facts(fleet.store.sweep(RenewConfig(), fleet.now).rows)
    real = fleet_store.FleetStore.current_json

    def current_json(self: Any, names: Any) -> Any:
        with fleet.store.transaction("a renew and two reports meanwhile") as conn:
            conn.execute(update(cert_facts).where(cert_facts.c.name == name)
                         .values(fingerprint=new))
            conn.execute(update(deployments).where(deployments.c.name == name)
                         .values(installed_fp=new, served_fp=new))
        return real(self, names)

    monkeypatch.setattr(fleet_store.FleetStore, "current_json", current_json)
    result = fleet.run("fleet", name, "--json")
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.stdout)["certs"]
    assert entry["fingerprint"] == cert.fingerprint
    assert [t["installed"]["fingerprint"] for t in entry["targets"]] == [new, new]


def test_target_values_not_as_the_database_writes_them_are_not_written() -> None:
    """A separator in a value (an extra field), a number that is not one, a text without its
    quotes: None (the row is held, its targets read as rows), never a wrong JSON; where no
    value needs escaping (checked at once) and where one does (one target at a time)."""
    fp = "ab" * 32
    for odd in ("", "caf\u00e9"):
        good = _raw("web1", "www" + odd, 1, "FP", 2, "u", None, 3, 4, "r", None)
        assert jsonpass.target_text(fp, good) is not None
        assert jsonpass.targets_text(fp, good + "\x1f" + good) is not None
        fields = good.split("\x1c")
        for i, bad in ((1, "w\x1cw"), (2, "1.5"), (2, "x"), (2, ""), (3, "2"), (3, ""),
                       (4, '"2"'), (5, "u"), (5, '"u'), (5, '"'), (5, ""), (6, "nul"),
                       (7, "3 "), (8, ""), (8, "null"), (8, "+4"), (9, "r"), (9, ""),
                       (10, "x"), (10, "NULL")):
            changed = "\x1c".join([*fields[:i], bad, *fields[i + 1:]])
            assert jsonpass.target_text(fp, changed) is None, (odd, i, bad)
            assert jsonpass.targets_text(fp, good + "\x1f" + changed) is None, (odd, i, bad)
            assert jsonpass.targets_text(fp, changed + "\x1f" + good) is None, (odd, i, bad)


def test_targets_out_of_order_are_held() -> None:
    """Where SQLite cannot order an aggregate, a row's targets are taken only in (host,
    entry) order, as ORDER BY host, entry gives them."""
    sep, soh = "\x1f", "\x01"

    def keys(*pairs: tuple[str, str]) -> str:
        return sep.join(f"{h}{soh}{e}" for h, e in pairs)

    assert _in_order(keys(("a", "b"), ("a", "z"), ("a b", "c"), ("b", "a")), 4)
    assert not _in_order(keys(("a", "z"), ("a", "b")), 2)
    assert not _in_order(keys(("a b", "c"), ("a", "z")), 2)  # "a (z)" < "a b (c)", not the key
    assert not _in_order(keys(("a", "b")), 2)  # a count that does not add up
    assert not _in_order(keys(("a\x01x", "b"), ("a", "c")), 2)  # a separator in a host
    assert not _in_order(keys(("a", "b\x00"), ("a", "c")), 2)
    assert _in_order(keys(("web1", "x")), 1) and not _in_order("web1", 1)


def _document(text: str) -> dict[str, Any]:
    """A ``fleet --json`` document, its ``now`` left out (the runs compared are not at one
    second)."""
    import json

    data: dict[str, Any] = json.loads(text)
    data.pop("now")
    return data


@pytest.mark.parametrize("stdout", ["pipe", "file", "appended", "reader-gone", "full"])
def test_the_console_script_copies_the_spooled_document_to_any_stdout(
        tmp_path: Path, stdout: str) -> None:
    """The real ``lecentral fleet --json`` copies the spooled certificates to its stdout in the
    kernel (sendfile): through a pipe, into a file, appended to a file (where the kernel cannot
    copy: written as before), the document the pass writes through Python; a reader gone keeps
    exit 0, quietly; a full disk is said, exit 9."""
    import subprocess
    import sysconfig

    from lecentral.config import RenewConfig

    fleet = Fleet(tmp_path)
    try:
        plain_world(fleet)
        first = fleet.issue("0first.split.example.test", age=3)  # spooled, the first
        fleet.report("web1", "0first.split.example.test", first, first)
        fleet.store.record_facts(fleet.store.sweep(RenewConfig(), fleet.now).rows)
        written = fleet.run("fleet", "--json")  # (the test's stdout: through Python)
        assert written.exit_code == 0, written.output
        want = _document(written.stdout)
        assert len(want["certs"]) > 20
        argv = [str(Path(sysconfig.get_path("scripts")) / "lecentral"), "--config",
                str(fleet.config), "fleet", "--json"]
        out = tmp_path / "out.json"
        if stdout == "pipe":
            done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
            assert (done.returncode, done.stderr) == (0, ""), done.stderr
            assert _document(done.stdout) == want
        elif stdout in ("file", "appended"):
            out.write_text("before\n" if stdout == "appended" else "")
            with open(out, "a" if stdout == "appended" else "w") as f:
                done = subprocess.run(argv, stdout=f, stderr=subprocess.PIPE, text=True,
                                      check=False, timeout=120)
            assert (done.returncode, done.stderr) == (0, ""), done.stderr
            text = out.read_text()
            if stdout == "appended":
                assert text.startswith("before\n")
                text = text[len("before\n"):]
            assert _document(text) == want
        elif stdout == "reader-gone":
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE)
            assert process.stdout is not None and process.stderr is not None
            process.stdout.close()
            assert (process.wait(timeout=120), process.stderr.read()) == (0, b"")
        else:
            with open("/dev/full", "wb") as full:
                done = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, text=True,
                                      check=False, timeout=120)
            assert done.returncode == 9, done.stderr
            assert done.stderr.startswith("lecentral: error: the output could not be written "
                                          "to stdout: No space left on device;"), done.stderr
    finally:
        fleet.close()


@pytest.mark.parametrize("args", [("metrics",), ("fleet", "--json"), ("fleet",)])
@pytest.mark.parametrize("how", ["tempdir", "missing", "full"])
def test_no_room_for_temporary_files_is_a_clear_error(fleet: Fleet, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      args: tuple[str, ...], how: str) -> None:
    """$TMPDIR missing or full (a real full tmpfs): exit 1 naming it, nothing written, a
    textfile untouched; never Python's silent fallback to /tmp (a new-user trial found
    metrics rewriting its textfile with its spool in /tmp while TMPDIR named a missing
    directory). ``tempdir``: tempfile's own setting, when TMPDIR is not set."""
    plain_world(fleet)
    where = tmp_path / ("no-such-dir" if how != "full" else "full")
    textfile = tmp_path / "lecentral.prom"
    textfile.write_bytes(b"# previous\n")
    extra = ("--textfile", str(textfile)) if args == ("metrics",) else ()
    with contextlib.ExitStack() as stack:
        if how == "tempdir":
            monkeypatch.delenv("TMPDIR", raising=False)
            monkeypatch.setattr(tempfile, "tempdir", str(where))
        else:
            monkeypatch.setenv("TMPDIR", str(where))
        if how == "full":
            stack.enter_context(tmpfs(where, "64k"))
            fill(where)
        result = fleet.run(*args, *extra)
    assert result.exit_code == 1, result.output
    assert f"cannot use a temporary file in {where}" in result.stderr
    assert result.stdout == ""
    assert textfile.read_bytes() == b"# previous\n"


@pytest.mark.parametrize("args", [("metrics",), ("fleet", "--json"), ("fleet",)])
@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_temporary_files_go_on_every_path(fleet: Fleet, tmp_path: Path, error: type,
                                          monkeypatch: pytest.MonkeyPatch,
                                          args: tuple[str, ...]) -> None:
    """Ctrl-C in the middle of the pass, or the disk filling up under the spool: the files
    are closed (they have no name: nothing stays in $TMPDIR), the textfile untouched, the
    error said."""
    plain_world(fleet)
    made = recorded_temporary_files(monkeypatch)
    cls = pass_of(args)
    real_take = cls.take
    seen = []

    def take(self: Any, row: Any, fp: Any) -> bool:
        seen.append(row)
        if len(seen) == 5:
            if error is OSError:  # the spool's next write fails
                self.flush = _failing_flush
            else:
                raise KeyboardInterrupt
        return bool(real_take(self, row, fp))

    monkeypatch.setattr(cls, "take", take)
    textfile = tmp_path / "lecentral.prom"
    textfile.write_bytes(b"# previous\n")
    extra = ("--textfile", str(textfile)) if args == ("metrics",) else ()
    result = fleet.run(*args, *extra)
    assert made and all(f.closed for f in made)
    assert textfile.read_bytes() == b"# previous\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".lecentral.prom")] == []
    if error is OSError:
        assert result.exit_code == 1, result.output
        assert "No space left on device" in result.stderr
        assert result.stdout == ""
    else:
        assert result.exit_code != 0


def recorded_temporary_files(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every temporary file made from now on (spied on)."""
    made: list[Any] = []
    real = tempfile.TemporaryFile

    def recorded(*a: Any, **kw: Any) -> Any:
        made.append(real(*a, **kw))
        return made[-1]

    monkeypatch.setattr(tempfile, "TemporaryFile", recorded)
    return made


def pass_of(args: tuple[str, ...]) -> Any:
    """The pass (the taker's class) of the command ``args``."""
    return {("metrics",): spool.MetricsPass, ("fleet",): textpass.TextPass}.get(
        args, jsonpass.JsonPass)


def _failing_flush() -> None:
    raise tempfiles.temp_error(OSError(28, "No space left on device"))


def test_a_listing_the_database_cut_is_not_trusted(mariadb_server: Any, mariadb_url: str,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """MariaDB and MySQL cut an aggregated string at group_concat_max_len bytes (MySQL's
    default is 1,024); a cut that falls in the last target still adds up to the count. Such a
    certificate is judged in full: every target's label whole, the bytes of the held view.
    (The fleet commands raise the session's limit: not here, to cut.)"""
    fleet = Fleet(tmp_path, mariadb_url)
    (previous,), = mariadb_server.execute("SELECT @@GLOBAL.group_concat_max_len")
    monkeypatch.setattr(fleet_store, "AGGREGATE_BYTES", 0)
    try:
        import lecentral.certificates
        import lecentral.cli.fleet
        import lecentral.names

        for module in (lecentral.names, lecentral.certificates, lecentral.cli.fleet):
            monkeypatch.setattr(module, "now_ts", lambda: fleet.now)
        plain_world(fleet)
        name = "many.split.example.test"
        cert = fleet.issue(name, age=2)
        targets = [f"h{i:02d}.example.test (entry-{i:02d}-xxxxxxxx)" for i in range(9)]
        for i in range(9):
            fleet.report(f"h{i:02d}.example.test", name, cert, cert, entry=f"entry-{i:02d}-xxxxxxxx")
        from lecentral.config import RenewConfig

        fleet.store.record_facts(fleet.store.sweep(RenewConfig(), fleet.now).rows)
        listed = len("\x1f".join(targets).encode())
        # the cut falls in the last target: 8 separators are left, the count adds up
        limit = listed - len(targets[-1]) // 2
        mariadb_server.execute(f"SET GLOBAL group_concat_max_len = {limit}")
        passed, held = _run_both(fleet, monkeypatch, "metrics")
        assert passed == held
        for target in targets:
            assert f'lecentral_deployment_current{{name="{name}",target="{target}"}} 1.0\n'.encode() \
                in passed
        passed, held = _run_both(fleet, monkeypatch, "fleet", "--json")
        assert passed == held
    finally:
        mariadb_server.execute(f"SET GLOBAL group_concat_max_len = {previous}")
        fleet.close()


def test_check_does_not_trust_a_list_of_names_the_database_cut(
        mariadb_server: Any, mariadb_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """check lists the names of the rows that are not plainly OK in one aggregated string;
    wherever MariaDB cuts it (group_concat_max_len), check's lines are those of the whole list
    (a cut in the last name used to add up and lose that row). (The session's limit is not
    raised here, to cut.)"""
    fleet = Fleet(tmp_path, mariadb_url)
    monkeypatch.setattr(fleet_store, "AGGREGATE_BYTES", 0)
    (previous,), = mariadb_server.execute("SELECT @@GLOBAL.group_concat_max_len")
    try:
        plain_world(fleet)
        _, want = fleet.check("--max-lines", "0")
        # the list of the rows not plainly OK is a few hundred bytes: cut it all along (every
        # 7th byte: inside names at many offsets, and at separators)
        for limit in range(4, 400, 7):
            mariadb_server.execute(f"SET GLOBAL group_concat_max_len = {limit}")
            _, got = fleet.check("--max-lines", "0")
            assert got[1:] == want[1:], limit
            assert got[0].split(" | ")[0] == want[0].split(" | ")[0], limit
    finally:
        mariadb_server.execute(f"SET GLOBAL group_concat_max_len = {previous}")
        fleet.close()


def test_mysql_default_aggregate_limit_does_not_make_the_pass_give_up(
        mariadb_server: Any, mariadb_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """MySQL's default group_concat_max_len (1,024 bytes) is shorter than the targets' JSON of
    one certificate on 3 hosts: the pass would give up and judge every row in Python (at
    100,000 certificates: seconds and hundreds of MiB). The fleet commands raise the session's
    limit: the pass takes the plainly current rows, and writes the bytes of the held view."""
    fleet = Fleet(tmp_path, mariadb_url)
    (previous,), = mariadb_server.execute("SELECT @@GLOBAL.group_concat_max_len")
    import lecentral.certificates
    import lecentral.cli.fleet
    import lecentral.names

    for module in (lecentral.names, lecentral.certificates, lecentral.cli.fleet):
        monkeypatch.setattr(module, "now_ts", lambda: fleet.now)
    spied = _Taken(monkeypatch)
    try:
        plain_world(fleet)
        mariadb_server.execute("SET GLOBAL group_concat_max_len = 1024")
        for args in (("metrics",), ("fleet", "--json"), ("fleet",)):
            spied.taken = 0
            passed, held = _run_both(fleet, monkeypatch, *args)
            assert passed == held, args
            assert spied.taken >= len(OK) - 2, args
        (session,), = mariadb_server.execute("SELECT @@SESSION.group_concat_max_len")
        assert session == 1024  # another session (the server's own) keeps its limit
    finally:
        mariadb_server.execute(f"SET GLOBAL group_concat_max_len = {previous}")
        fleet.close()


# -- the order of a certificate's targets ------------------------------------------------------
# The full view's, which reads the deployments in the database's order (MariaDB's collations
# ignore case and weigh "_" after letters; a PostgreSQL column may have such a collation),
# whether the pass judges a certificate in full in its own read (some targets not current, a
# probe result), the held view judges it, or the full view does. Found by a review: the rows
# Python judges were sorted by Python's order of strings, and hosts differing in case came out
# in another order than the full view's.

N = "mix.order.example.test"


def _settled(fleet: Fleet) -> None:
    """A renew run, and the facts of every row as its sweep records them."""
    from lecentral.config import RenewConfig

    fleet.renew_run()
    fleet.store.record_facts(fleet.store.sweep(RenewConfig(), fleet.now).rows)


def _reported(fleet: Fleet, name: str, current: Sequence[tuple[str, str | None]],
              stale: Sequence[tuple[str, str | None]] = ()) -> Any:
    """``name`` issued, installed and served by each (host, entry) of ``current``, its
    previous certificate by each of ``stale``; the certificate issued."""
    issued = fleet.issue(name, age=10)
    old = fleet.cert(name, days=90, age=70)
    for targets, cert in ((current, issued), (stale, old)):
        for host, entry in targets:
            fleet.report(host, name, cert, cert, entry=entry)
    return issued


def hosts_in_case(fleet: Fleet) -> None:
    _reported(fleet, N, [("Web2", None), ("web3", None)], [("web1", None)])
    _settled(fleet)


def hosts_in_case_probed(fleet: Fleet) -> None:
    issued = _reported(fleet, N, [("Web2", None), ("web1", None)])
    fleet.probe(N, "https://lb.order.example.test/", issued)
    _settled(fleet)


def entries_in_case(fleet: Fleet) -> None:
    _reported(fleet, N, [("web1", "Zed")], [("web1", "alpha")])
    _settled(fleet)


def entries_with_marks(fleet: Fleet) -> None:
    _reported(fleet, N, [("web1", e) for e in ("a", "a-b", "a_b", "ab")], [("web1", "a ")])
    _settled(fleet)


def upper_case_name(fleet: Fleet) -> None:
    from sqlalchemy import update

    from lecentral.store.schema import certs

    name = "Up.order.example.test"
    c = fleet.issue(name.lower(), age=10)
    with fleet.store.transaction("capitalising") as conn:
        conn.execute(update(certs).where(certs.c.name == name.lower()).values(name=name))
    old = fleet.cert(name.lower(), days=90, age=70, key=fleet.keys[name.lower()])
    fleet.report("web1", name, c, c)
    fleet.report("web2", name, old, old)
    _settled(fleet)


def final_dot(fleet: Fleet) -> None:
    _reported(fleet, "dot.order.example.test.", [("web1", None)], [("web2", None)])
    _settled(fleet)


def another_spelling(fleet: Fleet) -> None:
    issued = _reported(fleet, N, [("web1", None)], [("web2", None)])
    fleet.report("web3", N.upper(), issued, issued)  # filed under the certificate by the judge
    _settled(fleet)


def another_spelling_probed(fleet: Fleet) -> None:
    issued = _reported(fleet, N, [("web1", None)], [("web2", None)])
    fleet.probe(N.upper(), "https://lb.order.example.test/", issued)
    _settled(fleet)


def disabled(fleet: Fleet) -> None:
    _reported(fleet, N, [("web1", None)], [("web2", None)])
    _settled(fleet)
    _disable(fleet, N)


def facts_of_an_older_crt(fleet: Fleet) -> None:
    _reported(fleet, N, [("web1", None), ("web2", None)])
    _settled(fleet)
    new = fleet.issue(N, age=0.5)  # after the sweep: the facts describe the one before
    fleet.report("web3", N, new, new)


def none_current(fleet: Fleet) -> None:
    _reported(fleet, N, [], [("Web2", None), ("web1", None)])
    _settled(fleet)


def two_stored_spellings(fleet: Fleet) -> None:
    """Two ``certs`` rows of one key (the seed's populate.pl stored names as typed), each
    spelling reported, none current: the judge files every row under one certificate."""
    from sqlalchemy import insert, select

    from lecentral.store.schema import certs

    name = "two.order.example.test"
    fleet.issue(name, age=10)
    old = fleet.cert(name, days=90, age=70)
    with fleet.store.transaction("a second spelling") as conn:
        row = dict(conn.execute(select(certs).where(certs.c.name == name)).mappings().one())
        conn.execute(insert(certs).values(**{**row, "name": name.upper()}))
    for host, spelling in (("web1", name), ("web2", name.upper()), ("web3", name)):
        fleet.report(host, spelling, old, old)
    _settled(fleet)


WORLDS: list[Callable[[Fleet], None]] = [
    hosts_in_case, hosts_in_case_probed, entries_in_case, entries_with_marks, upper_case_name,
    final_dot, another_spelling, another_spelling_probed, disabled, facts_of_an_older_crt,
    none_current, two_stored_spellings]


def _full_json(fleet: Fleet) -> bytes:
    """``fleet --json`` from the full view (``--notify``: no split, no pass)."""
    result = fleet.run("fleet", "--json", "--notify")
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


@pytest.mark.parametrize("made", WORLDS, ids=[w.__name__ for w in WORLDS])
def test_targets_in_the_full_views_order(frozen: Fleet, made: Callable[[Fleet], None],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = frozen
    made(fleet)
    for args in (("fleet", "--json"), ("fleet",)):
        passed, held = _run_both(fleet, monkeypatch, *args)
        assert passed == held, args
        if args[-1] == "--json":
            assert passed == _full_json(fleet)


def test_a_postgresql_collation_that_ignores_case(postgres_url: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The host column with an ICU collation (a database created with a locale other than C
    sorts so): the targets in that collation's order, as the full view reads them."""
    from sqlalchemy import text

    import lecentral.certificates
    import lecentral.cli.fleet
    import lecentral.names

    fleet = Fleet(tmp_path, postgres_url)
    try:
        for module in (lecentral.names, lecentral.certificates, lecentral.cli.fleet):
            monkeypatch.setattr(module, "now_ts", lambda: fleet.now)
        with fleet.store.transaction("a collation that ignores case") as conn:
            conn.execute(text('ALTER TABLE lecentral_deployments ALTER COLUMN host '
                              'TYPE varchar(255) COLLATE "und-x-icu"'))
        hosts_in_case(fleet)
        outputs: dict[str, Any] = {}
        for args in (("fleet", "--json"), ("fleet",)):
            passed, held = _run_both(fleet, monkeypatch, *args)
            assert passed == held, args
            outputs[args[-1]] = passed
        assert outputs["--json"] == _full_json(fleet)
        # web1 (stale) sorts before Web2 there, after it in Python's order of strings
        lines = outputs["fleet"].decode().splitlines()
        shown = [line.split()[0] for line in lines if " (" in line and "order" in line]
        assert shown and shown.index("web1") < shown.index("Web2"), lines
    finally:
        fleet.close()
