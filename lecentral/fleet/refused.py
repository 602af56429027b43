"""Rows the renew job refuses or whose certificate is bad, for ``lecentral check``.

``check`` reads ``certs`` without parsing a CSR or a certificate (100,000 rows), so its own row
checks are the cheap ones (columns, lengths: :func:`lecentral.fleet.nagios.row_problems`). What
only parsing finds (a CSR that does not name its row, two rows for one DNS name, a certificate
for another key, a ``ts_expire`` that is not the certificate's notAfter) is known from the facts
the last renew sweep recorded (``lecentral_cert_facts``, lecentral/store/facts.py): the rows
whose state was not ``ok`` then are read again in full and checked here, as ``lecentral list``
checks them, so the lines say what is wrong now. A row broken after the last sweep is found by
the next one (the renew timer's run), which refuses or replaces it and alerts itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from lecentral.errors import LecentralError
from lecentral.names import pem_fingerprint
from lecentral.store.rows import certificate_problems, load_row_csr
from lecentral.store.schema import cert_facts
from lecentral.store.sql import SqlStore

#: at most this many rows are read again per check (a table no sweep has vouched for yet: the
#: first lines are enough to point at ``lecentral list``)
LIMIT = 200


def refused_rows(store: SqlStore, names: Iterable[str] = ()) -> dict[str, list[str]]:
    """Lower-case name -> what is wrong with its row now, for the rows the last sweep did not
    find ``ok`` (only ``names`` when given). A row whose certificate cannot be read at all is
    left to the fleet view, which says so."""
    wanted = {n.lower().rstrip(".") for n in names}
    f = cert_facts.c
    query = select(f.name).where(f.state != "ok").order_by(f.name)
    listed = store.read("reading the rows the last sweep did not vouch for",
                        lambda conn: [str(n) for n in conn.execute(query).scalars()])
    seen: set[str] = set()
    chosen: list[str] = []
    for name in listed:
        key = name.lower().rstrip(".")
        if (wanted and key not in wanted) or key in seen:
            continue
        if len(chosen) >= LIMIT:
            break
        seen.add(key)
        chosen.append(name)
    found: dict[str, list[str]] = {}
    for entry in store.read_named(chosen):  # a row removed since the sweep is left out
        row = entry.row
        key = row.name.lower().rstrip(".")
        problems = list(row.problems)
        if not problems:
            try:
                csr_names = load_row_csr(row).names
            except LecentralError as exc:
                problems.append(str(exc))  # refused until fixed: what matters first
            else:
                if row.crt and pem_fingerprint(row.crt) is not None:
                    problems += [f"bad certificate: {p}"
                                 for p in certificate_problems(row, csr_names)]
        if problems:
            found[key] = problems
    return found
