"""ACME Renewal Information (RFC 9773) in the renew job's due decision.

Debian's Pebble (2.4) offers no ``renewalInfo``, and no other ACME server can run here, so these
tests stand in a minimal HTTP server for the CA's directory and renewalInfo endpoint (the one
part that is not real). Everything else is the real RenewalInfoReader and due_reason.
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
        self.requests: list[str] = []
        ca = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ca.requests.append(self.path)
                if self.path == "/dir":
                    body: Any = {"renewalInfo": f"http://127.0.0.1:{ca.port}/ari"}
                elif self.path.startswith("/ari/") and not ca.fail and \
                        self.path[5:] in ca.windows:
                    body = ca.windows[self.path[5:]]
                else:
                    self.send_error(500)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
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


def issued_row(days_left: int) -> tuple[Any, bytes]:
    """A row whose certificate (signed by a test CA, with an AKI) expires in ``days_left``."""
    csr, _ = make_csr(["ari.example.test"])
    ca = TestCA()
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


def test_a_sweep_skips_no_row_while_the_ca_offers_ari(ari_ca: AriCa, tmp_path: Path) -> None:
    """A dry run records the row's facts (good, not due by its dates); a real run then may not
    skip it in SQL, since the CA offers ARI: it asks the certificate's window (open: due)."""
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


def test_show_says_when_the_ari_window_renews_it(ari_ca: AriCa, tmp_path: Path) -> None:
    """``lecentral show`` asks the CA's ARI for that one certificate: a window earlier than the
    lifetime rule is the renewal time shown, with the window as the reason; without a window
    (a CA without ARI, here one answering 500) the lifetime rule stays, said so."""
    from click.testing import CliRunner

    from lecentral.cli.central import main
    from lecentral.store.sql import SqlStore

    row, crt = issued_row(days_left=60)
    store = SqlStore(f"sqlite:///{tmp_path}/l.db")
    store.init_schema()
    store.add(row)
    store.close()
    config = tmp_path / "lecentral.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/l.db"\n'
                      f'[acme]\ndirectory = "http://127.0.0.1:{ari_ca.port}/dir"\n')
    ari_ca.windows[ari_cert_id(crt)] = window(2, 3)

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
    from lecentral.store.sql import SqlStore

    row, crt = issued_row(days_left=60)
    store = SqlStore(f"sqlite:///{tmp_path}/l.db")
    store.init_schema()
    store.add(row)
    store.close()
    config = tmp_path / "lecentral.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/l.db"\n'
                      f'[acme]\ndirectory = "http://127.0.0.1:{ari_ca.port}/dir"\n'
                      '[renew]\nari = false\n')
    ari_ca.windows[ari_cert_id(crt)] = window(2, 3)
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
