"""Everything an operator needs to set up one per-name sub-zone (``lecentral dns zone``).

The seed's recipe, with its traps removed: a fresh hmac-sha512 key (or an existing one), the
named.conf stanza whose update-policy grants exactly ``_acme-challenge.NAME TXT``, a zone file
whose negative-caching TTL is minutes rather than the seed's 12 hours, the parent's delegation
(which replaces the old A record, so the A record moves into the sub-zone), and the lecentral
config lines. Files are written atomically; the key file is 0600 from its first byte.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from lecentral.dns.tsig import TsigKey
from lecentral.errors import LecentralError
from lecentral.files_io import replace_atomically

#: negative-caching TTL of a new sub-zone: a failed validation is retried after minutes, not hours
SOA_MINIMUM = 300
ZONE_TTL = 300


@dataclass(frozen=True)
class SubZonePlan:
    """One sub-zone to create; renders each file the operator installs."""

    zone: str
    key_name: str
    nameservers: tuple[str, ...]
    addresses: tuple[str, ...] = ()
    zone_file_path: str = ""
    new_key: TsigKey | None = field(default=None, repr=False)
    serial: int = 0
    soa_minimum: int = SOA_MINIMUM

    @property
    def challenge(self) -> str:
        return f"_acme-challenge.{self.zone}."

    @property
    def parent(self) -> str:
        return self.zone.split(".", 1)[1] if "." in self.zone else ""

    def key_text(self) -> str:
        """The BIND key file (only when a new key was generated)."""
        if self.new_key is None:
            return ""
        return (f'key "{self.key_name}" {{\n\talgorithm {self.new_key.algorithm};\n'
                f'\tsecret "{self.new_key.secret}";\n}};\n')

    def named_conf(self) -> str:
        """The zone stanza for named.conf on the primary."""
        return (
            f"// lecentral: sub-zone for the certificate of {self.zone}\n"
            f'zone "{self.zone}" in {{\n\ttype primary;\n\tallow-query {{ any; }};\n'
            f'\tfile "{self.zone_file_path}";\n'
            f"\tupdate-policy {{\n\t\tgrant {self.key_name} name {self.challenge} TXT;\n\t}};\n}};\n"
        )

    def zone_file(self) -> str:
        """The initial zone file (named owns it once the zone is dynamic)."""
        rname = f"hostmaster.{self.parent or self.zone}."
        lines = [
            (f"; lecentral: sub-zone {self.zone}; dynamic: rndc freeze {self.zone} before editing, "
             f"rndc thaw {self.zone} after\n"),
            f"$ORIGIN {self.zone}.\n$TTL {ZONE_TTL}\n",
            (f"@\tIN SOA\t{self.nameservers[0]} {rname} (\n\t\t{self.serial}\t; serial\n"
             "\t\t3600\t; refresh (1 hour)\n\t\t600\t; retry (10 minutes)\n\t\t1209600\t; expire (2 weeks)\n"
             f"\t\t{self.soa_minimum}\t; minimum: negative TTL, how long a missing record is cached\n\t\t)\n"),
            *(f"\tIN NS\t{ns}\n" for ns in self.nameservers),
        ]
        for address in self.addresses:
            lines.append(f"\tIN {'AAAA' if ':' in address else 'A'}\t{address}\n")
        if not self.addresses:
            lines.append(f"; add here the A/AAAA records {self.zone} had in the parent zone\n")
        return "".join(lines)

    def parent_records(self) -> str:
        """What replaces ``NAME IN A ...`` in the parent zone, with the glue advice."""
        text = [f"; in zone {self.parent or '(the parent)'}: replace the A/AAAA records of {self.zone} with\n"]
        text += [f"{self.zone}.\tIN NS\t{ns}\n" for ns in self.nameservers]
        inside = [ns for ns in self.nameservers if ns.rstrip(".").endswith(f".{self.zone}")]
        if inside:
            text.append(f"; {', '.join(inside)} lie inside {self.zone}: add glue A/AAAA records for them "
                        f"in the parent too, or resolvers cannot reach the sub-zone\n")
        text.append(f"; then bump the parent's serial and reload it (rndc reload {self.parent})\n")
        return "".join(text)

    def lecentral_config(self, key_file: str) -> str:
        """The lecentral.toml lines for this zone's key."""
        if self.new_key is None:
            return (f"# key {self.key_name} must be in [dns] tsig_key_file (or add a per-zone table):\n"
                    f'# [dns.zones."{self.zone}"]\n# tsig_key_file = "/etc/lecentral/{self.key_name}.key"\n')
        return f'[dns.zones."{self.zone}"]\ntsig_key_file = "{key_file}"\n'

    def reminder(self) -> str:
        return (f"{self.zone} is a dynamic zone: named rewrites its file. To edit it by hand:\n"
                f"  rndc freeze {self.zone}; edit {self.zone_file_path} (bump the serial); rndc thaw {self.zone}\n"
                f"Then check it: lecentral dns check {self.zone}\n")


def new_key(name: str) -> TsigKey:
    """A fresh hmac-sha512 key, like ``tsig-keygen -a hmac-sha512 NAME``."""
    return TsigKey(name, "hmac-sha512", base64.b64encode(secrets.token_bytes(64)).decode(), "generated")


def default_serial() -> int:
    """YYYYMMDD01, the convention most zone files follow."""
    return int(time.strftime("%Y%m%d", time.gmtime()) + "01")


@dataclass(frozen=True)
class OutputFile:
    """A file ``dns zone --out`` writes."""

    name: str
    text: str
    mode: int


def output_files(plan: SubZonePlan, out: Path) -> list[OutputFile]:
    """The files for ``--out DIR``, key first."""
    files = []
    if plan.new_key is not None:
        files.append(OutputFile(f"{plan.key_name}.key", plan.key_text(), 0o600))
    key_path = str((out / f"{plan.key_name}.key").resolve())
    files += [
        OutputFile(f"named.conf.{plan.zone}", plan.named_conf(), 0o644),
        OutputFile(f"db.{plan.zone}", plan.zone_file(), 0o644),
        OutputFile(f"parent.{plan.zone}.txt", plan.parent_records(), 0o644),
        OutputFile(f"lecentral.{plan.zone}.toml", plan.lecentral_config(key_path), 0o644),
    ]
    return files


def write_files(files: list[OutputFile], out: Path, *, force: bool) -> list[Path]:
    """Write every file atomically into ``out``; refuse (writing nothing) if one exists and not ``force``."""
    out.mkdir(parents=True, exist_ok=True)
    existing = [out / f.name for f in files if (out / f.name).exists()]
    if existing and not force:
        raise LecentralError(f"{', '.join(map(str, existing))} already exist(s); nothing written. "
                             f"Use another --out directory, or --force to replace them")
    written = []
    for f in files:
        replace_atomically(str(out / f.name), f.text.encode(), os.geteuid(), os.getegid(), f.mode)
        written.append(out / f.name)
    return written
