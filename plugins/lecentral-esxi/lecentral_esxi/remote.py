"""The :class:`~lecentral.interfaces.Installer` that puts rui.crt and rui.key on an ESXi host over SSH.

One install, seen from the management host (``workdir`` is the entry's private 0700 directory):

1. ``journal.json`` (state ``staging``) records the stamp, the SHA-256 of the new pair, which
   files existed and the certificate they replace (public; never the key).
2. One ssh run backs up the pair on the host (``rui.crt.lecentral-<stamp>``...), writes the new
   files beside it, checks their SHA-256, syncs, renames the key then the certificate into place
   and prunes old backups (:func:`lecentral_esxi.scripts.switch`). The journal moves to
   ``switched``.
3. ``persist`` (``/sbin/auto-backup.sh``) saves ESXi's configuration, so the pair survives a
   reboot (``/etc`` on ESXi is a RAM disk restored from the last saved state at boot).

A run killed in step 2 is finished or undone by the next run (:meth:`EsxiFiles.recover` runs
:func:`lecentral_esxi.scripts.finish`: the new pair if the key was already renamed, else the old
pair stays). A rollback (``restoring`` then ``restored``) copies the backups back and persists
again, and is just as repeatable.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lecentral.api import (
    CertEntry,
    CsrError,
    Installer,
    InstallError,
    IssuedCertificate,
    Journal,
    read_nofollow,
    replace_atomically,
)
from lecentral_esxi import scripts
from lecentral_esxi.scripts import CRT, KEY, PERSIST_FAILED, NewPair
from lecentral_esxi.ssh import RemoteScriptError, SshTarget

log = logging.getLogger(__name__)

#: the status a remote script exits with when it stopped on purpose, the pair intact
SCRIPT_FAILED = 70


@dataclass
class Probe:
    """What the host has: the kind (file, missing, link, other) and mode of each file, rui.crt's bytes.

    ``ours``: rui.crt was put there by this run (switched or restored), so it is what it is even
    if it is not for the entry's key.
    """

    kinds: dict[str, str]
    modes: dict[str, int | None]
    crt: bytes | None
    ours: bool = False


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _pem(data: bytes, what: str) -> bytes:
    try:
        data.decode("ascii")
    except UnicodeDecodeError:
        raise InstallError(f"{what} is not PEM text; ESXi reads PEM files") from None
    return data if data.endswith(b"\n") else data + b"\n"


class EsxiFiles(Installer):
    """rui.crt and rui.key in ``remote_dir`` on the host ``target`` (see the module doc)."""

    def __init__(self, entry: CertEntry, workdir: Path, keep: int, target: SshTarget, *,
                 remote_dir: str, persist: str, crt_chain: bool) -> None:
        self.entry = entry
        self.workdir = workdir
        self.keep = keep
        self.target = target
        self.remote_dir = remote_dir.rstrip("/") or "/"
        self.persist = persist
        self.crt_chain = crt_chain
        # the local file sets' journal: same file, format and safe writes
        self.journal = Journal(workdir, entry.name)
        self.journal_path = self.journal.path
        self._probe: Probe | None = None
        self._on_host: bytes | None = None  # rui.crt as this run last left it

    # -- names -------------------------------------------------------------------------------

    def remote(self, name: str) -> str:
        """``/etc/vmware/ssl/rui.crt``."""
        return f"{self.remote_dir}/{name}" if self.remote_dir != "/" else f"/{name}"

    def _what(self, doing: str) -> str:
        return f"{self.entry.label}: {doing} on {self.target.where}"

    def _run(self, body: str, doing: str) -> str:
        return self.target.run(body, what=self._what(doing), timeout=self.entry.command_timeout)

    # -- reading -----------------------------------------------------------------------------

    def _probe_host(self) -> Probe:
        out = self._run(scripts.probe(self.remote_dir), f"reading {self.remote(CRT)}")
        head, sep, crt = out.partition(scripts.PROBE_SEPARATOR + "\n")
        if not sep:
            raise InstallError(self._what("reading the certificate") + ": unexpected answer from "
                               "the host's shell (is /bin/sh a POSIX shell?)")
        kinds: dict[str, str] = {}
        modes: dict[str, int | None] = {}
        for line in head.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1] in (CRT, KEY):
                kinds[parts[1]] = parts[0]
                modes[parts[1]] = int(parts[2], 8) if len(parts) > 2 and parts[2].isdigit() else None
        for name in (CRT, KEY):
            kind = kinds.get(name, "missing")
            if kind in ("link", "other"):
                what = "a symbolic link" if kind == "link" else "not a regular file"
                raise InstallError(f"{self.target.where}:{self.remote(name)} is {what}; refusing to "
                                   "read or replace it (make it a plain file on the host)")
        crt_bytes = crt.encode() if kinds.get(CRT) == "file" else None
        self._probe = Probe(kinds, modes, crt_bytes)
        self._on_host = crt_bytes
        return self._probe

    def installed(self) -> bytes | None:
        """rui.crt on the host, read once per run; ``None`` also when it is not for the entry's key.

        An ESXi host starts with its own certificate (self-signed or from vCenter's VMCA), valid
        for years: by the seed's rule ("the installed one is newer") it would never be replaced.
        A certificate for another key than the one this entry pushes is not ours to keep, so it
        counts as no certificate and the first run installs the pair.
        """
        probe = self._probe or self._probe_host()
        if probe.crt is not None and not probe.ours and self._foreign(probe.crt):
            return None
        return probe.crt

    def _foreign(self, crt: bytes) -> bool:
        from lecentral.api import (
            Certificate,
            load_private_key_public,
            md5_modulus,
        )

        try:
            cert = Certificate.load(crt, f"{self.target.where}:{self.remote(CRT)}")
            if cert.md5_modulus == md5_modulus(load_private_key_public(Path(self.entry.key))):
                return False
        except CsrError:  # unreadable here or there: the engine's own checks report it
            return False
        from lecentral.api import when

        log.warning("%s: %s:%s is for another key than %s (%s, expires %s); it will be replaced",
                    self.entry.label, self.target.where, self.remote(CRT), self.entry.key,
                    ", ".join(cert.names) or "no names", when(cert.not_after))
        return True

    def missing(self) -> list[str]:
        probe = self._probe or self._probe_host()
        return [f"{self.target.where}:{self.remote(n)}" for n in (CRT, KEY)
                if probe.kinds.get(n, "missing") == "missing"]

    def stale(self, new: IssuedCertificate) -> list[str]:
        """rui.crt when its bytes are not what the new pair would hold (with ``crt_chain``: a
        new CA chain behind the same leaf)."""
        probe = self._probe or self._probe_host()
        crt = _pem(new.crt, "the certificate") + (_pem(new.ca, "the CA chain") if self.crt_chain else b"")
        if probe.crt is None or probe.crt == crt:
            return []
        return [f"{self.target.where}:{self.remote(CRT)}"]

    # -- the journal: the local file sets' own (one implementation of journal.json) ------------

    def _drop_journal(self) -> None:
        if self.journal_path.exists():
            self.journal.drop()

    def pending(self) -> str | None:
        journal = self.journal.read()
        return str(journal["state"]) if journal else None

    # -- planning ----------------------------------------------------------------------------

    def _key(self) -> bytes:
        """The host's private key from the management host; refused unless only its owner reads it."""
        path = self.entry.key
        data = read_nofollow(path)  # refuses a symlink
        if data is None:
            raise InstallError(f"private key {path} does not exist; nothing was sent")
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        if mode & 0o077:
            raise InstallError(f"private key {path} has mode {mode:04o}: it is {self.target.host}'s "
                               f"key and must be readable by its owner only (chmod 600 {path}); "
                               "nothing was sent")
        return _pem(data, f"private key {path}")

    def _pair(self, new: IssuedCertificate) -> NewPair:
        probe = self._probe or self._probe_host()
        crt = _pem(new.crt, "the certificate")
        if self.crt_chain:
            crt += _pem(new.ca, "the CA chain")
        key = self._key()
        crt_mode = probe.modes.get(CRT) if probe.kinds.get(CRT) == "file" else None
        key_mode = probe.modes.get(KEY) if probe.kinds.get(KEY) == "file" else None
        # the key stays readable by root only, whatever mode the old one had
        return NewPair(crt, key, _sha256(crt), _sha256(key), crt_mode or 0o644,
                       (key_mode or 0o600) & 0o600 or 0o600)

    def plan(self, new: IssuedCertificate) -> list[str]:
        pair = self._pair(new)
        probe = self._probe or self._probe_host()
        on = f"on {self.target.where}:"
        lines = [f"{on} back up {self.remote(n)} as {scripts.backup_name(n, '<time>')}"
                 for n in (CRT, KEY) if probe.kinds.get(n) == "file"]
        lines.append(f"{on} write {self.remote(CRT)} ({'leaf + CA chain' if self.crt_chain else 'leaf'}, "
                     f"mode {pair.crt_mode:04o})")
        lines.append(f"{on} write {self.remote(KEY)} (the private key {self.entry.key}, mode "
                     f"{pair.key_mode:04o})")
        if self.persist:
            lines.append(f"{on} persist the configuration: {self.persist}")
        lines.append(f"here: copy of the certificate on the host to {self.entry.cert}")
        return lines

    # -- installing --------------------------------------------------------------------------

    def install(self, new: IssuedCertificate) -> list[str]:
        if self.journal.read() is not None:
            raise InstallError(f"{self.journal_path} exists: an earlier run is unfinished; run again")
        pair = self._pair(new)
        probe = self._probe or self._probe_host()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)
        journal: dict[str, Any] = {
            "state": "staging", "host": self.target.where, "dir": self.remote_dir, "stamp": stamp,
            "crt_sha256": pair.crt_sha256, "key_sha256": pair.key_sha256,
            "existed": {n: probe.kinds.get(n) == "file" for n in (CRT, KEY)},
            "old_crt": probe.crt.decode() if probe.crt is not None else None}
        self.journal.save(journal)
        try:
            self._run(scripts.switch(self.remote_dir, stamp, pair, self.keep, self.persist),
                      f"putting the new pair in {self.remote_dir}")
        except RemoteScriptError as exc:
            if exc.status == SCRIPT_FAILED:
                self._drop_journal()
                raise InstallError(f"{exc}\nNothing was changed on the host (the previous pair is "
                                   "intact).") from None
            if exc.status == PERSIST_FAILED:
                self._switched(journal, pair.crt)
                self._put_back(str(exc))
            self._settle_or_raise(journal, exc)
            self._persist_or_put_back(journal, pair.crt)
        except InstallError as exc:  # the connection went away: how far did it get?
            self._settle_or_raise(journal, exc)
            self._persist_or_put_back(journal, pair.crt)
        self._switched(journal, pair.crt)
        return self._written()

    def _written(self) -> list[str]:
        return [f"{self.target.where}:{self.remote(CRT)}", f"{self.target.where}:{self.remote(KEY)}"]

    def _persist_or_put_back(self, journal: dict[str, Any], crt: bytes) -> None:
        self._switched(journal, crt)
        try:
            self._persist()
        except InstallError as exc:
            self._put_back(str(exc))

    def _put_back(self, failure: str) -> None:
        """The new pair is in place but could not be persisted: restore, then fail the install.

        What the host saved for its next boot is still the previous pair, so nothing to persist.
        """
        self._restore(persist="")
        self._drop_journal()
        raise InstallError(f"{failure}\nThe previous pair was put back on the host.") from None

    def _switched(self, journal: dict[str, Any], crt: bytes) -> None:
        journal["state"] = "switched"
        self.journal.save(journal)
        self._probe = Probe({CRT: "file", KEY: "file"}, {}, crt, ours=True)
        self._on_host = crt

    def _settle_or_raise(self, journal: dict[str, Any], failure: InstallError) -> None:
        """After a switch whose end we did not see: finish it, or confirm the old pair stayed."""
        try:
            state = self._settle(journal)
        except InstallError as exc:
            raise InstallError(f"{failure}\nThe state of {self.remote_dir} on the host is unknown "
                               f"({exc}); the next run finishes or undoes the switch.") from None
        if state != "switched":
            raise InstallError(f"{failure}\nNothing was changed on the host (the previous pair is "
                               "intact).")
        log.warning("%s: the connection failed but the new pair is in place", self.entry.label)

    def _settle(self, journal: dict[str, Any]) -> str:
        out = self._run(scripts.finish(journal["dir"], journal["stamp"], journal["crt_sha256"],
                                       journal["key_sha256"]), "finishing an interrupted switch")
        state = "switched" if out.strip().endswith("switched") else "abandoned"
        if state == "abandoned":
            self._drop_journal()
        else:
            journal["state"] = "switched"
            self.journal.save(journal)
        return state

    def _persist(self) -> None:
        if self.persist:
            self._run(self.persist, f"persisting the configuration ({self.persist})")

    # -- rolling back, recovering, finishing ---------------------------------------------------

    def restore(self) -> None:
        self._restore(persist=self.persist)

    def _restore(self, persist: str) -> None:
        journal = self.journal.read()
        if journal is None or journal["state"] not in ("switched", "restoring", "restored"):
            raise InstallError(f"{self.entry.name}: nothing to roll back (no switched pair in "
                               f"{self.journal_path})")
        journal["state"] = "restoring"
        self.journal.save(journal)
        stamp = journal["stamp"]
        try:
            self._run(scripts.restore(journal["dir"], stamp, journal["existed"], persist),
                      "putting the previous pair back")
        except InstallError as exc:
            raise InstallError(
                f"ROLLBACK FAILED: {exc}\nThe previous pair is on {self.target.where} as "
                f"{self.remote(scripts.backup_name(CRT, stamp))} and "
                f"{scripts.backup_name(KEY, stamp)}: copy them back (cp -p) and restart the "
                f"services ({self.entry.reload}); the next run tries again") from None
        journal["state"] = "restored"
        self.journal.save(journal)
        old = journal.get("old_crt")
        self._probe = Probe({CRT: "file" if old else "missing"}, {}, old.encode() if old else None,
                            ours=True)
        self._on_host = self._probe.crt

    def recover(self) -> str | None:
        journal = self.journal.read()
        if journal is None:
            return None
        state = journal["state"]
        if journal.get("host") != self.target.where or journal.get("dir") != self.remote_dir:
            raise InstallError(f"{self.journal_path} is about {journal.get('dir')} on "
                               f"{journal.get('host')}, but the entry now points at "
                               f"{self.remote_dir} on {self.target.where}: put the old settings "
                               "back for one run, or check that host by hand and delete the journal")
        log.warning("%s: finishing an interrupted run on %s (journal state %s)", self.entry.label,
                    self.target.where, state)
        if state == "staging":
            if self._settle(journal) != "switched":
                return None
            state = "switched"
        if state == "switched":
            self._persist()
            return "switched"
        if state == "restoring":
            self.restore()
            return "restored"
        if state == "restored":
            return "restored"
        raise InstallError(f"journal {self.journal_path} has unknown state {state!r}; check "
                           f"{self.remote_dir} on {self.target.where} by hand, then delete it")

    def commit(self) -> None:
        self._drop_journal()
        self._keep_local_copy()

    def _keep_local_copy(self) -> None:
        """Write ``cert``: what rui.crt on the host now holds, for the records (best effort)."""
        try:
            data = self._on_host if self._on_host is not None else self.installed()
            if data is not None:
                replace_atomically(self.entry.cert, data, os.geteuid(), os.getegid(), 0o644)
        except (OSError, InstallError) as exc:
            log.warning("%s: could not keep a copy of the host's certificate in %s: %s",
                        self.entry.label, self.entry.cert, getattr(exc, "strerror", None) or exc)
