"""The renew sweep decided in SQL (lecentral/store/facts.py), on real SQLite, MariaDB and
PostgreSQL: what it skips is exactly what the per-row Python rules call not due; whatever a
foreign writer (download_cert.pl, populate.pl, a hand edit) changes in ``certs`` is read and
judged again at the next sweep, a bad stored certificate included; duplicates are still found.

Every comparison is with the path that reads and parses every row (what the job does with
NAMEs), on the same table in the same test."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from lecentral_testing.pki import PrivateKey, make_csr, make_key
from sqlalchemy import func, insert, select, update

from lecentral.certificates import Certificate, Csr, md5_ca, now_ts
from lecentral.config import CentralConfig, build
from lecentral.registry import Registry
from lecentral.renew import RenewJob, RenewRequest
from lecentral.renew.checks import due_reason
from lecentral.store import facts
from lecentral.store.schema import cert_facts, certs
from lecentral.store.sql import SqlStore
from lecentral.window import renew_at

DAY = 86400


@pytest.fixture(params=["sqlite", "mariadb", "postgres"])
def db(request: pytest.FixtureRequest) -> Iterator[SqlStore]:
    """A fresh store on each backend, schema at head."""
    store = SqlStore(str(request.getfixturevalue(f"{request.param}_url")))
    store.init_schema()
    yield store
    store.close()


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return make_key("ec256")


def certificate(names: list[str], key: Any, not_before: int, not_after: int) -> bytes:
    """A self-signed certificate (its own chain) valid from ``not_before`` to ``not_after``."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime.fromtimestamp(not_before, dt.UTC))
            .not_valid_after(dt.datetime.fromtimestamp(not_after, dt.UTC))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def row_values(name: str, key: Any, not_before: int, not_after: int) -> dict[str, Any]:
    """A row as save_issued leaves it: a good certificate and chain, ts_expire its notAfter."""
    csr, _ = make_csr([name], key)
    crt = certificate([name], key, not_before, not_after)
    return {"name": name, "enable": "Y", "comment": None, "certbot": "N", "csr": csr, "ca": crt,
            "crt": crt, "md5_modulus": Csr.load(csr).md5_modulus, "md5_ca": md5_ca(crt),
            "ts_expire": not_after, "ts_last_update": not_before, "count_fail_update": 0,
            "old_ca": None, "old_crt": None, "webroot_path": None}


def insert_rows(store: SqlStore, rows: list[dict[str, Any]]) -> None:
    with store.engine.begin() as conn:
        conn.execute(insert(certs), rows)


def foreign_update(store: SqlStore, name: str, **values: Any) -> None:
    """What a Perl script or a hand edit does: an UPDATE of certs, nothing else."""
    with store.engine.begin() as conn:
        conn.execute(update(certs).where(certs.c.name == name).values(**values))


def config_for(tmp_path: Path, **renew: Any) -> CentralConfig:
    return build(CentralConfig, {"acme": {"directory": "https://127.0.0.1:9/directory"},
                                 "renew": {"ari": False, "state_dir": str(tmp_path / "state"),
                                           **renew}}, "", "test")


