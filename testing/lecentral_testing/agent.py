"""A small world for testing the agent and service plugins: a CA, a store, install.toml, runs.

:class:`TestCA` signs CSRs the way an ACME CA would (leaf + its CA), with any validity, so tests
can make "expired" or "newer by a day" certificates that Pebble cannot. :class:`AgentWorld` keeps
a real store (SQLite by default, or any URL), fills it as the central host does
(``add`` + ``save_issued``), writes ``install.toml`` and runs ``lecentral-install`` in-process.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lecentral.certificates import Certificate, Csr, now_ts
from lecentral_testing.central import new_row
from lecentral_testing.pebble import PebbleServer
from lecentral_testing.tomlfile import dump_toml, toml_value, write_toml

__all__ = ["AgentWorld", "RunOutcome", "TestCA", "dump_toml", "toml_value"]  # dump_toml: plugins' tests use it

UTC = dt.UTC


class PebbleOrders:
    """Real certificates from an always-valid Pebble, stored as the central renew job stores them.

    Pebble runs with ``PEBBLE_VA_ALWAYS_VALID=1``: every challenge passes, so no DNS or web server
    is needed; the order, finalization and chain are Pebble's own, through lecentral's ACME client.
    The ``pebble_orders`` fixture gives one per session.
    """

    def __init__(self, pebble: PebbleServer, workdir: Path) -> None:
        from lecentral.acme.client import AcmeClient
        from lecentral.config import AcmeConfig

        self.client = AcmeClient(AcmeConfig(directory=pebble.directory_url, email="ops@example.test",
                                            account_key=str(workdir / "account.key"),
                                            ca_bundle=str(pebble.ca_bundle), poll_timeout=30),
                                 workers=1)

    def order(self, csr_pem: bytes) -> tuple[bytes, bytes]:
        """(leaf PEM, CA chain PEM) for the CSR's names."""
        from lecentral.certificates import split_fullchain

        csr = Csr.load(csr_pem)
        order = self.client.new_order(csr.pem, csr.names)
        for challenge in self.client.pending_challenges(order, "dns-01"):
            self.client.answer(challenge)
        self.client.wait_authorizations(order)
        return split_fullchain(self.client.finalize(order).encode())

    def issue(self, world: AgentWorld, name: str) -> Certificate:
        """Order a certificate for ``name``'s stored CSR and save it in ``world``'s store."""
        row = world.store.get(name)
        assert row is not None, f"{name} is not in the store"
        crt, ca = self.order(row.csr)
        leaf = Certificate.load(crt)
        world.store.save_issued(name, crt, ca, leaf.not_after, now_ts())
        return leaf

    def close(self) -> None:
        self.client.close()


class TestCA:
    """A root CA (ECDSA P-256) that signs CSRs; its certificate is the ``ca`` column."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str = "lecentral test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(UTC)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(days=400))
                     .not_valid_after(now + dt.timedelta(days=4000))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                                    critical=False)
                     .sign(self.key, hashes.SHA256()))
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def reissued(self) -> bytes:
        """This CA's certificate signed again (same key and subject, another serial and validity):
        a new ``ca`` column, and so ``md5_ca``, that still verifies the leaves already signed."""
        now = dt.datetime.now(UTC)
        cert = (x509.CertificateBuilder().subject_name(self.cert.subject).issuer_name(self.cert.subject)
                .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=3000))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM)

    def sign(self, csr_pem: bytes, *, days: float = 90, start: dt.datetime | None = None) -> bytes:
        """A PEM leaf for the CSR's key and names, valid from ``start`` (now) for ``days``."""
        csr = Csr.load(csr_pem)
        start = start or dt.datetime.now(UTC) - dt.timedelta(minutes=5)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, csr.names[0])]))
                .issuer_name(self.cert.subject).public_key(csr.csr.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in csr.names]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False)
                .sign(self.key, hashes.SHA256()))
        return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class RunOutcome:
    """One ``lecentral-install`` invocation: exit code, stdout, stderr, and the ``--json`` results."""

    exit_code: int
    stdout: str
    stderr: str
    results: list[dict[str, Any]] = field(default_factory=list)

    def by_name(self, name: str) -> dict[str, Any]:
        matches = [r for r in self.results if r["name"] == name]
        assert len(matches) == 1, f"{name} not exactly once in {self.results}\n{self.stderr}"
        return matches[0]


