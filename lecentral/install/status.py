"""``lecentral-install status``: what is installed, what the database holds, what is served.

Read-only: it never writes a file, never takes the run lock, and a database that cannot be reached
is shown per entry instead of stopping the listing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lecentral.certificates import Certificate, now_ts
from lecentral.errors import InstallError, LecentralError, StoreError
from lecentral.install.config import InstallConfig
from lecentral.install.decide import compare, precheck
from lecentral.install.fileset import LocalFiles
from lecentral.install.request import OperatorRequest
from lecentral.records import CertEntry

if TYPE_CHECKING:
    from lecentral.interfaces import Service
    from lecentral.registry import Registry
    from lecentral.store.rows import CertRow

#: seconds for each served-certificate check in status (one attempt, no polling)
STATUS_VERIFY_TIMEOUT = 5.0


def _cert_info(data: bytes | None, source: str) -> dict[str, Any] | None:
    if data is None:
        return None
    cert = Certificate.load(data, source)
    return {"expires": cert.not_after, "not_before": cert.not_before,
            "fingerprint": cert.fingerprint, "names": cert.names}


def _rows(config: InstallConfig, registry: Registry) -> tuple[dict[str, CertRow | None], str | None]:
    from lecentral.store import open_store

    try:
        store = open_store(config.database.url, registry, config.database)
        try:
            return store.get_many([e.name for e in config.certs]), None
        finally:
            store.close()
    except StoreError as exc:
        return {}, str(exc)


def _refusal(entry: CertEntry, row: CertRow, key: str) -> str | None:
    """Why the next run will refuse the database's certificate (its pre-checks), or None."""
    try:
        precheck(entry, row, now_ts(), key)
    except InstallError as exc:
        return f"the next run will refuse it: {exc}"
    return None


def entry_status(entry: CertEntry, service: Service, row: CertRow | None, db_error: str | None,
                 registry: Registry, state_dir: Path) -> dict[str, Any]:
    """One entry's status as a plain dict (the ``--json`` shape)."""
    from lecentral.verify import presented_fingerprint

    out: dict[str, Any] = {"name": entry.name, "service": entry.service, "installed": None,
                           "database": None, "served": {}, "state": "", "error": None}
    try:
        workdir = state_dir / "entries" / entry.id
        installer = service.installer(entry, workdir, 1) or LocalFiles(entry, workdir, 1)
        installed = installer.installed()
        out["installed"] = _cert_info(installed, entry.cert)
        pending = installer.pending()
        if db_error:
            out["state"] = "database unreachable"
        elif row is None:
            out["state"] = "not in the database"
        else:
            out["database"] = {"enable": row.enable, "problems": list(row.problems),
                               **(_cert_info(row.crt, f"crt of {row.name}") or {})}
            decision = compare(entry, row, installer, now_ts())
            out["state"] = f"to install: {decision.reason}" if decision.install else decision.reason
            if decision.skip_status == "failed" and not decision.install:
                out["error"] = decision.reason  # the installed set is wrong: exit 1, never "up to date"
            elif decision.install:
                out["error"] = _refusal(entry, row, decision.key)
        if pending:
            out["state"] = f"interrupted run to finish (journal {pending}); {out['state']}"
        request = OperatorRequest(workdir).path
        if request.exists():
            out["state"] += f"; the request to restart by hand is NOT sent yet ({request})"
        for url in service.verify_urls(entry):
            try:
                fp = presented_fingerprint(registry, url, STATUS_VERIFY_TIMEOUT)
                current = out["installed"] and fp == out["installed"]["fingerprint"]
                out["served"][url] = {"fingerprint": fp, "is_installed": bool(current)}
            except LecentralError as exc:
                out["served"][url] = {"error": str(exc)}
    except LecentralError as exc:
        out["error"] = str(exc)
    return out


def status(config: InstallConfig, registry: Registry,
           names: Sequence[str] = ()) -> tuple[list[dict[str, Any]], str | None]:
    """Every configured entry's status (or only those of ``names``), and the database error if it
    could not be read."""
    wanted = {n.lower().rstrip(".") for n in names}
    entries = [e for e in config.certs if not wanted or e.name.lower().rstrip(".") in wanted]
    if entries != list(config.certs):
        config = dataclasses.replace(config, certs=tuple(entries))
    rows, db_error = _rows(config, registry) if config.certs else ({}, None)
    results = [entry_status(e, config.service(e), rows.get(e.name), db_error, registry,
                            Path(config.agent.state_dir))
               for e in config.certs]
    results += [{"name": b.label, "service": "?", "installed": None, "database": None, "served": {},
                 "state": "configuration error", "error": b.error} for b in config.broken
                if not wanted]
    return results, db_error
