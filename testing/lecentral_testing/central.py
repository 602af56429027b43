"""The central host's side of a local world, for tests, benchmarks and ``lecentral demo``.

:func:`central_tables` is the ``lecentral.toml`` an operator would write for a Pebble + BIND
world (write it with :func:`lecentral_testing.tomlfile.write_toml`); :func:`new_row` is a
``certs`` row as ``lecentral add`` makes it from a CSR.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lecentral_testing.bind import DEFAULT_KEY_NAME
from lecentral_testing.ports import LOOPBACK

if TYPE_CHECKING:
    from lecentral.store.rows import CertRow
    from lecentral_testing.bind import BindServer
    from lecentral_testing.pebble import PebbleServer


def central_tables(workdir: Path, pebble: PebbleServer, bind: BindServer, *, email: str,
                   database: str = "lecentral", propagation_timeout: float = 30.0,
                   ) -> dict[str, dict[str, Any]]:
    """``[database]``, ``[acme]`` and ``[dns]`` for a world where ``pebble`` resolves through ``bind``.

    SQLite in ``workdir/DATABASE.db``, the ACME account key in ``workdir/account.key``, updates
    signed with BIND's default TSIG key; add ``[renew]``, ``[http01]``, zones... as needed.
    """
    return {
        "database": {"url": f"sqlite:///{workdir}/{database}.db"},
        "acme": {"directory": pebble.directory_url, "email": email,
                 "account_key": str(workdir / "account.key"), "ca_bundle": str(pebble.ca_bundle)},
        "dns": {"server": f"{LOOPBACK}:{bind.port}", "port": bind.port,
                "tsig_key_file": str(bind.key_file(DEFAULT_KEY_NAME)),
                "propagation_timeout": propagation_timeout, "propagation_interval": 0.05},
    }


def new_row(csr_pem: bytes, *, name: str | None = None, enable: bool = True, **columns: Any) -> CertRow:
    """The row ``lecentral add`` makes for ``csr_pem``: named after its first name (unless
    ``name``), md5_modulus from the CSR, ts_expire and ts_last_update 1 (due now), no failures;
    ``columns`` set any other column (``certbot``, ``webroot_path``, ...)."""
    from lecentral.certificates import Csr
    from lecentral.store.rows import CertRow

    csr = Csr.load(csr_pem)
    return CertRow(name=name or csr.names[0], csr=csr.pem, md5_modulus=csr.md5_modulus, enable=enable,
                   ts_expire=1, ts_last_update=1, count_fail_update=0, **columns)
