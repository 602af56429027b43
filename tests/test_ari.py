"""ACME Renewal Information (RFC 9773) in the renew job's due decision, and the windows kept in
the database until the CA's Retry-After (lecentral/renew/ari.py, ``lecentral_ari_windows``).

Debian's Pebble (2.4) offers no ``renewalInfo``, and no other ACME server can run here, so these
tests stand in a minimal HTTP server for the CA's directory and renewalInfo endpoint (the one
part that is not real): it answers the windows and the ``Retry-After`` a test sets, and counts
the requests. Everything else is real: RenewalInfoReader, due_reason, the renew job and the
database (SQLite; the sweep on MariaDB and PostgreSQL too). Time passing (a retry time reached)
is the stored retry time moved into the past, in the database.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from lecentral_testing.agent import TestCA
from lecentral_testing.central import new_row
from lecentral_testing.pki import make_csr

from lecentral.acme.client import RenewalInfoReader, ari_cert_id
from lecentral.certificates import Certificate, now_ts
from lecentral.config import AcmeConfig, CentralConfig
from lecentral.renew import due_reason

UTC = dt.UTC


class AriCa:
    """``/dir`` names ``/ari``; ``/ari/<certID>`` answers the window set in ``windows``."""

    def __init__(self) -> None:
        self.windows: dict[str, Any] = {}
        self.fail = False
        #: answer 200 with a body that is not JSON
        self.garbage = False
        #: the Retry-After header of renewalInfo answers (None: none sent)
        self.retry_after: str | None = "21600"
        #: when set, each renewalInfo request waits there (proves requests run at once)
        self.barrier: threading.Barrier | None = None
        self.requests: list[str] = []
        #: the client port of each renewalInfo request (one per HTTP connection)
        self.ports: set[int] = set()
        #: called on each renewalInfo request, before it is answered
        self.on_request: Any = None
        ca = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                ca.requests.append(self.path)
                if self.path.startswith("/ari/"):
                    ca.ports.add(self.client_address[1])
                    if ca.on_request is not None:
                        ca.on_request()
                    if ca.barrier is not None:
                        try:
                            ca.barrier.wait()
                        except threading.BrokenBarrierError:
                            self.send_error(500)
                            return
                if self.path == "/dir":
                    body: Any = {"renewalInfo": f"http://127.0.0.1:{ca.port}/ari"}
                elif self.path.startswith("/ari/") and not ca.fail and \
                        self.path[5:] in ca.windows:
                    body = ca.windows[self.path[5:]]
                else:
                    self.send_error(500)
                    return
                data = (b"<html>busy</html>" if ca.garbage and self.path.startswith("/ari/")
                        else json.dumps(body).encode())
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if ca.retry_after is not None and self.path.startswith("/ari/"):
                    self.send_header("Retry-After", ca.retry_after)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ari_ca() -> Iterator[AriCa]:
    ca = AriCa()
    yield ca
    ca.close()


def issued_row(days_left: int, name: str = "ari.example.test",
               ca: TestCA | None = None) -> tuple[Any, bytes]:
    """A row whose certificate (signed by a test CA, with an AKI) expires in ``days_left``."""
    csr, _ = make_csr([name])
    ca = ca or TestCA()
    start = dt.datetime.now(UTC) - dt.timedelta(days=90 - days_left)
    crt = ca.sign(csr, days=90, start=start)
    row = replace(new_row(csr), crt=crt, ca=ca.pem, ts_expire=Certificate.load(crt).not_after,
                  ts_last_update=now_ts() - 86400)
    return row, crt


def config_for(ca: AriCa) -> CentralConfig:
    return CentralConfig(acme=AcmeConfig(directory=f"http://127.0.0.1:{ca.port}/dir"))


def window(start_days: float, end_days: float) -> dict[str, Any]:
    now = dt.datetime.now(UTC)
    return {"suggestedWindow": {
        "start": (now + dt.timedelta(days=start_days)).isoformat(),
        "end": (now + dt.timedelta(days=end_days)).isoformat()}}


def test_an_open_window_makes_a_certificate_due_early(ari_ca: AriCa) -> None:
    """60 days left (not due by before_days), but the CA says renew now (a revocation)."""
    row, crt = issued_row(60)
    ari_ca.windows[ari_cert_id(crt)] = window(-2, -1)
    config = config_for(ari_ca)
    reader = RenewalInfoReader(config.acme)
    assert reader.offered
    assert due_reason(row, now_ts(), config, False, None)[0] is False  # without ARI: not yet
    due, why = due_reason(row, now_ts(), config, False, reader)
    assert due and "ARI" in why
    reader.close()


def test_a_future_window_waits(ari_ca: AriCa) -> None:
    row, crt = issued_row(60)
    ari_ca.windows[ari_cert_id(crt)] = window(20, 25)
    config = config_for(ari_ca)
    reader = RenewalInfoReader(config.acme)
    due, why = due_reason(row, now_ts(), config, False, reader)
    assert not due and why.startswith("expires in")
    reader.close()


def test_ari_never_delays_before_days(ari_ca: AriCa) -> None:
    """10 days left: due by the renewal window (1/3 of 90 days) even if the CA's window is
    later."""
    row, crt = issued_row(10)
    ari_ca.windows[ari_cert_id(crt)] = window(30, 40)
    config = config_for(ari_ca)
    reader = RenewalInfoReader(config.acme)
    due, why = due_reason(row, now_ts(), config, False, reader)
    assert due and "1/3 of its 90-day lifetime left" in why
    reader.close()


def test_a_broken_endpoint_falls_back_to_before_days(ari_ca: AriCa,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    row, _ = issued_row(60)
    ari_ca.fail = True
    config = config_for(ari_ca)
    reader = RenewalInfoReader(config.acme)
    due, _ = due_reason(row, now_ts(), config, False, reader)
    assert not due
    assert "the renewal window (renew.before) decides" in caplog.text
    reader.close()


def test_a_dry_run_asks_the_ca_nothing(ari_ca: AriCa, tmp_path: Path) -> None:
    """``renew --dry-run`` contacts no CA, not even for renewal information: it decides on dates
    alone (an open ARI window is not seen), and says so in the docs."""
    from lecentral.registry import Registry
    from lecentral.renew import RenewJob, RenewRequest
    from lecentral.store.sql import SqlStore

    row, crt = issued_row(60)
    ari_ca.windows[ari_cert_id(crt)] = window(-2, -1)
    store = SqlStore(f"sqlite:///{tmp_path}/db.sqlite")
    store.init_schema()
    store.add(replace(row, enable=True))
    config = replace(config_for(ari_ca), renew=replace(CentralConfig().renew,
                                                       state_dir=str(tmp_path / "state")))
    report = RenewJob(config, store, Registry.load(entrypoints=False)).run(
        RenewRequest(dry_run=True))
    assert [(o.name, o.status) for o in report.final] == [("ari.example.test", "not-due")]
    assert ari_ca.requests == []
    store.close()


def test_a_sweep_reads_a_row_whose_window_is_not_kept(ari_ca: AriCa, tmp_path: Path) -> None:
    """A dry run records the row's facts (good, not due by its dates); a real run then may not
    skip it in SQL, since the CA offers ARI and no window is kept for it: it asks the
    certificate's window (open: due)."""
    from lecentral.registry import Registry
    from lecentral.renew import RenewJob, RenewRequest
    from lecentral.store.sql import SqlStore

    row, crt = issued_row(60)
    ari_ca.windows[ari_cert_id(crt)] = window(-2, -1)
    store = SqlStore(f"sqlite:///{tmp_path}/db.sqlite")
    store.init_schema()
    store.add(replace(row, enable=True))
    config = replace(config_for(ari_ca), renew=replace(CentralConfig().renew,
                                                       state_dir=str(tmp_path / "state")))
    job = RenewJob(config, store, Registry.load(entrypoints=False))
    assert job.run(RenewRequest(dry_run=True)).unchanged == 0
    assert job.run(RenewRequest(dry_run=True)).unchanged == 1  # skipped in SQL: no CA asked
    assert ari_ca.requests == []
    report = RenewJob(config, store, Registry.load(entrypoints=False)).run(
        RenewRequest(once=True))
    assert report.unchanged == 0
    assert f"/ari/{ari_cert_id(crt)}" in ari_ca.requests
    assert ari_ca.requests.count("/dir") == 1  # the directory read once per run
    assert [o.status for o in report.final] != ["not-due"]
    store.close()