class EveryRow:
    """The store without its sweep: the job reads and parses every row (the reference)."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    def sweep(self, renew: Any, now: int, ari: Any = None) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def dry_run(config: CentralConfig, store: Any) -> tuple[dict[str, tuple[str, str]], int]:
    """{name: (status, message)} of every row read, and how many enabled rows were not read."""
    report = RenewJob(config, store, Registry.load(entrypoints=False)).run(
        RenewRequest(dry_run=True, once=True))
    return {o.name: (o.status, o.message) for o in report.final}, report.unchanged


def same_as_every_row(config: CentralConfig, store: SqlStore) -> tuple[dict[str, Any], int]:
    """The sweep's outcomes, checked against reading every row: the rows read are decided the
    same, and every row not read is not due there."""
    swept, unchanged = dry_run(config, store)
    reference, none_skipped = dry_run(config, EveryRow(store))
    assert none_skipped == 0
    for name, outcome in swept.items():
        assert reference[name] == outcome
    skipped = set(reference) - set(swept)
    assert len(skipped) == unchanged
    assert all(reference[name][0] == "not-due" for name in skipped)
    return swept, unchanged


def test_the_server_checksum_is_the_one_python_computes(db: SqlStore, key: Any) -> None:
    """What SQL compares each sweep (the server's checksum of the stored crt, csr and ca) is
    what the facts recorded from the bytes Python read: for PEM, binary, empty and NULL
    values; a value moved to another column, or NULL instead of empty, is another checksum."""
    now = now_ts()
    good = row_values("sum.example.test", key, now - DAY, now + 80 * DAY)
    binary = bytes(range(256)) * 3
    variants = [(good["crt"], good["csr"], good["ca"]), (None, good["csr"], None),
                (binary, b"x", b""), (b"", b"x", binary), (None, b"x", b""), (b"", b"x", None)]
    insert_rows(db, [{**good, "name": f"v{i}.example.test", "crt": crt, "csr": csr, "ca": ca}
                     for i, (crt, csr, ca) in enumerate(variants)])
    with db.engine.begin() as conn:
        found = conn.execute(select(certs.c.name, certs.c.crt, certs.c.csr, certs.c.ca,
                                    facts.sum_sql(db.dialect)).order_by(certs.c.name)).all()
    assert len(found) == len(variants)
    for _, crt, csr, ca, server in found:
        assert server == facts.blobs_sum(db.dialect, crt, csr, ca)
    assert len({server for *_, server in found}) == len(variants)


def test_a_sweep_reads_only_what_changed_or_may_be_due(db: SqlStore, key: Any,
                                                       tmp_path: Path) -> None:
    """The first sweep reads every row and records its facts; the next reads none of the rows
    that are fine and not due, but still reads the ones due, bad or without a certificate."""
    now = now_ts()
    rows = [row_values(f"ok{i}.example.test", key, now - 10 * DAY, now + 80 * DAY)
            for i in range(4)]
    rows.append(row_values("due.example.test", key, now - 70 * DAY, now + 20 * DAY))
    rows.append({**row_values("new.example.test", key, now, now + DAY), "crt": None, "ca": None,
                 "md5_ca": None, "ts_expire": 1, "ts_last_update": None})
    rows.append({**row_values("off.example.test", key, now - 70 * DAY, now + 20 * DAY),
                 "enable": "N"})
    insert_rows(db, rows)
    config = config_for(tmp_path)
    first, unchanged = same_as_every_row(config, db)
    assert unchanged == 0 and len(first) == 6
    with db.engine.begin() as conn:
        states = dict(conn.execute(select(cert_facts.c.name, cert_facts.c.state)).all())
    assert states == {**{f"ok{i}.example.test": "ok" for i in range(4)},
                      "due.example.test": "ok", "new.example.test": "none"}
    second, unchanged = same_as_every_row(config, db)
    assert unchanged == 4
    assert second == {"due.example.test": first["due.example.test"],
                      "new.example.test": first["new.example.test"]}
    assert second["due.example.test"][0] == second["new.example.test"][0] == "would-issue"


def test_every_foreign_change_is_judged_again(db: SqlStore, key: Any, tmp_path: Path) -> None:
    """download_cert.pl, populate.pl or a hand edit change certs without touching lecentral's
    tables: each change below makes the next sweep read the row, which is then due (a bad
    certificate: without --force) or invalid, exactly as when every row is read; putting the
    values back makes it unchanged and not due again."""
    now = now_ts()
    names = ["crt", "crt-lost", "drift", "ca", "md5-ca", "csr", "modulus", "certbot", "chain",
             "same-length"]
    rows = {n: row_values(f"{n}.example.test", key, now - 10 * DAY, now + 80 * DAY) for n in names}
    insert_rows(db, list(rows.values()))
    config = config_for(tmp_path)
    same_as_every_row(config, db)
    assert same_as_every_row(config, db) == ({}, len(names))

    other_key = make_key("ec256")
    other_csr, _ = make_csr(["elsewhere.example.test"], other_key)
    stranger = certificate(["crt.example.test"], other_key, now - 10 * DAY, now + 80 * DAY)
    original = rows["same-length"]["crt"]
    # another certificate for the same name, key and dates: same length, other serial
    twin = certificate(["same-length.example.test"], key, now - 10 * DAY, now + 80 * DAY)
    assert len(twin) == len(original) and twin != original
    changes: dict[str, dict[str, Any]] = {
        "crt": {"crt": stranger},  # download_cert.pl with the wrong key's certificate
        "crt-lost": {"crt": None},  # crt lost while ts_expire is set
        "drift": {"ts_expire": now + 85 * DAY},  # ts_expire no longer the crt's notAfter
        "ca": {"ca": certificate(["some CA"], other_key, now - DAY, now + DAY)},
        "md5-ca": {"md5_ca": "0" * 32},
        "csr": {"csr": other_csr},  # populate.pl storing another name's CSR
        "modulus": {"md5_modulus": "f" * 32},
        "certbot": {"certbot": "Y"},  # HTTP-01 without a webroot_path: invalid
        "chain": {"ca": stranger},  # a chain that does not sign the leaf
        "same-length": {"crt": twin, "ca": twin, "md5_ca": md5_ca(twin)},
    }
    for name, values in changes.items():
        foreign_update(db, f"{name}.example.test", **values)
    swept, unchanged = same_as_every_row(config, db)
    assert unchanged == 0
    assert {n.split(".")[0] for n in swept} == set(names)
    verdicts = {n.split(".")[0]: outcome for n, outcome in swept.items()}
    for name in ("crt", "crt-lost", "drift", "ca", "md5-ca", "chain"):
        status, message = verdicts[name]
        assert status == "would-issue" and "the stored certificate is bad" in message, name
    assert "another key" in verdicts["crt"][1]
    assert "was lost" in verdicts["crt-lost"][1]
    assert "disagrees with the certificate's notAfter" in verdicts["drift"][1]
    assert "does not match the ca column" in verdicts["md5-ca"][1]
    for name in ("csr", "modulus", "certbot"):
        assert verdicts[name][0] == "invalid", name
    # a good certificate replaced by another good one: read again, still not due
    assert verdicts["same-length"][0] == "not-due"
    with db.engine.begin() as conn:
        fingerprint = conn.execute(select(cert_facts.c.fingerprint).where(
            cert_facts.c.name == "same-length.example.test")).scalar_one()
    assert fingerprint == Certificate.load(twin).fingerprint

    for name in names:  # everything put back as it was
        restore = {column: rows[name][column] for column in changes[name]}
        foreign_update(db, f"{name}.example.test", **restore)
    same_as_every_row(config, db)  # read once more (changed again), then unchanged
    assert same_as_every_row(config, db) == ({}, len(names))


def test_a_disabled_or_removed_row_is_not_counted(db: SqlStore, key: Any, tmp_path: Path) -> None:
    now = now_ts()
    insert_rows(db, [row_values(f"r{i}.example.test", key, now - DAY, now + 80 * DAY)
                     for i in range(3)])
    config = config_for(tmp_path)
    same_as_every_row(config, db)
    foreign_update(db, "r0.example.test", enable="N")
    db.remove("r1.example.test")
    assert same_as_every_row(config, db) == ({}, 1)
    with db.engine.begin() as conn:
        assert conn.execute(select(func.count()).select_from(cert_facts).where(
            cert_facts.c.name == "r1.example.test")).scalar_one() == 0


def test_a_duplicate_name_written_by_hand_is_still_refused(db: SqlStore, key: Any,
                                                           tmp_path: Path) -> None:
    """populate.pl kept capitals: 'WWW.dup.example.test' beside a checked 'www.dup.example.test'
    (even disabled) makes both rows invalid at the next sweep, as when every row is read."""
    now = now_ts()
    insert_rows(db, [row_values("www.dup.example.test", key, now - DAY, now + 80 * DAY),
                     row_values("fine.example.test", key, now - DAY, now + 80 * DAY)])
    config = config_for(tmp_path)
    same_as_every_row(config, db)
    insert_rows(db, [{**row_values("www.dup.example.test", key, now - DAY, now + 80 * DAY),
                      "name": "WWW.Dup.example.test", "enable": "N"}])
    swept, unchanged = same_as_every_row(config, db)
    assert unchanged == 1
    assert swept["www.dup.example.test"][0] == "invalid"
    assert "DNS names ignore case" in swept["www.dup.example.test"][1]


WINDOWS = [{}, {"before": "1/4"}, {"before": "50%"}, {"before": "36h"}, {"before_days": 5}]


@pytest.mark.parametrize("renew", WINDOWS, ids=lambda r: str(r or "auto"))
def test_sql_skips_only_rows_the_python_rule_calls_not_due(db: SqlStore, key: Any,
                                                           tmp_path: Path,
                                                           renew: dict[str, Any]) -> None:
    """Around each row's renewal time (lecentral.window.renew_at), second by second: a row SQL
    skips is not due by the Python rule, and a row a few seconds before its time is skipped.
    Lifetimes: 90 days, 10 days (the auto rule's edge: a third), 10 days - 1 s (a half), 6 days
    and 1 hour; odd lifetimes so that the fractions do not divide evenly."""
    config = config_for(tmp_path, **renew)
    base = 1_900_000_000
    lifetimes = [90 * DAY - 1, 10 * DAY - 1, 10 * DAY - 2, 6 * DAY + 7, 3600 + 1, 64 * DAY + 13]
    rows = [row_values(f"l{i}.example.test", key, base, base + life)
            for i, life in enumerate(lifetimes)]
    insert_rows(db, rows)
    db.record_facts(db.sweep(config.renew, base).rows)  # every row checked once
    stored = {r.name: dataclasses.replace(r, ts_last_update=0) for r in db.list()}
    for row in rows:
        at = renew_at(base, row["ts_expire"], config.renew).at
        for now in range(at - 4, at + 3):
            read = {s.row.name for s in db.sweep(config.renew, now).rows}
            due, _ = due_reason(stored[row["name"]], now, config, False, None)
            if row["name"] not in read:
                assert not due, (row["name"], now - at)
            if now <= at - facts.MARGIN - 2:
                assert row["name"] not in read, (row["name"], now - at)
            if due:
                assert row["name"] in read


def test_the_fleet_reads_a_recorded_fingerprint_only_while_the_crt_is_the_same(
        db: SqlStore, key: Any, tmp_path: Path) -> None:
    """fleet, check and metrics take each crt's fingerprint from the facts while the server's
    checksum of crt is the recorded one, else from the crt (changed by a foreign writer, or
    never swept): always the fingerprint of what is stored now."""
    from lecentral.fleet.store import FleetStore, pem_fingerprint

    now = now_ts()
    rows = [row_values(f"f{i}.example.test", key, now - DAY, now + 80 * DAY) for i in range(3)]
    rows.append({**row_values("nocrt.example.test", key, now, now + DAY), "crt": None})
    insert_rows(db, rows)

    def fingerprints() -> dict[str, str | None]:
        return {str(c["name"]): c["fingerprint"] for c in FleetStore(db).snapshot().certs}

    expected = {r["name"]: pem_fingerprint(r["crt"]) for r in rows}
    assert fingerprints() == expected  # no facts yet
    same_as_every_row(config_for(tmp_path), db)
    assert fingerprints() == expected  # from the facts
    twin = certificate(["f0.example.test"], key, now - DAY, now + 80 * DAY)
    foreign_update(db, "f0.example.test", crt=twin)
    assert fingerprints() == {**expected, "f0.example.test": pem_fingerprint(twin)}


def cli_list(db: SqlStore, tmp_path: Path, *args: str) -> str:
    from click.testing import CliRunner

    from lecentral.cli.central import main

    toml = tmp_path / "lecentral.toml"
    toml.write_text(f'[database]\nurl = "{db.url}"\n[renew]\nari = false\n')
    result = CliRunner().invoke(main, ["--config", str(toml), "list", *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_list_from_the_facts_is_list_from_the_rows(db: SqlStore, key: Any,
                                                   tmp_path: Path) -> None:
    """``list`` and ``list --json`` read the unchanged, good rows from the facts (no parsing)
    and every other row in full: the output is the one reading every row gives, BAD
    CERTIFICATE, INVALID and duplicate names included, and after foreign changes too."""
    now = now_ts() - 5000  # days_left and dates stay the same during the test
    rows = [row_values(f"good{i}.example.test", key, now - 10 * DAY, now + 80 * DAY)
            for i in range(3)]
    rows += [{**row_values("off.example.test", key, now - 10 * DAY, now + 80 * DAY),
              "enable": "N"},
             {**row_values("null.example.test", key, now - 10 * DAY, now + 80 * DAY),
              "enable": None},
             {**row_values("short.example.test", key, now - DAY, now + 5 * DAY),
              "ts_expire": None},
             {**row_values("new.example.test", key, now, now + DAY), "crt": None, "ca": None,
              "md5_ca": None, "ts_expire": 1},
             {**row_values("www.dup.example.test", key, now - DAY, now + 80 * DAY)},
             {**row_values("bad.example.test", key, now - DAY, now + 80 * DAY),
              "md5_ca": "0" * 32}]
    insert_rows(db, rows)
    db.set_profile("good1.example.test", "shortlived")

    def without_facts() -> tuple[str, str]:
        with db.engine.begin() as conn:
            saved = [dict(r) for r in conn.execute(select(cert_facts)).mappings()]
            conn.execute(cert_facts.delete())
        plain = cli_list(db, tmp_path, "--json"), cli_list(db, tmp_path)
        if saved:
            with db.engine.begin() as conn:
                conn.execute(insert(cert_facts), saved)
        return plain

    reference = without_facts()
    same_as_every_row(config_for(tmp_path), db)  # the facts recorded
    with db.engine.begin() as conn:
        assert conn.execute(select(func.count()).select_from(cert_facts)
                            .where(cert_facts.c.state == "ok")).scalar_one() >= 5
    assert (cli_list(db, tmp_path, "--json"), cli_list(db, tmp_path)) == reference

    foreign_update(db, "good0.example.test", ts_expire=now + 85 * DAY)  # drift: bad now
    foreign_update(db, "good2.example.test", crt=b"garbage")
    insert_rows(db, [{**row_values("www.dup.example.test", key, now - DAY, now + 80 * DAY),
                      "name": "WWW.Dup.example.test"}])
    reference = without_facts()
    listed = json.loads(reference[0])
    by_name = {i["name"]: i for i in listed}
    assert by_name["good0.example.test"]["certificate_problems"]
    assert by_name["good2.example.test"]["certificate_problems"]
    assert by_name["www.dup.example.test"]["invalid"]
    assert "BAD CERTIFICATE" in reference[1]
    assert (cli_list(db, tmp_path, "--json"), cli_list(db, tmp_path)) == reference


def listed_without_facts(db: SqlStore, tmp_path: Path) -> tuple[str, str]:
    """``list --json`` and ``list`` with every facts row removed (every row read and parsed:
    the reference), the facts put back afterwards."""
    with db.engine.begin() as conn:
        saved = [dict(r) for r in conn.execute(select(cert_facts)).mappings()]
        conn.execute(cert_facts.delete())
    plain = cli_list(db, tmp_path, "--json"), cli_list(db, tmp_path)
    if saved:
        with db.engine.begin() as conn:
            conn.execute(insert(cert_facts), saved)
    return plain


def test_list_streams_the_good_rows_in_its_order(db: SqlStore, key: Any,
                                                 tmp_path: Path) -> None:
    """``list`` takes the rows known good and unchanged from one ordered statement, streamed
    and not parsed (FreshRow), in list's order as Python sorts (never issued first, then days
    left, then the name by code points, whatever the database's collation says about hyphens
    and stars; on MariaDB/MySQL by name alone, each day's rows then in order); the rows read in
    full are merged in. The output is that of reading every row,
    before and after a foreign writer breaks a row in the middle of the order."""
    from lecentral.store.rows import FreshRow

    now = now_ts() - 5000  # days_left and dates stay the same during the test
    labels = ["a-b", "ab", "a", "a0", "*.w", "w", "z9", "b--c", "0a", "a--b", "b"]
    rows = [row_values(f"{label}.order.example.test", key, now - 10 * DAY,
                       now + (30 + i % 3) * DAY + i) for i, label in enumerate(labels)]
    rows += [{**row_values("never.order.example.test", key, now, now + DAY), "crt": None,
              "ca": None, "md5_ca": None, "ts_expire": 1},
             {**row_values("nots.order.example.test", key, now - DAY, now + 20 * DAY),
              "ts_expire": None},
             row_values("expired.order.example.test", key, now - 100 * DAY, now - 3 * DAY - 7),
             row_values("expired2.order.example.test", key, now - 100 * DAY, now - 3 * DAY)]
    insert_rows(db, rows)
    reference = listed_without_facts(db, tmp_path)
    same_as_every_row(config_for(tmp_path), db)  # the facts recorded
    at = now_ts()
    fresh = [e for e in db.listing(at) if isinstance(e, FreshRow)]
    assert len(fresh) == len(labels) + 3, fresh  # all but the never-issued row
    order = [((e.ts_expire or 0) > 1, ((e.ts_expire or 0) - at) // DAY
              if (e.ts_expire or 0) > 1 else 0, e.name) for e in fresh]
    # nothing held in memory: each bucket (never issued, days left) comes in name order, as
    # Python sorts names; MariaDB/MySQL send by name alone (no sort on the server), the others
    # in list's order
    buckets: dict[tuple[bool, int], list[str]] = {}
    for has, days, name in order:
        buckets.setdefault((has, days), []).append(name)
    assert all(names == sorted(names) for names in buckets.values()), order
    if db.dialect in ("mysql", "mariadb"):
        assert [o[2] for o in order] == sorted(o[2] for o in order)
    else:
        assert order == sorted(order)
    assert (cli_list(db, tmp_path, "--json"), cli_list(db, tmp_path)) == reference
    items = json.loads(reference[0])
    keys = [(i["days_left"] is not None, i["days_left"] or 0, i["name"]) for i in items]
    assert keys == sorted(keys) and len(items) == len(rows)
    assert reference[1].splitlines()[1].startswith("never.order.example.test ")

    foreign_update(db, "ab.order.example.test", crt=b"garbage")
    broken = listed_without_facts(db, tmp_path)
    assert (cli_list(db, tmp_path, "--json"), cli_list(db, tmp_path)) == broken
    assert "BAD CERTIFICATE" in broken[1]
    assert [i["name"] for i in json.loads(broken[0])] == [i["name"] for i in items]
