"""The small abstract classes a plugin implements; the engine only ever calls these methods."""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lecentral.errors import LecentralError, StoreError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from lecentral.certificates import Csr
    from lecentral.config import DatabaseConfig, RenewConfig
    from lecentral.leftovers import Leftover
    from lecentral.records import CertEntry, Notification
    from lecentral.store.rows import (
        AriSweep,
        AriWindowRow,
        CertRow,
        EventRow,
        FreshRow,
        ListedRow,
        LockHolder,
        Swept,
        SweptRow,
    )


@dataclass(frozen=True)
class IssuedCertificate:
    """What an issuer hands back: the leaf and the CA chain above it, both PEM."""

    crt: bytes
    ca: bytes


@dataclass(frozen=True)
class IssuedSave:
    """One issued certificate to store (:meth:`Store.save_issued_many`): the arguments of
    :meth:`Store.save_issued`."""

    name: str
    crt: bytes
    ca: bytes
    ts_expire: int
    now: int
    issuer_ca: tuple[str, str] | None = None


class Issuer(ABC):
    """Gets a CSR signed by an ACME CA, proving control of every name in it."""

    #: True if this issuer's certificates may be shared out to the worker processes that
    #: ``[renew] processes`` forks (each with its own copy of the issuer): nothing it does for
    #: one certificate has to be coordinated with another one's beyond its own object (turns
    #: on a webroot, state directories, counters on disk). False (the default): all its
    #: certificates are issued in the first process, whose threads share one issuer.
    processes_safe: bool = False

    @abstractmethod
    def issue(self, row: CertRow, csr: Csr) -> IssuedCertificate:
        """Order a certificate for ``csr`` (already validated) and return it.

        Raise :class:`lecentral.errors.IssueError` with a message a sysadmin can act on. Must clean
        up whatever it published (TXT records, webroot tokens) whatever happens.
        """

    def begin_pass(self) -> None:
        """A renew pass starts: forget per-pass state (e.g. which DNS zones were already checked)."""

    def close(self) -> None:
        """Release sessions and connections; called once at the end of a renew run."""