def _show_world(ari_ca: AriCa, tmp_path: Path, extra: str = "") -> tuple[Any, Path]:
    """A SQLite store holding one issued row (60 days left) whose certificate the stand-in CA
    gives a window 2 to 3 days from now, and a configuration for that CA (with ``extra``)."""
    from lecentral.store.sql import SqlStore

    row, crt = issued_row(days_left=60)
    store = SqlStore(f"sqlite:///{tmp_path}/l.db")
    store.init_schema()
    store.add(row)
    store.close()
    config = tmp_path / "lecentral.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/l.db"\n'
                      f'[acme]\ndirectory = "http://127.0.0.1:{ari_ca.port}/dir"\n{extra}')
    ari_ca.windows[ari_cert_id(crt)] = window(2, 3)
    return row, config


def test_show_says_when_the_ari_window_renews_it(ari_ca: AriCa, tmp_path: Path) -> None:
    """``lecentral show`` asks the CA's ARI for that one certificate: a window earlier than the
    lifetime rule is the renewal time shown, with the window as the reason; without a window
    (a CA without ARI, here one answering 500) the lifetime rule stays, said so."""
    from click.testing import CliRunner

    from lecentral.cli.central import main

    row, config = _show_world(ari_ca, tmp_path)

    result = CliRunner().invoke(main, ["--config", str(config), "show", row.name, "--json"])

    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["ari_window"] is not None
    assert info["renew_reason"].startswith("the CA's ARI window ")
    assert now_ts() + 2 * 86400 - 60 <= info["ts_renew_at"] <= now_ts() + 3 * 86400
    ari_ca.fail = True
    text = CliRunner().invoke(main, ["--config", str(config), "show", row.name])
    assert "1/3 of its" in text.stdout and "the CA offers no ARI window" in text.stdout


