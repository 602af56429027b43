"""``lecentral list``'s fast path (lecentral/cli/listing.py): a row known good and unchanged is
written directly as its JSON object or its table cells, without the dictionary ``list`` makes
of a row read in full. Both must be exactly what the dictionary gives, whatever the row holds;
and the listing merges the rows it holds in memory into the spilled ones in list's order.

No database here: test_renew_sweep.py compares whole listings from the facts and from the
rows on SQLite, MariaDB and PostgreSQL."""

from __future__ import annotations

import itertools
import json
import tempfile
from typing import Any

import pytest

from lecentral.cli.listing import HEADERS, FreshSummary, Listing, cells
from lecentral.config import RenewConfig, build
from lecentral.store.rows import FreshRow

DAY = 86400
NOW = 1_800_000_000


def renew(**values: Any) -> RenewConfig:
    return build(RenewConfig, values, "", "test")


def fresh(**values: Any) -> FreshRow:
    row: dict[str, Any] = {
        "name": "www.example.test", "enable": "Y", "certbot": "N", "ts_expire": NOW + 40 * DAY,
        "ts_last_update": NOW - 50 * DAY, "count_fail_update": 0, "webroot_path": None,
        "comment": None, "names": ["www.example.test"], "not_before": NOW - 50 * DAY,
        "not_after": NOW + 40 * DAY, "profile": None, "issuer_ca": None,
        "issuer_ca_directory": None}
    row.update(values)
    return FreshRow(**row)


VARIANTS: list[dict[str, Any]] = [
    {}, {"enable": "N"}, {"enable": None}, {"certbot": "Y", "webroot_path": "/var/www/x"},
    {"certbot": None}, {"ts_expire": None}, {"ts_expire": 0}, {"ts_expire": 1},
    {"ts_expire": NOW - 3 * DAY - 1, "not_after": NOW - 3 * DAY - 1},  # expired
    {"ts_expire": NOW + 1000, "not_before": NOW - 6 * DAY, "not_after": NOW + 1000},  # due
    {"ts_last_update": None}, {"ts_last_update": 1}, {"ts_last_update": 5000},
    {"count_fail_update": None}, {"count_fail_update": 3},
    {"comment": 'a "quoted" comment\twith\na newline, é and \u2028'}, {"comment": b"bytes"},
    {"comment": 7}, {"webroot_path": "/srv/\u00e9"},
    {"names": ["www.example.test", "*.example.test", "192.0.2.1"]}, {"names": []},
    {"profile": "shortlived"}, {"profile": "bad profile!"}, {"profile": "x" * 80},
    {"issuer_ca": "backup", "issuer_ca_directory": "https://ca.example.test/dir"},
    {"issuer_ca": "backup", "issuer_ca_directory": None},
    {"issuer_ca": "backup", "issuer_ca_directory": "https://x/\x07dir"},
    {"issuer_ca": "not a name!", "issuer_ca_directory": "https://x/"},
    {"not_before": NOW - 6 * DAY - 3600, "not_after": NOW + 3600 * 7},  # 160 hours
    # renew.min_interval (3600 s) after the last attempt: held, whether due or not
    {"ts_last_update": NOW - 600},
    {"ts_last_update": NOW - 600, "count_fail_update": 2, "ts_expire": NOW + 1000,
     "not_before": NOW - 6 * DAY, "not_after": NOW + 1000},
    {"ts_last_update": NOW - 600, "ts_expire": 1},
    {"ts_last_update": NOW - 3600, "ts_expire": NOW + 1000, "not_before": NOW - 6 * DAY,
     "not_after": NOW + 1000},  # min_interval has just passed: due
]
CONFIGS = [renew(), renew(before_days=30), renew(before="1/2"), renew(before="20%"),
           renew(before="10d")]


@pytest.mark.parametrize(("variant", "config"), list(itertools.product(VARIANTS, CONFIGS)))
@pytest.mark.parametrize("default_profile", ["", "classic"])
def test_a_fresh_row_is_written_as_its_dictionary_says(variant: dict[str, Any],
                                                       config: RenewConfig,
                                                       default_profile: str) -> None:
    summary = FreshSummary(NOW, config, default_profile)
    row = fresh(**variant)
    item = summary(row)
    assert summary.json(row) == json.dumps(item, sort_keys=True, default=str)
    assert summary.cells(row) == cells(item, NOW)
    again = FreshSummary(NOW, config, default_profile)  # the caches give the same
    assert [again.json(row), again.json(row)] == [summary.json(row)] * 2