class Store(ABC):
    """The certificate database: the seed's ``certs`` table plus lecentral's own tables."""

    @abstractmethod
    def init_schema(self) -> list[str]:
        """Create missing tables (never touching an existing ``certs``); return the names created."""

    @abstractmethod
    def check_schema(self) -> None:
        """Raise StoreError, saying to run ``lecentral init``, if a table is missing."""

    @property
    def location(self) -> str:
        """Where this store is, for messages (a database URL with its password masked)."""
        return "the database"

    def configure(self, settings: DatabaseConfig) -> None:
        """Take the ``[database]`` table's settings beyond ``url`` (``retry_for``, ...), once,
        right after the factory built the store. The default ignores them (a store with no
        server to be crowded or restarting has no use for retries)."""

    @abstractmethod
    def get(self, name: str) -> CertRow | None:
        """The row for ``name``, validated, or ``None``."""

    def get_many(self, names: Sequence[str]) -> dict[str, CertRow | None]:
        """:meth:`get` of each of ``names``, by name. A store that can should read them in one
        go (an agent's entries: one transaction, not one each); this default asks one by one."""
        return {name: self.get(name) for name in names}

    @abstractmethod
    def list(self) -> list[CertRow]:
        """Every row, validated, sorted by name."""

    @abstractmethod
    def add(self, row: CertRow) -> None:
        """Insert a new row; :class:`StoreError` if the name exists."""

    @abstractmethod
    def set_csr(self, name: str, csr: bytes, md5_modulus: str, now: int = 0) -> None:
        """Replace the CSR and its md5_modulus, with a ``csr`` event at ``now`` (0: the clock)."""

    @abstractmethod
    def set_enable(self, name: str, enable: bool, now: int = 0) -> bool:
        """Flip the ``enable`` column, with an ``enable`` event; False (nothing written, no
        event) if it already was so."""

    @abstractmethod
    def remove(self, name: str, now: int = 0) -> None:
        """Delete the row (its event history stays), with a ``removed`` event."""

    @abstractmethod
    def save_issued(self, name: str, crt: bytes, ca: bytes, ts_expire: int, now: int,
                    issuer_ca: tuple[str, str] | None = None) -> None:
        """Store a new certificate in one transaction: old_crt takes crt (old_ca takes ca only
        when the CA changed), md5_ca, ts_expire, ts_last_update set, count_fail_update 0, and an
        ``issued`` event. CsrError, nothing written, if the row's ``md5_modulus`` no longer
        matches the certificate's key (its CSR was replaced meanwhile). ``issuer_ca``: (the
        ``[[acme.ca]]`` name, its directory URL) of the CA that issued it, recorded with it and
        named in the event."""

    def save_issued_many(self, saves: builtins.list[IssuedSave]
                         ) -> builtins.list[LecentralError | None]:
        """Store several new certificates, each as :meth:`save_issued` does; per certificate
        None when saved, else the error that stopped it (the others still saved). A store that
        can should commit them together (the renew workers' saves, one commit instead of one
        each); this default saves them one by one."""
        results: builtins.list[LecentralError | None] = []
        for save in saves:
            try:
                self.save_issued(save.name, save.crt, save.ca, save.ts_expire, save.now,
                                 issuer_ca=save.issuer_ca)
                results.append(None)
            except LecentralError as exc:
                results.append(exc)
        return results

    @abstractmethod
    def record_failure(self, name: str, error: str, now: int) -> int:
        """count_fail_update + 1, ts_last_update = now, and a ``failed`` event; return the new count."""

    @abstractmethod
    def record_event(self, name: str, kind: str, message: str, now: int, host: str = "") -> None:
        """Append to the event log without touching ``certs``; ``host``: who tells (default this
        host's name; an agent gives its ``[agent] host``)."""

    def record_events(self, records: Sequence[tuple[str, str, str, int]]) -> None:
        """:meth:`record_event` of each (name, kind, message, now), this host telling. A store
        that can should write them together (a host gone silent: a change per certificate
        deployed there); this default writes them one by one."""
        for name, kind, message, now in records:
            self.record_event(name, kind, message, now)

    @abstractmethod
    def events(self, name: str | None = None, limit: int = 50) -> builtins.list[EventRow]:
        """The newest events first, for one name or all."""

    @abstractmethod
    def add_leftover(self, leftover: Leftover, now: int) -> Leftover:
        """Store a challenge record left behind, with a ``leftover`` event; return it with its id."""

    @abstractmethod
    def leftovers(self) -> builtins.list[Leftover]:
        """Every stored leftover, oldest first."""

    @abstractmethod
    def leftover_removed(self, leftover: Leftover, now: int) -> None:
        """Forget a leftover that is gone now, with a ``cleaned`` event."""

    @abstractmethod
    def leftover_still_there(self, leftover: Leftover, error: str, now: int) -> Leftover:
        """Count one more failed removal (attempts, error, a ``leftover`` event); return it."""

    @abstractmethod
    def renew_lock(self, timeout: float = 0, lease: float = 60) -> AbstractContextManager[bool]:
        """A lock held across hosts for one pass of a renew run; yields False if not acquired.
        ``lease``: where the lock is a lease (a Galera cluster), how long it lasts unrenewed."""

    def renew_lock_holder(self) -> LockHolder | None:
        """Who holds the renew lock, as recorded by its holder (None: not recorded or unknown)."""
        return None

    def renew_lock_check(self) -> None:
        """Raise a StoreError if this store held the renew lock and lost it (a lease that ran
        out or was taken over): the run must stop ordering and saving."""

    def profiles(self) -> dict[str, str]:
        """Certificate name (lower case) -> the ACME profile set for it with ``lecentral set
        --profile``, as stored (the caller validates it); a store without settings has none."""
        return {}

    def set_profile(self, name: str, profile: str | None, now: int = 0) -> None:
        """Set (None: clear) the ACME profile of ``name``, with a ``settings`` event."""
        raise StoreError(f"{self.location}: this store keeps no per-certificate settings")

    def issuing_cas(self) -> dict[str, tuple[str, str]]:
        """Certificate name (lower case) -> (the ``[[acme.ca]]`` name, its directory URL) of the
        CA that issued the stored certificate, as stored (the caller validates it); none known
        for certificates issued before lecentral recorded it, or by a store without settings."""
        return {}

    def listing(self, now: int) -> Iterator[FreshRow | ListedRow]:
        """Every row for ``lecentral list``: rows known good and unchanged since the last sweep
        as :class:`FreshRow` (no blobs), ideally in list's order at ``now`` (the caller checks
        the order and copes with any), then the others as :class:`ListedRow`; a store without
        such a record gives every row of :meth:`list` as a ListedRow."""
        from lecentral.store.rows import ListedRow

        profiles, cas = self.profiles(), self.issuing_cas()
        for row in self.list():
            key = row.name.strip().lower().rstrip(".")
            yield ListedRow(row, profiles.get(key), cas.get(key))

    def sweep(self, renew: RenewConfig, now: int, ari: AriSweep | None = None) -> Swept | None:
        """The rows a renew sweep (no names, not forced) must read, and how many enabled rows
        are unchanged since checked and not in their renewal window (see
        lecentral/store/facts.py); with ``ari``, a row of a CA offering renewal information
        also needs a fresh cached window whose due time has not come. None: this store cannot
        tell, the sweep reads :meth:`list`."""
        return None

    def ari_windows(self, names: builtins.list[str]) -> dict[str, AriWindowRow]:
        """The cached ARI windows of ``names`` (a certificate's name -> its row as stored); a
        store that keeps none has none (every window is asked of the CA)."""
        return {}

    def ari_failing(self, began_before: int, asked_after: int) -> tuple[int, int | None]:
        """(how many, since when the first) enabled certificates whose renewal-information
        requests have failed since before ``began_before`` and still failed at a request after
        ``asked_after`` (``lecentral check``: ``ari-failing``); a store that keeps no ARI
        windows knows of none."""
        return 0, None

    def save_ari_windows(self, windows: builtins.list[AriWindowRow]) -> None:
        """Replace the cached ARI windows of these names (a cache: a store may keep none). A
        row whose window is 0 to 0 is a failed request's back-off (lecentral/renew/ari.py)."""

    def record_facts(self, swept: builtins.list[SweptRow]) -> None:
        """Remember what the swept rows' stored values say, for the next sweep (a cache: a store
        that keeps none reads every row each time)."""

    def close(self) -> None:
        """Dispose of connections. The store stays usable: a later call connects again."""