def test_show_says_nothing_of_ari_when_it_is_off(ari_ca: AriCa, tmp_path: Path) -> None:
    """With ``[renew] ari = false`` the renew job never asks the CA's ARI, and neither does
    ``show``: its renews line used to end '; the CA offers no ARI window' (a CA that offers
    one); now it says nothing of ARI, and --json has no ari_window."""
    from click.testing import CliRunner

    from lecentral.cli.central import main

    row, config = _show_world(ari_ca, tmp_path, "[renew]\nari = false\n")
    asked = len(ari_ca.requests)

    text = CliRunner().invoke(main, ["--config", str(config), "show", row.name])
    info = json.loads(CliRunner().invoke(main, ["--config", str(config), "show", row.name,
                                                "--json"]).stdout)

    assert text.exit_code == 0, text.output
    [renews] = [line for line in text.stdout.splitlines() if line.startswith("renews ")]
    assert renews.endswith("(1/3 of its 90-day lifetime left)"), renews
    assert "ARI" not in text.stdout
    assert "ari_window" not in info and info["renew_reason"] == "1/3 of its 90-day lifetime left"
    assert len(ari_ca.requests) == asked  # the CA was not asked


# -- the windows kept until Retry-After (lecentral/renew/ari.py) -----------------------------------


def ari_asked(ca: AriCa) -> int:
    return len([p for p in ca.requests if p.startswith("/ari/")])


def stored_windows(store: Any) -> dict[str, dict[str, Any]]:
    from sqlalchemy import select

    from lecentral.store.schema import ari_windows

    with store.engine.begin() as conn:
        return {r["name"]: dict(r) for r in conn.execute(select(ari_windows)).mappings()}


def age_windows(store: Any, **values: Any) -> None:
    """Time passing for the cached windows: their retry time (and fetch time) moved back."""
    from sqlalchemy import update

    from lecentral.store.schema import ari_windows

    now = now_ts()
    values = values or {"ts_fetched": now - 7 * 3600, "ts_retry": now - 3600}
    with store.engine.begin() as conn:
        conn.execute(update(ari_windows).values(**values))


