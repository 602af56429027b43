"""A real Pebble ACME server on 127.0.0.1, and :class:`AcmeWorld`: Pebble plus the BIND it asks.

Pebble's ACME API and management API listen on dynamic ports, over TLS with a certificate made
here (a throwaway CA in :attr:`PebbleServer.ca_bundle` signs a localhost/127.0.0.1 leaf). Its
validation authority resolves names through ``-dnsserver`` (our :class:`BindServer`) and connects
to ``http_port`` for HTTP-01 and ``tls_port`` for TLS-ALPN-01: a test serving HTTP-01 challenges
listens on 127.0.0.1:``http_port``.

Pebble makes a new root and intermediate CA at every start; fetch them with
:meth:`PebbleServer.root_pem` / :meth:`PebbleServer.intermediate_pem` to verify issued chains.

Example::

    with AcmeWorld.create(tmp_path, subzones=["www.example.test"]) as world:
        client_net = acme.client.ClientNetwork(key, verify_ssl=str(world.pebble.ca_bundle))
        directory = world.pebble.directory_url
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import secrets
import ssl
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from lecentral_testing.bind import DEFAULT_KEY_NAME, BindServer
from lecentral_testing.ports import LOOPBACK, free_port
from lecentral_testing.process import (
    Daemon,
    DaemonServer,
    find_executable,
    start_retrying_ports,
)

#: Environment Pebble always gets: no artificial validation sleeps, no authorization reuse, and no
#: random nonce rejection (5% by default, which makes client tests flaky; opt in via ``env``).
PEBBLE_ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_AUTHZREUSE": "0", "PEBBLE_WFE_NONCEREJECT": "0"}


#: Keys of Pebble's config file a test may add (``PebbleServer(config=...)``), as Pebble 2.4
#: spells them. Pebble silently ignores a key it does not know (a misspelt one, or one of a newer
#: Pebble), so PebbleServer refuses any other; the listener, TLS and EAB keys are its own.
PEBBLE_CONFIG_KEYS = ("domainBlocklist", "certificateValidityPeriod")


def write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """Make a throwaway CA and a localhost/127.0.0.1 leaf; return (ca, cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lecentral test Pebble TLS CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    # A real CA + leaf rather than one self-signed leaf: strict verifiers (Python 3.13's default
    # VERIFY_X509_STRICT, Go, curl) reject a CA:FALSE trust anchor or missing key identifiers.
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "tls-ca.pem", directory / "tls-cert.pem", directory / "tls-key.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            leaf_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return ca_path, cert_path, key_path


def _check_options(va_sleep: int | None, config: Mapping[str, Any]) -> None:
    """ValueError for a ``va_sleep`` Pebble would ignore, or a config key not in PEBBLE_CONFIG_KEYS."""
    if va_sleep is not None and va_sleep < 1:
        raise ValueError(f"va_sleep must be at least 1 second, not {va_sleep}")
    unknown = sorted(set(config) - set(PEBBLE_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"Pebble config key(s) {', '.join(unknown)} not supported: Pebble ignores keys it "
                         f"does not know, so the test would run against a default Pebble. Known: "
                         f"{', '.join(PEBBLE_CONFIG_KEYS)} (add a key to PEBBLE_CONFIG_KEYS once the "
                         "installed Pebble reads it)")


def new_eab_hmac_key() -> str:
    """A random EAB MAC key, base64url without padding as Pebble expects."""
    return base64.urlsafe_b64encode(secrets.token_bytes(48)).rstrip(b"=").decode()


class PebbleServer(DaemonServer):
    """Pebble on 127.0.0.1:<port> (ACME) and :<management_port>, TLS verified by :attr:`ca_bundle`.

    ``dns_server``: (address, port) Pebble resolves names with (normally a BindServer's).
    ``http_port``/``tls_port``: where Pebble's VA connects for HTTP-01 / TLS-ALPN-01 (dynamic by
    default). ``eab_required``: demand External Account Binding, with ``eab_keys`` (kid -> base64url
    MAC key; one is generated when required and none given). ``env``: extra Pebble environment,
    e.g. ``{"PEBBLE_WFE_NONCEREJECT": "50"}`` or ``{"PEBBLE_CHAIN_LENGTH": "3"}``.
    ``va_sleep``: let the validation authority sleep up to that many seconds before each validation,
    as real CAs take time (Pebble's default behaviour; the fixtures turn it off).
    ``config``: more keys of Pebble's config file, e.g. ``{"domainBlocklist": ["x.test"]}`` or
    ``{"certificateValidityPeriod": 7200}`` (seconds); only :data:`PEBBLE_CONFIG_KEYS`.
    """

    kind = "pebble"
    address = LOOPBACK

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        dns_server: tuple[str, int] | None = None,
        http_port: int | None = None,
        tls_port: int | None = None,
        eab_required: bool = False,
        eab_keys: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        va_sleep: int | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        # Arguments and executables first: a mistake must fail before any temp dir exists.
        _check_options(va_sleep, config or {})
        self._pebble = find_executable("pebble", package="pebble")
        super().__init__(workdir)
        self.dns_server = dns_server
        self.http_port = http_port or free_port()
        self.tls_port = tls_port or free_port()
        self.eab_required = eab_required
        self.eab_keys: dict[str, str] = dict(eab_keys or {})
        if eab_required and not self.eab_keys:
            self.eab_keys["kid-1"] = new_eab_hmac_key()
        self.extra_env = dict(env or {})
        if va_sleep is not None:
            self.extra_env.update(PEBBLE_VA_NOSLEEP="0", PEBBLE_VA_SLEEPTIME=str(va_sleep))
        self.extra_config = dict(config or {})
        self.port = 0
        self.management_port = 0
        self.dir = self.state_dir("pebble", None, max_len=4096)
        self.ca_bundle, self._cert, self._key = write_tls_files(self.dir)

    @property
    def directory_url(self) -> str:
        """The ACME directory URL."""
        return f"https://{LOOPBACK}:{self.port}/dir"

    @property
    def management_url(self) -> str:
        """Base URL of Pebble's management API (roots, intermediates, cert status)."""
        return f"https://{LOOPBACK}:{self.management_port}"

    def ssl_context(self) -> ssl.SSLContext:
        """An SSL context that trusts exactly Pebble's TLS certificate."""
        return ssl.create_default_context(cafile=str(self.ca_bundle))

    def get(self, url: str, timeout: float = 5.0) -> bytes:
        """GET ``url`` from Pebble over verified TLS, ignoring any proxy settings."""
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self.ssl_context())
        )
        with opener.open(url, timeout=timeout) as response:
            body: bytes = response.read()
            return body

    def root_pem(self, index: int = 0) -> str:
        """PEM of Pebble's current root CA (``/roots/INDEX``); it changes at every start."""
        return self.get(f"{self.management_url}/roots/{index}").decode()

    def intermediate_pem(self, index: int = 0) -> str:
        """PEM of Pebble's current intermediate CA (``/intermediates/INDEX``)."""
        return self.get(f"{self.management_url}/intermediates/{index}").decode()

    def _write_config(self) -> Path:
        config = {
            "pebble": {
                "listenAddress": f"{LOOPBACK}:{self.port}",
                "managementListenAddress": f"{LOOPBACK}:{self.management_port}",
                "certificate": str(self._cert),
                "privateKey": str(self._key),
                "httpPort": self.http_port,
                "tlsPort": self.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": self.eab_required,
                "externalAccountMACKeys": self.eab_keys,
                **self.extra_config,
            }
        }
        path = self.dir / "pebble-config.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the EAB keys
        with os.fdopen(fd, "w") as handle:
            json.dump(config, handle, indent=2)
        return path

    def _environment(self) -> dict[str, str]:
        # No proxy variables: the VA must reach 127.0.0.1 directly, never a proxy elsewhere.
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env.update(PEBBLE_ENV)
        env.update(self.extra_env)
        return env

    def start(self) -> Self:
        """Start Pebble; returns once its directory answers over verified TLS."""
        if self.running:
            return self
        first_start = self.port == 0

        def attempt() -> None:
            if first_start:
                self.port, self.management_port = free_port(), free_port()
            argv = [self._pebble, "-config", str(self._write_config())]
            if self.dns_server is not None:
                argv += ["-dnsserver", f"{self.dns_server[0]}:{self.dns_server[1]}"]
            self._daemon = Daemon("pebble", argv, log_path=self.workdir / "pebble.log", env=self._environment(), cwd=self.dir)
            self._daemon.start(lambda: bool(self.get(self.directory_url, timeout=1)), timeout=30)

        start_retrying_ports(attempt, attempts=3 if first_start else 1)
        return self

    def stop(self) -> None:
        """Stop Pebble by pid (its CA, orders and accounts are gone: Pebble keeps no state)."""
        super().stop()