class Verifier(ABC):
    """Connects to a running service and reports the leaf certificate it presents."""

    @abstractmethod
    def presented_certificate(self, url: str, timeout: float) -> bytes:
        """DER of the leaf the service at ``url`` presents; raise :class:`VerifyError` if unreachable."""

    def check_url(self, url: str) -> None:
        """Validate ``url`` when the configuration is loaded; raise :class:`ConfigError` saying what
        is wrong (e.g. with ``parse_verify_url(url, your_schemes)``). The default accepts any."""


class Installer(ABC):
    """Puts a certificate set where a daemon reads it, and can put the previous set back.

    The agent's own implementation (:class:`lecentral.install.fileset.LocalFiles`) writes local
    files atomically, with backups and a journal that the next run uses to repair a crash. A
    service whose daemon reads its certificate elsewhere (an ESXi host over SSH, an appliance's
    API) returns its own from :meth:`Service.installer`; the engine calls the same methods, in the
    same order, and keeps the compare, pre-checks, activation, verification and rollback.
    """

    @abstractmethod
    def installed(self) -> bytes | None:
        """The leaf certificate (PEM or DER) in place now, or ``None`` when nothing is installed.

        Raise :class:`InstallError` when what is there cannot be trusted (a symlink, unreadable).
        """

    def missing(self) -> list[str]:
        """Configured files that do not exist (the next install writes the whole set again)."""
        return []

    def pending(self) -> str | None:
        """What a killed run left behind, without changing anything (for ``--dry-run``, status)."""
        return None

    def stale(self, new: IssuedCertificate) -> list[str]:
        """Files of the set (besides the leaf) whose content is not what installing ``new`` would
        write: the CA chain after a CA change. Asked only when ``new``'s leaf is the installed one;
        any path listed makes the engine install the set again. Changes nothing."""
        return []

    def stage_key(self, path: str) -> bool:
        """Switch the entry's private key to the key at ``path`` in the next :meth:`install`, in
        the same all-or-nothing switch as the certificate (a staged rotation, ``KEY.next``).

        Return False when this installer cannot: the engine then refuses the certificate and
        names the manual step. Changes nothing by itself.
        """
        return False

    def recover(self) -> str | None:
        """Finish what a killed run left behind; called before anything else for each entry.

        Return ``None`` (nothing was pending), ``"switched"`` (the new set is now fully in place
        but the daemon was never activated: the engine activates and verifies it) or
        ``"restored"`` (the previous set is back: the engine activates it and alerts).
        """
        return None

    @abstractmethod
    def plan(self, new: IssuedCertificate) -> list[str]:
        """What :meth:`install` would do, one line per file, for ``--dry-run``. Changes nothing."""

    @abstractmethod
    def install(self, new: IssuedCertificate) -> list[str]:
        """Back up the current set, then put the new one in place, all or nothing.

        Return the paths (or remote names) written. On failure raise :class:`InstallError`
        after putting the previous set back, so that nothing is half-written.
        """

    @abstractmethod
    def restore(self) -> None:
        """Put back the set the last :meth:`install` replaced (rollback); raise InstallError if impossible."""

    def commit(self) -> None:
        """The new set is served: drop the rollback state (backups stay, per ``--keep``)."""