class World:
    """A store holding rows whose certificates are 60 days from expiry, a renew job's config
    for the stand-in CA, and a run."""

    def __init__(self, ca: AriCa, url: str, tmp_path: Path, count: int = 1) -> None:
        from lecentral.store.sql import SqlStore

        self.ca = ca
        self.store = SqlStore(url)
        self.store.init_schema()
        self.crts: dict[str, bytes] = {}
        test_ca = TestCA()
        for number in range(count):
            name = f"ari{number}.example.test"
            row, crt = issued_row(60, name, test_ca)
            self.store.add(row)
            self.store.save_issued(name, crt, test_ca.pem, Certificate.load(crt).not_after,
                                   now_ts() - 86400)
            self.crts[name] = crt
            ca.windows[ari_cert_id(crt)] = window(20, 25)
        self.config = replace(config_for(ca), renew=replace(CentralConfig().renew,
                                                            state_dir=str(tmp_path / "state")))

    def job(self) -> Any:
        from lecentral.registry import Registry
        from lecentral.renew import RenewJob

        return RenewJob(self.config, self.store, Registry.load(entrypoints=False))

    def run(self, *names: str) -> Any:
        from lecentral.renew import RenewRequest

        return self.job().run(RenewRequest(names=list(names), once=True))


@pytest.fixture
def world(ari_ca: AriCa, tmp_path: Path) -> Iterator[World]:
    found = World(ari_ca, f"sqlite:///{tmp_path}/db.sqlite", tmp_path)
    yield found
    found.store.close()


def test_a_window_is_kept_until_the_retry_after(world: World) -> None:
    """The first run asks the CA and stores the window with its retry time (the CA's
    Retry-After); the next runs, a whole sweep and ``renew NAME``, ask nothing: the sweep skips
    the row in SQL, NAME reads it and decides with the cached window."""
    world.ca.retry_after = "3600"
    before = now_ts()
    first = world.run()
    assert [(o.name, o.status) for o in first.final] == [("ari0.example.test", "not-due")]
    assert ari_asked(world.ca) == 1
    stored = stored_windows(world.store)["ari0.example.test"]
    crt = world.crts["ari0.example.test"]
    assert stored["ari_cert_id"] == ari_cert_id(crt)
    assert stored["fingerprint"] == Certificate.load(crt).fingerprint
    assert before <= stored["ts_fetched"] <= now_ts()
    assert stored["ts_retry"] == stored["ts_fetched"] + 3600
    assert stored["window_start"] < stored["due_at"] < stored["window_end"]

    second = world.run()
    assert second.unchanged == 1 and second.final == []
    assert ari_asked(world.ca) == 1
    named = world.run("ari0.example.test")
    assert [(o.name, o.status) for o in named.final] == [("ari0.example.test", "not-due")]
    assert ari_asked(world.ca) == 1
    assert stored_windows(world.store)["ari0.example.test"] == stored


def test_an_open_cached_window_makes_it_due_without_asking(world: World) -> None:
    """A cached window that has opened (the CA moved it into the past) makes the row due: the
    sweep reads it (its due time has come) and the cache says so, no request."""
    from sqlalchemy import update

    from lecentral.store.schema import ari_windows

    world.run()
    assert ari_asked(world.ca) == 1
    now = now_ts()
    with world.store.engine.begin() as conn:
        conn.execute(update(ari_windows).values(window_start=now - 2 * 86400,
                                                window_end=now - 86400))
        # due_at is the certificate's point in the window, as stored by lecentral
        from lecentral.renew.checks import ari_due_at

        fingerprint = Certificate.load(world.crts["ari0.example.test"]).fingerprint
        conn.execute(update(ari_windows).values(
            due_at=ari_due_at(now - 2 * 86400, now - 86400, fingerprint)))
    report = world.run()
    assert report.unchanged == 0
    assert ari_asked(world.ca) == 1
    assert [o.status for o in report.final] != ["not-due"]


def test_a_window_is_asked_again_after_its_retry_time(world: World) -> None:
    world.run()
    age_windows(world.store)
    world.ca.windows[ari_cert_id(world.crts["ari0.example.test"])] = window(30, 31)
    world.ca.retry_after = "7200"
    report = world.run()
    assert report.unchanged == 0  # read: its cached window is stale
    assert ari_asked(world.ca) == 2
    stored = stored_windows(world.store)["ari0.example.test"]
    assert stored["ts_retry"] == stored["ts_fetched"] + 7200 and stored["ts_fetched"] >= now_ts() - 60
    assert stored["window_start"] >= now_ts() + 29 * 86400
    world.run()
    assert ari_asked(world.ca) == 2


