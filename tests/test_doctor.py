"""``lecentral doctor [--fix]`` on a seed-shaped MariaDB: the seed's DDL, rows written with SQL the
way populate.pl and download_cert.pl wrote them (digests as ``openssl md5`` printed them, NULLs
where the scripts left them), a real BIND with a good sub-zone and one with the seed's 12-hour
SOA minimum, and a name without a sub-zone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from lecentral_testing.agent import TestCA
from lecentral_testing.bind import BindServer
from lecentral_testing.pki import make_csr
from sqlalchemy import create_engine, text

from lecentral.certificates import Certificate, Csr
from lecentral.cli.central import main

GOOD, SLOW, NOZONE = "good.example.test", "slow.example.test", "nozone.example.test"
CAPS, WEB, OTHER, FAILING = "Mail.Example.Test", "web.example.test", "other.example.test", "f.example.test"


@pytest.fixture(scope="module")
def bind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BindServer]:
    server = BindServer(tmp_path_factory.mktemp("bind"))
    server.add_subzone(GOOD)
    server.add_subzone(SLOW, soa_minimum=43200, ttl=43200)  # the seed's 12 hours
    with server:
        yield server


@pytest.fixture
def seed(tmp_path: Path, mariadb_url: str, bind: BindServer) -> Iterator[tuple[Path, str]]:
    """A lecentral.toml on a database whose rows the seed's Perl scripts wrote."""
    config = tmp_path / "lecentral.toml"
    config.write_text(f'[database]\nurl = "{mariadb_url}"\n[dns]\nserver = "127.0.0.1:{bind.port}"\n'
                      f'port = {bind.port}\ntsig_key_file = "{bind.key_file("acme-update")}"\n'
                      'propagation_timeout = 5\npropagation_interval = 0.05\n')
    assert run(config, "init").exit_code == 0
    ca = TestCA()
    engine = create_engine(mariadb_url)
    insert = text("INSERT INTO certs (name, enable, certbot, csr, ca, crt, md5_modulus, md5_ca, "
                  "ts_expire, ts_last_update, count_fail_update, webroot_path) VALUES (:name, "
                  ":enable, :certbot, :csr, :ca, :crt, :md5, :md5_ca, :exp, :upd, :fails, :web)")

    def row(name: str, csr_names: list[str] | None = None, **values: Any) -> None:
        pem, _ = make_csr(csr_names or [name.lower()])
        md5 = Csr.load(pem).md5_modulus
        base = {"name": name, "enable": "Y", "certbot": "N", "csr": pem, "ca": None, "crt": None,
                "md5": f"(stdin)= {md5}", "md5_ca": None, "exp": 1, "upd": 1, "fails": 0, "web": None}
        base.update(values)
        if base.pop("issue", False):
            base["crt"] = ca.sign(pem, days=60)
            base["ca"] = ca.pem
            base["md5_ca"] = "MD5(stdin)= " + hashlib.md5(ca.pem).hexdigest().upper()
            base["exp"] = values.get("exp", Certificate.load(base["crt"]).not_after)
        with engine.begin() as conn:
            conn.execute(insert, base)

    row(GOOD, issue=True)                                      # fine: notes only (digests)
    row(SLOW, enable="Y", fails=None)                          # populate.pl + enabled by hand
    row(NOZONE)                                                # no sub-zone at all
    row(CAPS, issue=True, enable=None, exp=None, upd=0, certbot="N")
    row(WEB, certbot="Y", web=None, enable="N")                # certbot row without a webroot
    row(OTHER, csr_names=["elsewhere.example.test"], enable="N")  # a CSR for another name
    row(FAILING, fails=3, enable="N")
    engine.dispose()
    yield config, mariadb_url


def run(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args])


def column(url: str, name: str, col: str) -> Any:
    engine = create_engine(url)
    with engine.begin() as conn:
        value = conn.execute(text(f"SELECT {col} FROM certs WHERE name = :n"), {"n": name}).scalar()
    engine.dispose()
    return value


