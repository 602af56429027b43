"""A real BIND (named) authoritative for a parent zone and one updatable sub-zone per name.

Laid out like the seed's named.conf: every certificate name ``NAME`` is its own zone, delegated
from the parent with NS records, updatable only at ``_acme-challenge.NAME TXT`` with a TSIG
hmac-sha512 key::

    zone "NAME" { type master; allow-query { any; }; file "...";
                  update-policy { grant KEY name _acme-challenge.NAME TXT; }; };

Everything listens on 127.0.0.1 on a dynamic port (UDP+TCP), with an rndc control channel on
another. With ``secondary=True`` a second named (on 127.0.0.1 too, at ``secondary_port``) is a
secondary of every zone, and every NS set lists both (``ns1``/``ns2`` of the parent, both A
127.0.0.1: named only listens on addresses configured on an interface, and the loopback interface
only has 127.0.0.1, so the two servers differ by port; :attr:`BindServer.servers` lists both).
:meth:`BindServer.hold_secondary` makes the secondary lag (stale answers) until
:meth:`BindServer.release_secondary`.

Example::

    with BindServer(tmp_path, subzones=["www.example.test"]) as bind:
        bind.add_subzone("ldap.example.test", key_name="ldap-key")
        keyring = bind.keyring("acme-update")   # for dns.update.UpdateMessage
        bind.freeze("www.example.test"); bind.thaw("www.example.test")
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from lecentral_testing.named_conf import (
    DEFAULT_KEY_NAME,
    TSIG_ALGORITHM,
    SubZone,
    dns_name,
    key_clause,
    new_tsig_secret,
    parent_file,
    primary_conf,
    rndc_conf,
    secondary_conf,
    subzone_file,
    tsig_secret,
    write_private,
)
from lecentral_testing.ports import LOOPBACK, free_port
from lecentral_testing.process import (
    Daemon,
    ManagedServer,
    ServerStartError,
    find_executable,
    run_tool,
    start_retrying_ports,
)

#: the text named reads lives in named_conf; these names stay importable from here
__all__ = ["DEFAULT_KEY_NAME", "TSIG_ALGORITHM", "BindServer", "SubZone", "new_tsig_secret"]


class BindServer(ManagedServer):
    """named authoritative for ``parent`` and one sub-zone per name, on 127.0.0.1:<port>.

    ``subzones``: names to create with the defaults of :meth:`add_subzone`. ``keys``: preset
    TSIG secrets by key name (others are generated). ``parent_records``: extra zone-file lines for
    the parent. ``soa_minimum``: default negative-caching TTL of the sub-zones. ``secondary``: also
    run a secondary named on 127.0.0.1 at ``secondary_port``.
    """

    kind = "bind"
    address = LOOPBACK

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        parent: str = "example.test",
        subzones: Iterable[str] = (),
        keys: Mapping[str, str] | None = None,
        parent_records: Sequence[str] = (),
        soa_minimum: int = 60,
        secondary: bool = False,
    ) -> None:
        # Executables and arguments first: a bad one must fail before any temp dir exists.
        self._named = find_executable("named", package="bind9")
        self._rndc = find_executable("rndc", package="bind9-utils")
        self._keys = {dns_name(n, "TSIG key name"): tsig_secret(v) for n, v in (keys or {}).items()}
        self.parent = dns_name(parent, "parent zone")
        super().__init__(workdir)
        self.parent_records = tuple(parent_records)
        self.default_soa_minimum = soa_minimum
        self.has_secondary = secondary
        self.subzones: dict[str, SubZone] = {}
        self._rndc_secret = base64.b64encode(secrets.token_bytes(32)).decode()
        self._parent_serial = 0
        self._held = False
        self._held_port = 0
        self.port = 0
        self.secondary_port = 0
        self.rndc_port = 0
        self.secondary_rndc_port = 0
        # named runs as the invoking user (root is fine for it), so no ownership games here.
        self.dir = self.state_dir("bind", None, max_len=4096)
        self.secondary_dir = self.workdir / "bind-secondary"
        if secondary:
            self.state_dir("bind-secondary", None, max_len=4096)
        (self.dir / "keys").mkdir(exist_ok=True)
        self._primary: Daemon | None = None
        self._secondary: Daemon | None = None
        for name in subzones:
            self.add_subzone(name)

    # ----------------------------------------------------------------- keys

    @property
    def tsig_keys(self) -> dict[str, str]:
        """TSIG key name -> base64 secret, for every key named.conf knows."""
        return dict(self._keys)

    def add_key(self, key_name: str, secret: str | None = None) -> str:
        """Define TSIG key ``key_name`` (random secret unless given); returns the secret.

        Loaded at once on a running server. Use it for a key that no zone grants anything to.
        An existing key keeps its secret.
        """
        key_name = dns_name(key_name, "TSIG key name")
        self._keys.setdefault(key_name, tsig_secret(secret) if secret else new_tsig_secret())
        if self.running:
            self._reconfigure()
        return self._keys[key_name]

    def key_file(self, key_name: str) -> Path:
        """Path of a BIND key-file for ``key_name`` (tsig-keygen format, mode 0600)."""
        if key_name not in self._keys:
            raise KeyError(f"no TSIG key named {key_name!r}; known keys: {', '.join(sorted(self._keys))}")
        path = self.dir / "keys" / f"{key_name}.key"
        write_private(path, key_clause(key_name, self._keys[key_name]))
        return path

    def keyring(self, key_name: str = DEFAULT_KEY_NAME) -> dict[Any, Any]:
        """A dnspython keyring holding ``key_name``, for ``dns.update.UpdateMessage(keyring=...)``."""
        import dns.tsigkeyring

        return dict(dns.tsigkeyring.from_text({key_name: (TSIG_ALGORITHM, self._keys[key_name])}))

    # ------------------------------------------------------------- sub-zones

    def add_subzone(
        self,
        name: str,
        *,
        key_name: str = DEFAULT_KEY_NAME,
        grant_names: Sequence[str] | None = None,
        grant_match: str = "name",
        soa_minimum: int | None = None,
        ttl: int = 60,
        records: Sequence[str] = (),
    ) -> SubZone:
        """Add the updatable zone ``name`` (delegated from the parent when it lies below it).

        ``key_name`` may update TXT at ``grant_names`` (default ``_acme-challenge.NAME``; pass
        another zone's name to build a zone the key cannot really update). ``grant_match`` is the
        update-policy rule type ("name", "subdomain"). ``soa_minimum`` is the negative TTL;
        ``ttl`` the zone's $TTL. ``records`` are extra zone-file lines relative to the zone, e.g.
        ``"_acme-challenge CNAME www.acme-delegate.example.test."``. On a running server the zone
        is loaded at once (rndc reconfig) and the call returns once it is served.
        """
        name = dns_name(name, "zone")
        if name in self.subzones or name == self.parent:
            raise ValueError(f"zone {name} already exists on this BindServer")
        zone = SubZone(
            name=name,
            key_name=dns_name(key_name, "TSIG key name"),
            grant_names=tuple(dns_name(n, "grant name") for n in (grant_names or [f"_acme-challenge.{name}"])),
            grant_match=grant_match,
            soa_minimum=self.default_soa_minimum if soa_minimum is None else soa_minimum,
            ttl=ttl,
            records=tuple(records),
        )
        if grant_match not in ("name", "subdomain", "wildcard"):
            raise ValueError(f"grant_match {grant_match!r}: use 'name', 'subdomain' or 'wildcard'")
        self._keys.setdefault(zone.key_name, new_tsig_secret())
        self.subzones[name] = zone
        # Written once only: afterwards named owns the file and its journal (dynamic zone).
        self._write_subzone_file(zone)
        if self.running:
            self._reconfigure()
        return zone

    def zone_file(self, zone: str) -> Path:
        """Path of the primary's file for ``zone`` (edit it only between freeze and thaw)."""
        return self.dir / f"{dns_name(zone, 'zone')}.db"

    @property
    def nameservers(self) -> list[str]:
        """Host names in the NS records of every zone (``ns1.PARENT``, plus ``ns2.PARENT``)."""
        return [f"ns{i}.{self.parent}" for i in range(1, 3 if self.has_secondary else 2)]

    @property
    def servers(self) -> list[tuple[str, int]]:
        """(address, port) of every authoritative server: the primary, then the secondary."""
        servers = [(LOOPBACK, self.port)]
        if self.has_secondary:
            servers.append((LOOPBACK, self.secondary_port))
        return servers

    def _write_subzone_file(self, zone: SubZone) -> None:
        text = subzone_file(zone, self.parent, self.nameservers)
        self.zone_file(zone.name).write_text(text)

    def _write_parent_file(self) -> None:
        self._parent_serial += 1
        text = parent_file(self.parent, self._parent_serial, self.nameservers, self.subzones,
                           self.parent_records)
        self.zone_file(self.parent).write_text(text)

    # ------------------------------------------------------------ named.conf

    def _write_confs(self) -> None:
        # while held, no also-notify to the secondary
        notify_port = self.secondary_port if self.has_secondary and not self._held else None
        write_private(self.dir / "named.conf", primary_conf(
            self.dir, self.port, self.rndc_port, self._rndc_secret, self._keys, self.parent,
            self.subzones.values(), secondary=self.has_secondary, notify_port=notify_port))
        write_private(self.dir / "rndc.conf", rndc_conf(self._rndc_secret))
        if self.has_secondary:
            # held: the primary is looked for where nothing answers (see secondary_conf)
            primary_port = self._held_port if self._held else self.port
            write_private(self.secondary_dir / "named.conf", secondary_conf(
                self.secondary_dir, self.secondary_port, self.secondary_rndc_port,
                self._rndc_secret, [self.parent, *self.subzones], primary_port))

    # -------------------------------------------------------------- lifecycle

    @property
    def running(self) -> bool:
        """True while the primary named runs."""
        return self._primary is not None and self._primary.running

    @property
    def pid(self) -> int | None:
        """pid of the primary named."""
        return self._primary.pid if self._primary is not None else None

    @property
    def secondary_pid(self) -> int | None:
        """pid of the secondary named, if one was started."""
        return self._secondary.pid if self._secondary is not None else None

    def start(self) -> Self:
        """Start named (and the secondary); returns once every zone is served."""
        if self.running:
            return self
        first_start = self.port == 0

        def attempt() -> None:
            if first_start:
                self.port = free_port(udp=True)
                self.rndc_port = free_port()
                if self.has_secondary:
                    self.secondary_port = free_port(udp=True)
                    self.secondary_rndc_port = free_port()
            if not self.zone_file(self.parent).exists():
                self._write_parent_file()
            self._write_confs()
            self._primary = self._daemon("named", self.dir)
            self._primary.start(self._serving_probe(secondary=False), timeout=20)

        start_retrying_ports(attempt, attempts=3 if first_start else 1)
        if self.has_secondary:
            self.start_secondary()
        return self

    def _daemon(self, name: str, directory: Path) -> Daemon:
        # -g: foreground, log to stderr; -4: the world is IPv4 loopback; -n 1: one worker is plenty.
        argv = [self._named, "-g", "-4", "-n", "1", "-c", str(directory / "named.conf")]
        return Daemon(name, argv, log_path=self.workdir / f"{name}.log", cwd=directory)

    def start_secondary(self) -> None:
        """(Re)start the secondary named; returns once it serves every zone at the primary's serial.

        It starts empty and transfers every zone, so a restarted secondary is in sync (even when
        held): use :meth:`hold_secondary` for a secondary that lags, :meth:`stop_secondary` for one
        that does not answer.
        """
        if not self.has_secondary:
            raise ServerStartError("this BindServer was created without secondary=True")
        if self._secondary is not None and self._secondary.running:
            return
        # Old copies would only be refreshed hours later (SOA refresh); a fresh transfer is instant.
        for copy in [*self.secondary_dir.glob("*.db"), *self.secondary_dir.glob("*.jnl")]:
            copy.unlink()
        self._write_confs()
        self._secondary = self._daemon("named-secondary", self.secondary_dir)
        self._secondary.start(self._serving_probe(secondary=True), timeout=20)

    def stop_secondary(self) -> None:
        """Stop the secondary named (queries to it then time out, like a dead nameserver)."""
        if self._secondary is not None:
            self._secondary.stop()

    def stop(self) -> None:
        """Stop both nameservers by pid. Zone files and journals stay for the next start."""
        self.stop_secondary()
        if self._primary is not None:
            self._primary.stop()

    # ------------------------------------------------------------- queries

    def query(
        self, qname: str, rdtype: str = "TXT", *, secondary: bool = False, tcp: bool = False, timeout: float = 2.0
    ) -> Any:
        """Ask one of our nameservers directly (UDP, or TCP); returns the ``dns.message.Message``."""
        import dns.message
        import dns.query

        port = self.secondary_port if secondary else self.port
        send = dns.query.tcp if tcp else dns.query.udp
        return send(dns.message.make_query(qname, rdtype), LOOPBACK, port=port, timeout=timeout)

    def txt_values(self, qname: str, *, secondary: bool = False) -> list[str]:
        """TXT strings served at ``qname`` (empty if none), each rdata's strings joined."""
        import dns.rdatatype

        answer = self.query(qname, "TXT", secondary=secondary).answer
        return sorted(
            b"".join(rd.strings).decode() for rrset in answer if rrset.rdtype == dns.rdatatype.TXT for rd in rrset
        )

    def serial(self, zone: str, *, secondary: bool = False) -> int | None:
        """SOA serial ``zone`` has on the primary (or secondary); None if not served there."""
        # TCP: a server not listening yet refuses at once, where UDP would wait for the timeout.
        response = self.query(zone, "SOA", secondary=secondary, tcp=True, timeout=1.0)
        for rrset in response.answer:
            for rdata in rrset:
                return int(rdata.serial)
        return None

    def _serving_probe(self, *, secondary: bool) -> Callable[[], bool]:
        pending = {self.parent, *self.subzones}

        def probe() -> bool:
            for zone in sorted(pending):
                if secondary:
                    want = self.serial(zone)
                else:
                    want = self._parent_serial if zone == self.parent else 1
                got = self.serial(zone, secondary=secondary)
                if got is None or want is None or got < want:
                    return False
                pending.discard(zone)
            return True

        return probe

    def wait_until_served(self, *, secondary: bool = False, timeout: float = 10.0) -> None:
        """Block until every zone is served (on the secondary: at the primary's serial)."""
        import time

        import dns.exception

        probe = self._serving_probe(secondary=secondary)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if probe():
                    return
            except (OSError, dns.exception.DNSException):  # a refused or lost query: not yet
                pass
            if time.monotonic() > deadline:
                where = "secondary" if secondary else "primary"
                raise ServerStartError(f"zones not all served by the {where} named within {timeout:.0f}s; see {self.workdir}")
            time.sleep(0.02)

    # ---------------------------------------------------------------- rndc

    def rndc(self, *args: str, secondary: bool = False) -> str:
        """Run ``rndc ARGS`` against the primary (or the secondary) and return its output."""
        port = self.secondary_rndc_port if secondary else self.rndc_port
        argv = [self._rndc, "-c", str(self.dir / "rndc.conf"), "-s", LOOPBACK, "-p", str(port), *args]
        return run_tool(argv, what=f"rndc {' '.join(args)}", log_path=self.workdir / "rndc.log", timeout=30)

    def freeze(self, zone: str, timeout: float = 10.0) -> None:
        """``rndc freeze ZONE``: journal merged into the file, dynamic updates refused until thaw.

        Returns once the file holds the served serial: named writes it after rndc returns.
        """
        import time

        import dns.exception
        import dns.zone

        zone = dns_name(zone, "zone")
        served = self.serial(zone) or 0
        self.rndc("freeze", zone)
        deadline = time.monotonic() + timeout
        while True:
            try:
                soa = dns.zone.from_file(str(self.zone_file(zone)), origin=zone, relativize=False).get_soa()
                if soa.serial >= served:
                    return
            except (OSError, dns.exception.DNSException):  # renamed into place as we read: again
                pass
            if time.monotonic() > deadline:
                raise ServerStartError(f"rndc freeze {zone}: {self.zone_file(zone)} not written within {timeout:.0f}s")
            time.sleep(0.02)

    def thaw(self, zone: str) -> None:
        """``rndc thaw ZONE``: reload the (maybe hand-edited) file, accept updates again."""
        self.rndc("thaw", dns_name(zone, "zone"))

    def reload(self) -> None:
        """Rewrite the parent zone and named.conf, reload them, and wait until all is served."""
        self._reconfigure()

    def _reconfigure(self) -> None:
        self._write_parent_file()
        self._write_confs()
        self.rndc("reconfig")
        self.rndc("reload", self.parent)
        self.wait_until_served()
        if self.has_secondary and not self._held and self._secondary is not None and self._secondary.running:
            self.rndc("reconfig", secondary=True)
            self.wait_until_served(secondary=True)

    # ------------------------------------------------------- secondary lag

    def hold_secondary(self) -> None:
        """Stop NOTIFYing the secondary: it keeps serving the old data (a lagging nameserver)."""
        self._held = True
        self._held_port = free_port(udp=True)
        self._write_confs()
        self.rndc("reconfig")
        if self._secondary is not None and self._secondary.running:
            self.rndc("reconfig", secondary=True)

    def release_secondary(self, timeout: float = 10.0) -> None:
        """Resume NOTIFY and make the secondary catch up now; returns once it is in sync."""
        self._held = False
        self._write_confs()
        self.rndc("reconfig")
        if self._secondary is not None and self._secondary.running:
            self.rndc("reconfig", secondary=True)
            for zone in [self.parent, *self.subzones]:
                self.rndc("refresh", zone, secondary=True)
            self.wait_until_served(secondary=True, timeout=timeout)