def store_another_certificate(world: World) -> bytes:
    """Another certificate for ari0 written into its row as download_cert.pl would (the stand-in
    CA knows its window); returns it."""
    from sqlalchemy import update

    from lecentral.certificates import md5_ca
    from lecentral.store.schema import certs

    row, crt = issued_row(59, "ari0.example.test")
    world.ca.windows[ari_cert_id(crt)] = window(20, 25)
    with world.store.engine.begin() as conn:
        conn.execute(update(certs).values(crt=crt, ca=row.ca, md5_ca=md5_ca(row.ca),
                                          ts_expire=row.ts_expire, md5_modulus=row.md5_modulus,
                                          csr=row.csr))
    return crt


def test_a_new_certificate_needs_a_new_answer(world: World) -> None:
    """download_cert.pl (or any writer) stores another certificate: the cached window is for the
    old one (another ARI certID): the next run asks for the new one, whatever the retry time."""
    world.run()
    crt = store_another_certificate(world)
    report = world.run()
    assert [(o.name, o.status) for o in report.final] == [("ari0.example.test", "not-due")]
    assert world.ca.requests[-1] == f"/ari/{ari_cert_id(crt)}"
    assert ari_asked(world.ca) == 2
    assert stored_windows(world.store)["ari0.example.test"]["ari_cert_id"] == ari_cert_id(crt)


@pytest.mark.parametrize("failure", ["500", "garbage", "backwards"])
def test_a_failed_request_backs_off_and_the_renewal_window_decides(
        world: World, failure: str, caplog: pytest.LogCaptureFixture) -> None:
    """The cached window's retry time passed; the CA answers 500, a body that is not JSON, or a
    window ending before it starts: a warning, the renewal window decides (not due), and the
    failure is stored (a window of 0 to 0) with a back-off of an hour: the next runs ask
    nothing (the sweep skips the row, NAME reads it and the renewal window decides), without
    another warning (RFC 9773 §4.3.3: retry with a back-off)."""
    from lecentral.renew.ari import BACKOFF_MIN

    world.run()
    age_windows(world.store)
    if failure == "500":
        world.ca.fail = True
    elif failure == "garbage":
        world.ca.garbage = True
    else:
        world.ca.windows[ari_cert_id(world.crts["ari0.example.test"])] = window(3, 2)
    before = now_ts()
    report = world.run()
    assert [(o.name, o.status) for o in report.final] == [("ari0.example.test", "not-due")]
    assert report.final[0].message.startswith("expires in")
    assert "the renewal window (renew.before) decides" in caplog.text or \
        "ends before it starts; ignored" in caplog.text
    assert ari_asked(world.ca) == 2
    stored = stored_windows(world.store)["ari0.example.test"]
    assert (stored["window_start"], stored["window_end"], stored["due_at"]) == (0, 0, 0)
    assert stored["ari_cert_id"] == ari_cert_id(world.crts["ari0.example.test"])
    assert before <= stored["ts_fetched"] <= now_ts()
    assert stored["ts_retry"] == stored["ts_fetched"] + BACKOFF_MIN
    caplog.clear()
    second = world.run()
    assert second.unchanged == 1 and second.final == []
    named = world.run("ari0.example.test")
    assert [(o.name, o.status) for o in named.final] == [("ari0.example.test", "not-due")]
    assert ari_asked(world.ca) == 2
    assert "renewal information" not in caplog.text
    assert stored_windows(world.store)["ari0.example.test"] == stored


