"""``lecentral doctor``: take over an existing database (the seed's) knowing what is in it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from lecentral.cli.central import App
from lecentral.cli.common import EXIT_FAILURES, guarded, print_json

if TYPE_CHECKING:
    from lecentral.doctor import Finding

pass_app = click.make_pass_decorator(App)


@click.command()
@click.option("--fix", "apply_fix", is_flag=True,
              help="Repair what is safe (enable NULL, ts_expire/ts_last_update NULL or 0, "
                   "count_fail_update NULL), in one transaction, and say what changed.")
@click.option("--no-dns", "skip_dns", is_flag=True,
              help="Skip the DNS checks of the enabled DNS-01 names (sub-zone, key, nameservers, "
                   "a live TXT update, the negative TTL: lecentral dns check).")
@click.option("--json", "as_json", is_flag=True, help="The findings as JSON on stdout.")
@pass_app
@guarded
def doctor(app: App, apply_fix: bool, skip_dns: bool, as_json: bool) -> None:
    """Read every row of certs and report what would stop lecentral or the seed's Perl agents.

    \b
    Per row: values written as the seed's shell pipelines printed them (digests as `openssl
    md5` or `md5sum` print them, upper case: accepted, left as they are), names with
    capitals, enable NULL, ts_expire/ts_last_update NULL or 0, count_fail_update at 2 or more,
    a CSR that does not name its row or match md5_modulus, a crt that does not match the key
    or the CSR, certbot rows without webroot_path; [renew] settings that do not fit the
    shortest certificate lifetime stored (min_interval above a day or a quarter of it, a
    before/before_days that makes it always due); the challenge journals of [renew]
    state_dir (read, never changed: records a killed renew process left, which the next
    renew removes; a journal it does not trust); then, for every enabled DNS-01 name, the
    checks of `lecentral dns check` (sub-zone and TSIG key, nameservers, delegation, a live
    update, a negative TTL above 300 s, as the seed's 12-hour SOA minimum is).

    \b
    --fix changes only what the Perl scripts read the same way afterwards (see
    docs/operator-guide.md); digests and names are never rewritten.

    Exit status: 0 nothing left but notes, 1 warnings or errors remain, 4 database unreachable.
    """
    from sqlalchemy import select

    from lecentral.certificates import now_ts
    from lecentral.doctor import (
        ERROR,
        FIXABLE,
        FIXED,
        NOTE,
        WARNING,
        fix,
        journal_findings,
        renew_findings,
        row_findings,
    )
    from lecentral.errors import StoreError
    from lecentral.journal import survey
    from lecentral.store.schema import certs
    from lecentral.store.sql import SqlStore

    store = app.store()
    if not isinstance(store, SqlStore):
        raise StoreError("lecentral doctor reads the certs table through lecentral's SQL store")
    with store.transaction("reading certs") as conn:
        raws = [dict(r) for r in conn.execute(select(certs).order_by(certs.c.name)).mappings()]
    findings = [f for raw in raws for f in row_findings(raw)]
    findings += renew_findings(app.config.renew, raws)
    findings += journal_findings(survey(app.config.renew.state_dir, store.leftovers()))
    if not skip_dns:
        findings += _dns(app, raws)
    changed = fix(store.engine, findings, now_ts()) if apply_fix else []
    if as_json:
        print_json({"rows": len(raws), "findings": [f.as_dict() for f in findings],
                    "changed": len(changed)})
    else:
        for f in findings:
            tag = {FIXED: " [fixed]", FIXABLE: " [--fix repairs it]"}.get(f.fix or "", "")
            click.echo(f"{f.name}: {f.level}: {f.message}{tag}")
        counts = {level: sum(1 for f in findings if f.level == level and f.fix != FIXED)
                  for level in (ERROR, WARNING, NOTE)}
        def many(count: int, word: str) -> str:
            return f"{count} {word}" + ("" if count == 1 else "s")

        click.echo(f"{many(len(raws), 'row')}: {many(counts[ERROR], 'error')}, "
                   f"{many(counts[WARNING], 'warning')}, {many(counts[NOTE], 'note')}"
                   + (f"; {many(len(changed), 'value')} fixed" if apply_fix else ""))
    if any(f.level in (ERROR, WARNING) and f.fix != FIXED for f in findings):
        raise click.exceptions.Exit(EXIT_FAILURES)


def _dns(app: App, raws: list[dict[str, object]]) -> list[Finding]:
    """``lecentral dns check`` for every name of every enabled, valid DNS-01 row."""
    from lecentral.certificates import Csr, is_ip
    from lecentral.dns.check import SubZoneChecker
    from lecentral.doctor import ERROR, MANUAL, Finding, dns_findings
    from lecentral.errors import LecentralError
    from lecentral.store.rows import CertRow

    names: dict[str, None] = {}  # (in order, each once: a list's ``in`` was quadratic)
    for raw in raws:
        row = CertRow.from_db(raw)
        if row.problems or not row.enable or row.certbot:
            continue
        try:
            # an IP address in a DNS-01 row: the row's findings say so; it has no sub-zone
            names.update((n, None) for n in Csr.load(row.csr).names if not is_ip(n))
        except LecentralError:
            continue  # the row's findings say so already
    if not names:
        return []
    try:
        checker = SubZoneChecker(app.config.dns)
    except LecentralError as exc:  # e.g. no TSIG key yet
        return [Finding("[dns]", ERROR, "dns", f"the DNS-01 names cannot be checked: {exc}", MANUAL)]
    return [f for name in names for f in dns_findings(name, checker.check(name))]