def test_a_row_held_by_min_interval_renews_when_it_ends() -> None:
    """A due row (or one without a certificate) whose last attempt is less than
    renew.min_interval old renews when that ends, as the renew job decides (held_until)."""
    summary = FreshSummary(NOW, renew(), "")
    due = {"ts_expire": NOW + 1000, "not_before": NOW - 6 * DAY, "not_after": NOW + 1000}
    for values in ({**due, "ts_last_update": NOW - 600, "count_fail_update": 1},
                   {"ts_expire": 1, "ts_last_update": NOW - 600}):
        item = summary(fresh(**values))
        assert (item["ts_renew_at"], item["renew_reason"]) == \
            (NOW + 3000, "renew.min_interval after the last attempt")
        assert cells(item, NOW)[9] == f"{item['renew_at']} (renew.min_interval after the last " \
            "attempt)"
    item = summary(fresh(**due, ts_last_update=NOW - 3600))
    assert item["ts_renew_at"] < NOW and cells(item, NOW)[9].startswith("due (")
    not_due = summary(fresh(ts_last_update=NOW - 600))  # renews later than min_interval ends
    assert not_due == {**summary(fresh()), "ts_last_update": NOW - 600,
                       "last_attempt": not_due["last_attempt"]}


def test_held_rows_are_merged_in_order_and_the_table_is_aligned() -> None:
    """Rows arriving out of order, or with a cell that cannot be spilled, are held in memory
    and come out where list's order puts them."""
    summary = FreshSummary(NOW, renew(), "")
    names = [f"n{i:02d}.example.test" for i in range(20)]
    rows = [fresh(name=n, names=[n], ts_expire=NOW + (i // 4) * DAY + 5)
            for i, n in enumerate(names)]
    arrival = rows[:5] + rows[7:12] + [rows[6]] + rows[12:] + [rows[5]]  # two out of order
    for as_json in (True, False):
        with tempfile.SpooledTemporaryFile(64, mode="w+b") as spill:
            listing = Listing(NOW, as_json, spill)
            for r in arrival:
                key = (True, ((r.ts_expire or 0) - NOW) // DAY, r.name)
                listing.add(key, summary.json(r) if as_json else summary.cells(r), True)
            weird = summary.cells(rows[0])
            weird[0] = "zz\nline\x1f.example.test"  # cannot be spilled: held
            if not as_json:
                listing.add((True, 999, weird[0]), weird, True)
            out = list(listing.lines())
        assert len(listing.held) == (2 if as_json else 3)
        if as_json:
            assert [i["name"] for i in json.loads("\n".join(out))] == names
        else:
            assert [line.split()[0] for line in out[1:-1]] == names
            assert out[-1].startswith("zz\nline\x1f.example.test")
            widths = [len(h) for h in out[0].split("  ") if h]
            assert len(widths) == len(HEADERS) - 1
            assert all(line.index(" Y ") == out[0].index(" ON ") for line in out[1:-1])


def test_rows_in_name_order_are_written_in_their_day() -> None:
    """Rows arriving by name alone (MariaDB/MySQL's order) are each spilled into the part of
    their day, none held in memory, and come out in list's order: never issued first, then by
    days left (expired ones first), then by name."""
    summary = FreshSummary(NOW, renew(), "")
    rows = [fresh(name=f"n{i:03d}.example.test", names=[f"n{i:03d}.example.test"],
                  ts_expire=None if i % 11 == 0 else NOW + (i * 7 % 5 - 2) * DAY + 5)
            for i in range(60)]

    def key(r: FreshRow) -> tuple[bool, int, str]:
        expire = r.ts_expire
        return ((True, (expire - NOW) // DAY, r.name) if expire is not None and expire > 1
                else (False, 0, r.name))

    want = [r.name for r in sorted(rows, key=key)]
    assert want != [r.name for r in rows]
    for as_json in (True, False):
        with tempfile.SpooledTemporaryFile(64, mode="w+b") as spill:
            listing = Listing(NOW, as_json, spill)
            for r in rows:
                listing.add(key(r), summary.json(r) if as_json else summary.cells(r), True)
            out = list(listing.lines())
        assert listing.held == []
        if as_json:
            assert [i["name"] for i in json.loads("\n".join(out))] == want
        else:
            assert [line.split()[0] for line in out[1:]] == want