def test_failures_back_off_as_long_as_they_lasted_until_an_answer_replaces_them(
        world: World) -> None:
    """The back-off grows with the failures: asked again after it, a certificate whose
    requests have failed for three hours waits three hours more, one failing for days six
    hours (at most: as often as a CA that sends no Retry-After is asked); a failure row whose
    back-off ended long ago (ARI off meanwhile) starts afresh (an hour); the first answer
    replaces the failure row with the window and its Retry-After."""
    from lecentral.renew.ari import BACKOFF_MAX, BACKOFF_MIN

    world.ca.fail = True
    world.run()
    assert ari_asked(world.ca) == 1
    for lasted, retried, wait in ((3 * 3600, 1, 3 * 3600), (5 * 86400, 1, BACKOFF_MAX),
                                  (30 * 86400, 7 * 86400, BACKOFF_MIN)):
        began = now_ts() - lasted
        age_windows(world.store, ts_fetched=began, ts_retry=now_ts() - retried)
        world.run()
        stored = stored_windows(world.store)["ari0.example.test"]
        assert stored["ts_retry"] - stored["ts_fetched"] >= wait
        if retried == 1:  # the failures went on: since when is kept
            assert stored["ts_fetched"] == began
            # (they have lasted ``lasted`` and the seconds the clock moved on since ``began``
            # was set: a second that ticks before the run adds one to an uncapped back-off)
            moved = now_ts() - (began + lasted) if wait < BACKOFF_MAX else 0
            assert stored["ts_retry"] - now_ts() in range(wait - 60, wait + moved + 1)
        else:
            assert stored["ts_fetched"] >= now_ts() - 60
            assert stored["ts_retry"] == stored["ts_fetched"] + wait
    assert ari_asked(world.ca) == 4
    world.ca.fail = False
    age_windows(world.store, ts_retry=now_ts() - 1)
    world.run()
    assert ari_asked(world.ca) == 5
    stored = stored_windows(world.store)["ari0.example.test"]
    assert stored["window_start"] < stored["due_at"] < stored["window_end"]
    assert stored["ts_retry"] == stored["ts_fetched"] + 21600
    world.run()
    assert ari_asked(world.ca) == 5


def _monitor(world: World, tmp_path: Path, ari: bool = True) -> tuple[dict[str, Any], str]:
    """``lecentral check --json`` and ``lecentral metrics`` on the world's database."""
    from click.testing import CliRunner

    from lecentral.cli.central import main

    toml = tmp_path / "monitor.toml"
    toml.write_text(f'[database]\nurl = "{world.store.url}"\n'
                    f'[renew]\nari = {"true" if ari else "false"}\n'
                    f'state_dir = "{tmp_path}/state"\n')
    check = CliRunner().invoke(main, ["--config", str(toml), "check", "--json"])
    metrics = CliRunner().invoke(main, ["--config", str(toml), "metrics"])
    assert metrics.exit_code == 0, metrics.output
    return json.loads(check.stdout), metrics.stdout


def test_check_and_metrics_tell_requests_failing_for_a_day(world: World, tmp_path: Path) -> None:
    """A failure of an hour is the back-off's business; failures lasting more than a day are
    a WARNING of check (``ari-failing``, fleet-wide, perfdata ``ari_failing``) and
    ``lecentral_ari_failing_certificates`` (rule LecentralAriFailing): the renewal time
    decides meanwhile and a renewal the CA moves earlier is not seen. Not counted: a disabled
    certificate, a failure no request has seen for a day (ARI turned off, the CA gone from the
    config), and nothing at all with ``[renew] ari`` off."""
    from sqlalchemy import update

    from lecentral.store.schema import certs

    world.ca.fail = True
    world.run()
    data, text = _monitor(world, tmp_path)
    assert [p for p in data["problems"] if p["kind"] == "ari-failing"] == []
    assert "ari_failing=0;;;0" in data["perfdata"]
    assert "\nlecentral_ari_failing_certificates 0.0\n" in text

    now = now_ts()
    age_windows(world.store, ts_fetched=now - 2 * 86400 - 600, ts_retry=now + 3600)
    data, text = _monitor(world, tmp_path)
    (problem,) = [p for p in data["problems"] if p["kind"] == "ari-failing"]
    assert problem["severity"] == "WARNING" and problem["name"] is None
    assert problem["text"].startswith("renewal information (ARI): the requests for 1 "
                                      "certificate(s) have failed for more than a day (the "
                                      "first since 2.0d ago)")
    assert "ari_failing=1;;;0" in data["perfdata"]
    assert "\nlecentral_ari_failing_certificates 1.0\n" in text

    data, text = _monitor(world, tmp_path, ari=False)
    assert not [p for p in data["problems"] if p["kind"] == "ari-failing"]
    assert not [p for p in data["perfdata"] if p.startswith("ari_failing=")]
    assert "lecentral_ari_failing_certificates" not in text

    age_windows(world.store, ts_fetched=now - 9 * 86400, ts_retry=now - 2 * 86400)
    data, _ = _monitor(world, tmp_path)
    assert "ari_failing=0;;;0" in data["perfdata"]
    age_windows(world.store, ts_fetched=now - 2 * 86400, ts_retry=now + 3600)
    with world.store.engine.begin() as conn:
        conn.execute(update(certs).values(enable="N"))
    data, _ = _monitor(world, tmp_path)
    assert "ari_failing=0;;;0" in data["perfdata"]