class Service(ABC):
    """How one kind of daemon takes a new certificate: config test, activation, verification.

    The engine calls, in this order, for each certificate to install: :meth:`installer` (who
    writes the files), the installer's ``install``, :meth:`check_config`, :meth:`activate`,
    then the verifiers on :meth:`verify_urls`. If ``check_config``, ``activate`` or the
    verification fails, the engine restores the previous files, calls ``activate`` again and
    verifies that the previous certificate is served. Most services need no code:
    :class:`lecentral.install.service.CommandService` runs the entry's ``check`` and ``reload``
    commands, and a plugin only sets their defaults in its :class:`~lecentral.types.ServiceType`.
    """

    def check_entry(self, entry: CertEntry) -> None:
        """Validate a ``[[cert]]`` entry when the configuration is loaded, after its ``options``
        (typed by the service's ``options_model``) passed their own checks.

        Raise :class:`~lecentral.errors.EntryError` (``EntryError("options.port", "...")``): the
        agent prefixes the file and the entry (``FILE: cert[2].options.port: ...``). Only this
        entry fails; the other entries keep working.
        """

    def installer(self, entry: CertEntry, workdir: Path, keep: int) -> Installer | None:
        """Return an :class:`Installer` to take over writing the files, or ``None`` for local files.

        ``workdir`` is a private directory (0700) for this entry's journal and backups; ``keep``
        is how many backup generations to keep.
        """
        return None

    def check_config(self, entry: CertEntry) -> None:
        """Test the daemon's configuration with the new files in place, before anything is reloaded.

        Raise :class:`InstallError` if the daemon would not start; nothing has been restarted yet.
        """

    @abstractmethod
    def activate(self, entry: CertEntry) -> None:
        """Make the daemon use the files now in place (reload, restart...); raise InstallError on failure.

        Called again after a rollback, so it must work for the previous files too.
        """

    def verify_urls(self, entry: CertEntry) -> list[str]:
        """The URLs where the daemon presents the certificate (``tls://127.0.0.1:443``...)."""
        return list(entry.verify)


class Notifier(ABC):
    """Delivers a notification to a human or a log."""

    @abstractmethod
    def send(self, notification: Notification) -> None:
        """Deliver it; raise on failure (the caller logs and carries on with the other notifiers)."""
