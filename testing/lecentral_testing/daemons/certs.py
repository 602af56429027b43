"""Certificate files for the test daemons: a key, a leaf, its chain, written where a daemon reads them.

Self-signed (from :mod:`lecentral_testing.pki`) is enough for the verifiers, which compare
fingerprints and never validate a chain. The "chain" of a self-signed leaf is the leaf itself (it is
its own CA), so daemons that want a CA file (Apache's chain, slapd's TLSCACertificateFile) get one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lecentral.certificates import Certificate
from lecentral_testing.pki import key_pem, make_key, make_self_signed


@dataclass(frozen=True)
class CertFiles:
    """Where one certificate's files are. ``fullchain`` is the leaf followed by the chain."""

    cert: Path
    key: Path
    chain: Path
    fullchain: Path

    def fingerprint(self) -> str:
        """SHA-256 hex of the leaf now in :attr:`cert` (what a verifier should see after a reload)."""
        return pem_fingerprint(self.cert.read_bytes())


def pem_fingerprint(pem: bytes) -> str:
    """SHA-256 hex (lower case, no colons) of the first certificate in ``pem``."""
    return Certificate.load(pem).fingerprint


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` in one rename; the temp file has ``mode`` from its first byte."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(data)
    os.replace(tmp, path)


def write_cert_files(
    directory: Path | str,
    names: Sequence[str] = ("localhost",),
    *,
    stem: str = "server",
    key_kind: str = "ec256",
    days: int = 30,
) -> CertFiles:
    """Make a key and a self-signed certificate for ``names`` and write ``STEM.{crt,key,ca,full}``.

    Files already there are replaced (each atomically; the key is 0600 from its first byte).
    ``key_kind`` is one of :func:`lecentral_testing.pki.make_key`'s kinds (``ec256``, ``rsa2048``...).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert_pem, key = make_self_signed(list(names), make_key(key_kind), days=days)
    files = CertFiles(cert=directory / f"{stem}.crt", key=directory / f"{stem}.key",
                      chain=directory / f"{stem}.ca", fullchain=directory / f"{stem}.full")
    write_atomic(files.key, key_pem(key), 0o600)
    write_atomic(files.chain, cert_pem)
    write_atomic(files.fullchain, cert_pem)  # a self-signed leaf is its own chain: no repeat
    write_atomic(files.cert, cert_pem)
    return files