def test_a_failure_of_the_previous_certificate_does_not_hold_the_new_one(world: World) -> None:
    """The failure row is for the certificate that was asked about: once another one is
    stored, it is asked at the next run, back-off or not."""
    world.ca.fail = True
    world.run()
    world.ca.fail = False
    crt = store_another_certificate(world)
    world.run()
    assert world.ca.requests[-1] == f"/ari/{ari_cert_id(crt)}"
    assert stored_windows(world.store)["ari0.example.test"]["window_end"] > now_ts()


@pytest.mark.parametrize("bad", [
    {"ts_retry": now_ts() + 400 * 86400},  # years ahead: more than any Retry-After allows
    {"ari_cert_id": "not.it"},
    {"due_at": 12},  # not the certificate's point in the window
    {"window_end": 0},  # ends before it starts
    # a failure row whose back-off is more than a day ahead
    {"window_start": 0, "window_end": 0, "due_at": 0, "ts_retry": now_ts() + 3 * 86400},
])
def test_a_cached_row_that_does_not_validate_is_asked_again(world: World,
                                                            bad: dict[str, Any]) -> None:
    """What is read back comes from the database: a row that cannot be what lecentral wrote
    is not used by the decision: the window is asked again (and the row replaced)."""
    world.run()
    age_windows(world.store, **bad)
    world.run("ari0.example.test")
    assert ari_asked(world.ca) == 2
    assert stored_windows(world.store)["ari0.example.test"]["ari_cert_id"] == \
        ari_cert_id(world.crts["ari0.example.test"])


def test_a_text_in_a_cached_number_is_asked_again(world: World) -> None:
    """SQLite lets any column hold text: such a row is not used either."""
    from sqlalchemy import text

    world.run()
    with world.store.engine.begin() as conn:
        conn.execute(text("UPDATE lecentral_ari_windows SET ts_retry = 'soon'"))
    world.run("ari0.example.test")
    assert ari_asked(world.ca) == 2


def test_windows_are_asked_concurrently_in_order(ari_ca: AriCa, tmp_path: Path) -> None:
    """12 certificates to ask: the requests run at once (a barrier of 4 in the stand-in CA
    would break, answering 500, if they came one after the other), over several HTTP
    connections (one session per worker), and the outcomes come in the order of the names."""
    found = World(ari_ca, f"sqlite:///{tmp_path}/db.sqlite", tmp_path, count=12)
    ari_ca.barrier = threading.Barrier(4, timeout=20)
    first = found.run(*sorted(found.crts))
    ari_ca.barrier = None
    assert ari_asked(ari_ca) == 12
    assert len(ari_ca.ports) > 1
    assert [o.name for o in first.final] == sorted(found.crts)
    assert {o.status for o in first.final} == {"not-due"}
    assert len(stored_windows(found.store)) == 12
    found.store.close()


@pytest.mark.parametrize("backend", ["sqlite", "mariadb", "postgres"])
def test_the_sweep_skips_rows_with_a_fresh_window(ari_ca: AriCa, tmp_path: Path, backend: str,
                                                  request: pytest.FixtureRequest) -> None:
    """At scale: a run every few hours asks only the certificates whose retry time passed. Five
    rows: the first run reads and asks all; the second reads none and asks nothing; with one
    row's window stale, the third reads and asks that one only."""
    from sqlalchemy import update

    from lecentral.store.schema import ari_windows

    url = str(request.getfixturevalue(f"{backend}_url"))
    found = World(ari_ca, url, tmp_path, count=5)
    first = found.run()
    assert first.unchanged == 0 and len(first.final) == 5 and ari_asked(ari_ca) == 5
    second = found.run()
    assert second.unchanged == 5 and second.final == [] and ari_asked(ari_ca) == 5
    with found.store.engine.begin() as conn:
        conn.execute(update(ari_windows).where(ari_windows.c.name == "ari3.example.test")
                     .values(ts_fetched=now_ts() - 7 * 3600, ts_retry=now_ts() - 1))
    third = found.run()
    assert third.unchanged == 4
    assert [(o.name, o.status) for o in third.final] == [("ari3.example.test", "not-due")]
    assert ari_asked(ari_ca) == 6
    # the CA fails for one stale row: it backs off, and the sweep skips it like the others
    with found.store.engine.begin() as conn:
        conn.execute(update(ari_windows).where(ari_windows.c.name == "ari1.example.test")
                     .values(ts_fetched=now_ts() - 7 * 3600, ts_retry=now_ts() - 1))
    ari_ca.fail = True
    fourth = found.run()
    assert fourth.unchanged == 4 and ari_asked(ari_ca) == 7
    fifth = found.run()
    assert fifth.unchanged == 5 and fifth.final == [] and ari_asked(ari_ca) == 7
    # what check and metrics ask of the failures (here: every failure, however recent)
    began = stored_windows(found.store)["ari1.example.test"]["ts_fetched"]
    assert found.store.ari_failing(now_ts() + 10, now_ts() - 86400) == (1, began)
    assert found.store.ari_failing(began, now_ts() - 86400) == (0, None)
    found.store.close()