class AgentWorld:
    """A store filled as the central host fills it, an install.toml, and agent runs.

    ``ssl`` is the directory certificate files go to (``ssl/certs``, ``ssl/private``).
    """

    def __init__(self, workdir: Path, *, db_url: str | None = None, ca: TestCA | None = None) -> None:
        from lecentral.registry import Registry
        from lecentral.store import open_store

        self.workdir = workdir
        self.db_url = db_url or f"sqlite:///{workdir}/lecentral.db"
        self.registry = Registry.load()
        self.store = open_store(self.db_url, self.registry)
        self.store.init_schema()
        self.ca = ca or TestCA()
        self.ssl = workdir / "ssl"
        (self.ssl / "certs").mkdir(parents=True, exist_ok=True)
        (self.ssl / "private").mkdir(mode=0o710, exist_ok=True)
        self.state_dir = workdir / "state"
        self.config_path = workdir / "install.toml"
        self.notify: dict[str, Any] = {}
        self.agent: dict[str, Any] = {"state_dir": str(self.state_dir)}
        #: more [database] keys for install.toml (retry_for, ...)
        self.database: dict[str, Any] = {}

    def close(self) -> None:
        self.store.close()

    # -- the central side -------------------------------------------------------------------------

    def key_path(self, name: str) -> Path:
        return self.ssl / "private" / f"{name}.key"

    def add(self, name: str, *, key: str = "rsa2048", sans: Sequence[str] = (), enable: bool = True,
            key_path: Path | None = None) -> Path:
        """Make the key on "the server" (``lecentral-install csr``'s code) and add the row; return the key path."""
        from lecentral.install.csr import KeySpec, make_csr

        spec = KeySpec("rsa", int(key[3:])) if key.startswith("rsa") else KeySpec("ec", curve=f"p{key[2:]}")
        path = key_path or self.key_path(name)
        csr, _ = make_csr(name, list(sans), path, spec, force=False)
        self.store.add(new_row(csr.pem, name=name, enable=enable))
        return path

    def issue(self, name: str, *, days: float = 90, start: dt.datetime | None = None,
              crt: bytes | None = None, ca: bytes | None = None) -> Certificate:
        """Store a new certificate for ``name`` as the renew job does (signed by :attr:`ca` unless given)."""
        row = self.store.get(name)
        assert row is not None, f"{name} is not in the store"
        if crt is None:
            crt, ca = self.ca.sign(row.csr, days=days, start=start), self.ca.pem
        leaf = Certificate.load(crt)
        self.store.save_issued(name, crt, ca or self.ca.pem, leaf.not_after, now_ts())
        return leaf

    # -- the server side -------------------------------------------------------------------------

    def entry(self, name: str, **keys: Any) -> dict[str, Any]:
        """A ``[[cert]]`` table with the usual files under :attr:`ssl`; ``keys`` override or add."""
        base = {"name": name, "key": str(self.key_path(name)),
                "cert": str(self.ssl / "certs" / f"{name}.crt"),
                "chain": str(self.ssl / "certs" / f"{name}.ca"),
                "fullchain": str(self.ssl / "certs" / f"{name}.full")}
        return {**base, **keys}

    def write_config(self, *entries: Mapping[str, Any], database: str | None = None) -> Path:
        tables: dict[str, dict[str, Any]] = {"database": {"url": database or self.db_url,
                                                          **self.database},
                                             "agent": self.agent}
        if self.notify:
            tables["notify"] = self.notify
        return write_toml(self.config_path, tables, entries)

    def run(self, *args: str, json_output: bool = True) -> RunOutcome:
        """``lecentral-install --config install.toml <args>`` in-process (``run --json`` by default)."""
        from click.testing import CliRunner

        from lecentral.cli.agent import main

        argv = ["--config", str(self.config_path), *args]
        if json_output and args and args[0] == "run" and "--json" not in args:
            argv.append("--json")
        result = CliRunner().invoke(main, argv, catch_exceptions=False)
        outcome = RunOutcome(result.exit_code, result.stdout, result.stderr)
        if "--json" in argv and result.stdout.strip().startswith("["):
            outcome.results = json.loads(result.stdout)
        return outcome
