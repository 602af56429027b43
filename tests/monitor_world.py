"""A fleet in a real SQLite (or MariaDB) database for the ``check`` and ``metrics`` tests.

Rows are written as production writes them: ``SqlStore.add`` and ``save_issued`` for the
certificates (real self-signed PEM certificates for real keys), ``FleetStore.report`` for what an
agent saw, ``FleetStore.record_run`` for renew runs, ``save_probes`` for the central probe.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from lecentral_testing.central import new_row
from lecentral_testing.pki import make_csr, make_key

from lecentral.certificates import Certificate, now_ts
from lecentral.cli.central import main
from lecentral.fleet.store import Deployment, FleetStore, ProbeResult, Run
from lecentral.store.sql import SqlStore

DAY = 86400


class Fleet:
    """A config file and a database with helpers to put the fleet in any state."""

    def __init__(self, tmp: Path, url: str | None = None, *, config_extra: str = "") -> None:
        self.tmp = tmp
        self.url = url or f"sqlite:///{tmp}/lecentral.db"
        self.config = tmp / "lecentral.toml"
        self.config.write_text(f'[database]\nurl = "{self.url}"\n{config_extra}')
        self.store = SqlStore(self.url)
        self.store.init_schema()
        self.fleet = FleetStore(self.store)
        self.now = now_ts()
        self.keys: dict[str, Any] = {}

    def close(self) -> None:
        self.store.close()

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(main, ["--config", str(self.config), *args])

    def add(self, name: str, *, enable: bool = True) -> None:
        key = make_key("ec256")
        csr, _ = make_csr([name], key)
        self.keys[name] = key
        self.store.add(new_row(csr, enable=enable))

    def cert(self, name: str, *, days: float, age: float, key: Any = None) -> Certificate:
        """A certificate for ``name`` valid ``days`` days, issued ``age`` days ago."""
        start = dt.datetime.fromtimestamp(self.now - age * DAY, dt.UTC)
        return Certificate.load(_self_signed(name, key or self.keys[name], start, days))

    def issue(self, name: str, *, days: float = 90, age: float = 1) -> Certificate:
        """``add`` (if needed) and store a certificate as the renew job does."""
        if name not in self.keys:
            self.add(name)
        cert = self.cert(name, days=days, age=age)
        self.store.save_issued(name, cert.pem, cert.pem, cert.not_after, cert.not_before)
        return cert

    def renew_run(self, *, ago: float = 0.1, exit_code: int = 0, host: str = "central") -> None:
        end = int(self.now - ago * DAY)
        self.fleet.record_run(Run("renew", host, end - 30, end, exit_code, {"not-due": 1}), "test")

    def report(self, host: str, name: str, installed: Certificate | None,
               served: Certificate | None = None, *, ago: float = 0.01, served_error: str | None = None,
               served_key_md5: str | None = None, result: str = "up-to-date",
               entry: str | None = None) -> None:
        """An agent's report of one entry (and its run), ``ago`` days ago."""
        ts = int(self.now - ago * DAY)
        url = f"https://{host}:443/"
        item = Deployment(
            name=name, entry=entry or name, service="nginx",
            installed_fp=installed.fingerprint if installed else None,
            installed_not_after=installed.not_after if installed else None,
            served_fp=served.fingerprint if served else None,
            served_not_after=served.not_after if served else None,
            served_names=served.names if served else None,
            served_key_md5=served_key_md5 or (served.md5_modulus if served else None),
            served_url=url if (served or served_error) else None, served_error=served_error,
            ts_served=ts if (served or served_error) else None, verify_urls=[url],
            paths=[f"/etc/ssl/{name}.pem"], result=result, message="")
        self.fleet.report(host, [item], Run("agent", host, ts - 5, ts, 0, {result: 1}), "test", ts)

    def probe(self, name: str, url: str, seen: Certificate | None, error: str | None = None) -> None:
        self.fleet.save_probes([ProbeResult(
            name=name, url=url, source="operator", fingerprint=seen.fingerprint if seen else None,
            not_after=seen.not_after if seen else None, names=seen.names if seen else None,
            key_md5=seen.md5_modulus if seen else None, error=error)], "central", self.now)

    def check(self, *args: str) -> tuple[int, list[str]]:
        result = self.run("check", *args)
        return result.exit_code, result.stdout.splitlines()

    def check_json(self, *args: str) -> dict[str, Any]:
        result = self.run("check", "--json", *args)
        data: dict[str, Any] = json.loads(result.stdout)
        assert data["exit_code"] == result.exit_code
        return data


def _self_signed(name: str, key: Any, start: dt.datetime, days: float) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)
