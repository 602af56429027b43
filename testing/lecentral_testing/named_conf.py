"""The files a throwaway named reads, as text: keys, named.conf, rndc.conf, zone files.

Pure: each function returns what to write; :class:`~lecentral_testing.bind.BindServer` writes it
and runs named. Laid out like the seed's named.conf (one updatable sub-zone per name).
"""

from __future__ import annotations

import base64
import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lecentral_testing.ports import LOOPBACK

DEFAULT_KEY_NAME = "acme-update"
TSIG_ALGORITHM = "hmac-sha512"

_NAME_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)*$")


def dns_name(name: str, what: str) -> str:
    """Lower-case ``name`` without its trailing dot; reject anything that could break named.conf."""
    clean = name.lower().rstrip(".")
    if not _NAME_RE.match(clean):
        raise ValueError(f"{what} {name!r} is not a valid DNS name")
    return clean


def new_tsig_secret() -> str:
    """A random 512-bit base64 secret, like ``tsig-keygen -a hmac-sha512`` makes."""
    return base64.b64encode(secrets.token_bytes(64)).decode()


def tsig_secret(secret: str) -> str:
    """``secret`` if it is base64 (it is pasted into named.conf), else ValueError."""
    try:
        base64.b64decode(secret, validate=True)
    except ValueError:
        raise ValueError("a TSIG secret must be base64 (as tsig-keygen writes it)") from None
    return secret


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the first byte (it holds secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(text)


def key_clause(name: str, secret: str, algorithm: str = TSIG_ALGORITHM) -> str:
    # The exact shape tsig-keygen prints, so key_file() output is what operators already have.
    return f'key "{name}" {{\n\talgorithm {algorithm};\n\tsecret "{secret}";\n}};\n'


@dataclass(frozen=True)
class SubZone:
    """One updatable sub-zone: its name, the key allowed to update it, and what it may update."""

    name: str
    key_name: str
    grant_names: tuple[str, ...]
    grant_match: str
    soa_minimum: int
    ttl: int
    records: tuple[str, ...]

    @property
    def update_policy(self) -> str:
        """The update-policy grants, as they appear in named.conf."""
        return " ".join(f"grant {self.key_name} {self.grant_match} {n} TXT;" for n in self.grant_names)


def ns_lines(owner: str, nameservers: Sequence[str]) -> str:
    """The NS records of ``owner``."""
    return "".join(f"{owner}\tIN NS\t{host}.\n" for host in nameservers)


def subzone_file(zone: SubZone, parent: str, nameservers: Sequence[str]) -> str:
    """A sub-zone's file as written once, before named owns it (dynamic zone)."""
    soa = f"ns1.{parent}. postmaster.{parent}. 1 21600 1800 1209600 {zone.soa_minimum}"
    return (f"$ORIGIN {zone.name}.\n$TTL {zone.ttl}\n@\tIN SOA\t{soa}\n"
            + ns_lines("@", nameservers) + f"@\tIN A\t{LOOPBACK}\n"
            + "".join(f"{line}\n" for line in zone.records))


def parent_file(parent: str, serial: int, nameservers: Sequence[str], subzones: Iterable[str],
                records: Sequence[str]) -> str:
    """The parent zone: its nameservers' A records and the NS delegation of each sub-zone below it."""
    soa = f"ns1.{parent}. postmaster.{parent}. {serial} 21600 1800 1209600 60"
    lines = [f"$ORIGIN {parent}.\n$TTL 60\n@\tIN SOA\t{soa}\n", ns_lines("@", nameservers)]
    lines += [f"{host}.\tIN A\t{LOOPBACK}\n" for host in nameservers]
    lines += [ns_lines(f"{name}.", nameservers) for name in subzones if name.endswith(f".{parent}")]
    lines += [f"{line}\n" for line in records]
    return "".join(lines)


def _controls(secret: str, port: int) -> str:
    return (key_clause("rndc-key", secret, "hmac-sha256")
            + f'controls {{ inet {LOOPBACK} port {port} allow {{ {LOOPBACK}; }} keys {{ "rndc-key"; }}; }};\n')


def _options(directory: Path, port: int, extra: str) -> str:
    return (
        f'options {{\n\tdirectory "{directory}";\n\tpid-file none;\n\tsession-keyfile none;\n'
        f'\tmanaged-keys-directory "{directory}";\n\tlisten-on port {port} {{ {LOOPBACK}; }};\n'
        f"\tlisten-on-v6 {{ none; }};\n\trecursion no;\n\tdnssec-validation no;\n{extra}}};\n"
    )


def primary_conf(directory: Path, port: int, rndc_port: int, rndc_secret: str,
                 keys: Mapping[str, str], parent: str, subzones: Iterable[SubZone], *,
                 secondary: bool, notify_port: int | None) -> str:
    """The primary's named.conf: every key, the parent, one update-policy zone per sub-zone;
    with a secondary, NOTIFY to ``notify_port`` (None while the secondary is held)."""
    notify = "\tnotify explicit;\n\tnotify-delay 0;\n" if secondary else "\tnotify no;\n"
    also = f" also-notify {{ {LOOPBACK} port {notify_port}; }};" if notify_port else ""
    parts = [
        _options(directory, port, notify + "\tallow-transfer { 127.0.0.0/8; };\n"),
        _controls(rndc_secret, rndc_port),
        *(key_clause(name, secret) for name, secret in sorted(keys.items())),
        f'zone "{parent}" {{ type master; allow-query {{ any; }}; file "{parent}.db";{also} }};\n',
    ]
    also_line = f"\t{also.strip()}\n" if also else ""
    for zone in subzones:
        parts.append(
            f'zone "{zone.name}" {{\n\ttype master;\n\tallow-query {{ any; }};\n\tfile "{zone.name}.db";\n'
            f"\tupdate-policy {{ {zone.update_policy} }};\n{also_line}}};\n"
        )
    return "".join(parts)


def secondary_conf(directory: Path, port: int, rndc_port: int, rndc_secret: str,
                   zones: Iterable[str], primary_port: int) -> str:
    """The secondary's named.conf: every zone from the primary at ``primary_port``.

    To hold the secondary, ``primary_port`` is one where nothing answers: dropping the primary's
    also-notify alone is not enough, since NOTIFYs it queued before (its start-up ones are retried
    for seconds) come from the primary's address and would let the "lagging" secondary catch up.
    """
    parts = [_options(directory, port, "\tnotify no;\n\tserial-query-rate 1000;\n"),
             _controls(rndc_secret, rndc_port)]
    for name in zones:
        parts.append(
            f'zone "{name}" {{ type secondary; primaries {{ {LOOPBACK} port {primary_port}; }}; '
            f'allow-query {{ any; }}; file "{name}.db"; }};\n'
        )
    return "".join(parts)


def rndc_conf(rndc_secret: str) -> str:
    """rndc.conf for the primary's control channel."""
    return (key_clause("rndc-key", rndc_secret, "hmac-sha256")
            + f'options {{ default-key "rndc-key"; default-server {LOOPBACK}; }};\n')