class AcmeWorld:
    """BIND and Pebble together, Pebble resolving through BIND: the local ACME world.

    Wraps two servers; :meth:`create` builds both, :meth:`start`/:meth:`stop`/:meth:`close` (and
    ``with``) drive both. Use :meth:`new_name` for a fresh updatable sub-zone per test.
    """

    def __init__(self, bind: BindServer, pebble: PebbleServer) -> None:
        self.bind = bind
        self.pebble = pebble
        self._counter = 0

    @classmethod
    def create(
        cls,
        workdir: Path | str | None = None,
        *,
        parent: str = "example.test",
        subzones: Iterable[str] = (),
        secondary: bool = False,
        eab_required: bool = False,
        pebble_env: Mapping[str, str] | None = None,
    ) -> AcmeWorld:
        """A new, not yet started world in ``workdir`` (a temp dir removed by :meth:`close` if None)."""
        base = Path(workdir) if workdir is not None else None
        bind = BindServer(base / "bind" if base else None, parent=parent, subzones=subzones, secondary=secondary)
        pebble = PebbleServer(base / "pebble" if base else None, eab_required=eab_required, env=pebble_env)
        return cls(bind, pebble)

    @property
    def parent_zone(self) -> str:
        """The parent zone every sub-zone is delegated from (e.g. ``example.test``)."""
        return self.bind.parent

    def start(self) -> Self:
        """Start BIND, then Pebble pointed at it."""
        self.bind.start()
        self.pebble.dns_server = (self.bind.address, self.bind.port)
        self.pebble.start()
        return self

    def stop(self) -> None:
        """Stop Pebble and BIND."""
        try:
            self.pebble.stop()
        finally:
            self.bind.stop()

    def close(self) -> None:
        """Stop both and remove the temp dirs they made."""
        try:
            self.pebble.close()
        finally:
            self.bind.close()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def new_name(
        self,
        prefix: str = "t",
        *,
        key_name: str = DEFAULT_KEY_NAME,
        soa_minimum: int | None = None,
        ttl: int = 60,
        records: Sequence[str] = (),
    ) -> str:
        """Create a fresh updatable sub-zone ``PREFIX<n>-<random>.PARENT`` and return its name.

        It is delegated from the parent, has A 127.0.0.1, and ``key_name`` may update its
        ``_acme-challenge`` TXT (see :meth:`BindServer.add_subzone`).
        """
        self._counter += 1
        name = f"{prefix}{self._counter}-{secrets.token_hex(3)}.{self.parent_zone}"
        self.bind.add_subzone(name, key_name=key_name, soa_minimum=soa_minimum, ttl=ttl, records=records)
        return name