def test_retry_after_is_bounded() -> None:
    """RFC 9773 §4.3: under a minute counts as a minute, over a day as a day; none, or one not
    understood, is six hours."""
    import email.utils

    from lecentral.acme.client import retry_after_seconds

    now = 1_800_000_000.0
    assert retry_after_seconds(None, now) == 21600
    assert retry_after_seconds("", now) == 21600
    assert retry_after_seconds("soon", now) == 21600
    assert retry_after_seconds("3600", now) == 3600
    assert retry_after_seconds("5", now) == 60
    assert retry_after_seconds("0", now) == 60
    assert retry_after_seconds("99999999999999999999", now) == 86400
    assert retry_after_seconds("-5", now) == 21600
    assert retry_after_seconds(email.utils.formatdate(now + 7200, usegmt=True), now) == 7200
    assert retry_after_seconds(email.utils.formatdate(now - 7200, usegmt=True), now) == 60
    assert retry_after_seconds(email.utils.formatdate(now + 3 * 365 * 86400, usegmt=True),
                               now) == 86400


def test_remove_forgets_the_window(world: World) -> None:
    world.run()
    assert "ari0.example.test" in stored_windows(world.store)
    world.store.remove("ari0.example.test")
    assert stored_windows(world.store) == {}


def test_a_stopped_run_asks_no_more_windows(ari_ca: AriCa, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """SIGTERM (the stop flag) while the windows are asked: the ones not yet asked are not
    asked (at most the 8 in flight are answered, and kept), the renewal window decides for the
    others, said once; the run reports it was stopped."""
    from lecentral.renew import RenewRequest

    found = World(ari_ca, f"sqlite:///{tmp_path}/db.sqlite", tmp_path, count=12)
    job = found.job()
    ari_ca.on_request = lambda: job.stop.set(15, "stopped by SIGTERM")
    report = job.run(RenewRequest(once=True))
    asked = ari_asked(ari_ca)
    assert 1 <= asked <= 8
    assert len(stored_windows(found.store)) == asked
    assert report.stopped == "the run was stopped by SIGTERM"
    assert {o.status for o in report.final} == {"not-due"}
    assert f"not asked: the run is stopping; the renewal window (renew.before) decides " \
           f"({12 - asked} certificates)" in caplog.text
    found.store.close()


def test_a_store_whose_sweep_predates_ari_reads_every_row(world: World) -> None:
    """A third party's store written before ``Store.sweep`` took ``ari`` (lecentral.api): the
    job does not call it with an argument it does not take (a TypeError), nor let its SQL
    skip rows whose window may have opened: every row is read and its window asked."""
    from lecentral.store.sql import SqlStore

    calls: list[int] = []

    class OldSweep(SqlStore):
        def sweep(self, renew: Any, now: int) -> Any:  # type: ignore[override]
            calls.append(now)
            return super().sweep(renew, now)

    old = OldSweep(world.store.url)
    world.store.close()
    world.store = old
    first = world.run()
    second = world.run()
    assert [(o.name, o.status) for o in first.final] == [("ari0.example.test", "not-due")]
    assert [(o.name, o.status) for o in second.final] == [("ari0.example.test", "not-due")]
    assert calls == []  # never called: every row read, as before the cache
    assert ari_asked(world.ca) == 1  # the window cached by the first run answered the second