def test_doctor_reports_then_fixes_only_what_is_safe(seed: tuple[Path, str]) -> None:
    config, url = seed
    result = run(config, "doctor", "--json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["rows"] == 7 and data["changed"] == 0
    found = {(f["name"], f["check"]): f for f in data["findings"]}

    # the shell digests: accepted, never rewritten
    assert found[(GOOD, "md5_modulus")]["level"] == "note"
    assert "leaves it as it is" in found[(GOOD, "md5_ca")]["message"]
    assert found[(CAPS, "name")]["level"] == "note"
    # what --fix may repair
    assert found[(CAPS, "enable")]["fix"] == "fixable"
    assert found[(CAPS, "ts_expire")]["fix"] == "fixable"
    assert "the certificate's notAfter" in found[(CAPS, "ts_expire")]["message"]
    assert found[(CAPS, "ts_last_update")]["fix"] == "fixable"
    assert found[(SLOW, "count_fail_update")]["fix"] == "fixable"
    # what it may not
    assert found[(WEB, "row")]["level"] == "error"
    assert "webroot_path is empty" in found[(WEB, "row")]["message"]
    assert found[(OTHER, "csr")]["level"] == "error"
    assert "other.example.test" in found[(OTHER, "csr")]["message"]
    assert found[(FAILING, "count_fail_update")]["level"] == "warning"
    # DNS of the enabled DNS-01 names, as lecentral dns check sees it
    assert found[(NOZONE, "dns-subzone")]["level"] == "error"
    assert "no sub-zone of its own" in found[(NOZONE, "dns-subzone")]["message"]
    assert "negative TTL 43200" in found[(SLOW, "dns-negative-ttl")]["message"]
    assert not [f for f in data["findings"] if f["name"] == GOOD and f["level"] != "note"]
    digests = (column(url, GOOD, "md5_modulus"), column(url, GOOD, "md5_ca"))

    fixed = run(config, "doctor", "--fix", "--no-dns")

    assert fixed.exit_code == 1  # the errors above remain: they need a human
    assert f"{CAPS}: warning: enable is NULL" in fixed.stdout and "[fixed]" in fixed.stdout
    assert "values fixed" in fixed.stdout
    assert column(url, CAPS, "enable") == "N"
    leaf = Certificate.load(column(url, CAPS, "crt"))
    assert column(url, CAPS, "ts_expire") == leaf.not_after
    assert column(url, CAPS, "ts_last_update") == 1
    assert column(url, SLOW, "count_fail_update") == 0
    assert (column(url, GOOD, "md5_modulus"), column(url, GOOD, "md5_ca")) == digests
    after = json.loads(run(config, "doctor", "--json", "--no-dns").stdout)
    assert not [f for f in after["findings"] if f["fix"] == "fixable"]
    events = run(config, "show", CAPS.lower(), "--json")
    assert "doctor --fix: enable = 'N'" in events.stdout


def test_a_null_ts_expire_beside_a_good_certificate_is_no_reason_to_reissue(
        seed: tuple[Path, str]) -> None:
    """ts_expire NULL (a seed row some tool left so) with a valid crt: the certificate says when
    it expires; lecentral does not spend an order on it (doctor --fix writes the column for the
    Perl agents)."""
    config, url = seed
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE certs SET ts_expire = NULL WHERE name = :n"), {"n": GOOD})
    engine.dispose()
    result = run(config, "renew", "--dry-run", "--json", GOOD)
    (item,) = json.loads(result.stdout)["certificates"]
    assert item["status"] == "not-due", item
    listed = {i["name"]: i for i in json.loads(run(config, "list", "--json").stdout)}
    assert not listed[GOOD]["certificate_problems"]
    doctor = run(config, "doctor", "--no-dns")
    assert f"{GOOD}: warning: ts_expire is NULL" in doctor.stdout and "None" not in doctor.stdout
