"""Debian's OpenLDAP slapd with a cn=config directory of its own, on 127.0.0.1.

cn=config (``slapd.d``) is made once with ``slapadd -n0`` from an LDIF modelled on Debian's own
``slapd.init.ldif``, as Debian's postinst does; from then on cn=config is the truth, so changes a test or a
plugin makes through ``ldapi://`` (as root, SASL EXTERNAL, the way Debian admins do) survive
restarts. Listeners: ``ldap`` (StartTLS), ``ldaps`` (TLS from the first byte), and a unix socket
(:attr:`SlapdServer.ldapi_url`). One mdb database holds ``suffix`` (empty, rootdn without password).

slapd takes new certificate files on a restart (:meth:`SlapdServer.restart`) or when the olcTLS*
attributes of cn=config are modified; :meth:`SlapdServer.reload` does the latter (an ``ldapmodify``
replacing them with the same paths). With ``tls=False`` no TLS is configured and there is no
``ldaps`` listener, for "StartTLS refused" tests. ``run_as`` runs slapd as that user (``-u``/``-g``,
e.g. ``openldap``): the key must then be readable by it.
"""

from __future__ import annotations

import functools
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from lecentral_testing.daemons.base import TlsServer
from lecentral_testing.process import Daemon, chown_to, find_executable, run_tool

if TYPE_CHECKING:
    from lecentral.registry import Registry

SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
ROOT_EXTERNAL = "gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth"


class SlapdServer(TlsServer):
    """slapd with ``ldap`` (StartTLS) and ``ldaps`` listeners and an ``ldapi`` socket."""

    kind = "slapd"

    def __init__(self, workdir: Path | str | None = None, *, cert: Path | str, key: Path | str,
                 chain: Path | str | None = None, suffix: str = "dc=example,dc=test",
                 tls: bool = True, run_as: str | None = None) -> None:
        super().__init__(workdir, cert=cert, key=key, chain=chain)
        self.suffix = suffix
        self.tls = tls
        self.run_as = run_as
        self._slapd = find_executable("slapd", package="slapd")
        self._slaptest = find_executable("slaptest", package="slapd")
        self._slapadd = find_executable("slapadd", package="slapd")
        self._ldapmodify = find_executable("ldapmodify", package="ldap-utils")
        # The ldapi socket path must fit a sockaddr_un.
        self.dir = self.reachable_dir("slapd", run_as, max_len=60)
        self.config_dir = self.dir / "slapd.d"
        self.data_dir = self.dir / "data"
        self.log_file = self.dir / "slapd.log"

    @property
    def ldapi_url(self) -> str:
        """``ldapi://`` URL of the unix socket (root gets ``manage`` on cn=config via EXTERNAL)."""
        return "ldapi://" + urllib.parse.quote(str(self.dir / "ldapi"), safe="")

    @property
    def ldap_url(self) -> str:
        """Plain ``ldap://127.0.0.1:PORT`` (for binds and searches, e.g. with ldap3)."""
        return f"ldap://{self.address}:{self.ports['ldap']}"

    def listeners(self) -> dict[str, str]:
        listeners = {"ldap": "ldap+starttls"}
        if self.tls:
            listeners["ldaps"] = "ldaps"
        return listeners

    def _tls_attributes(self) -> str:
        if not self.tls:
            return ""
        return (f"olcTLSCertificateFile: {self.cert}\nolcTLSCertificateKeyFile: {self.key}\n"
                f"olcTLSCACertificateFile: {self.chain or self.cert}\n")

    def _init_ldif(self) -> str:
        """cn=config as Debian's postinst makes it (slapd.init.ldif), trimmed and in our dir."""
        return (
            f"dn: cn=config\nobjectClass: olcGlobal\ncn: config\n"
            f"olcPidFile: {self.dir / 'slapd.pid'}\n{self._tls_attributes()}\n"
            "dn: cn=module{0},cn=config\nobjectClass: olcModuleList\ncn: module{0}\n"
            f"olcModulePath: {MODULE_DIR}\nolcModuleLoad: back_mdb\n\n"
            "dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n\n"
            f"include: file://{SCHEMA_DIR}/core.ldif\n\n"
            "dn: olcDatabase={-1}frontend,cn=config\nobjectClass: olcDatabaseConfig\n"
            "objectClass: olcFrontendConfig\nolcDatabase: {-1}frontend\n"
            f"olcAccess: {{0}}to * by dn.exact={ROOT_EXTERNAL} manage by * break\n"
            'olcAccess: {1}to dn.exact="" by * read\n'
            'olcAccess: {2}to dn.base="cn=Subschema" by * read\n\n'
            "dn: olcDatabase={0}config,cn=config\nobjectClass: olcDatabaseConfig\n"
            f"olcDatabase: {{0}}config\nolcAccess: {{0}}to * by dn.exact={ROOT_EXTERNAL} manage by * break\n\n"
            "dn: olcDatabase={1}mdb,cn=config\nobjectClass: olcDatabaseConfig\n"
            f"objectClass: olcMdbConfig\nolcDatabase: {{1}}mdb\nolcSuffix: {self.suffix}\n"
            f"olcRootDN: cn=admin,{self.suffix}\nolcDbDirectory: {self.data_dir}\n"
            "olcDbMaxSize: 10485760\nolcAccess: {0}to * by * read\n"
        )

    def write_config(self) -> None:
        if self.config_dir.is_dir() and any(self.config_dir.iterdir()):
            return  # cn=config exists: it is the configuration now, changes included
        self.config_dir.mkdir(exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        ldif = self.dir / "init.ldif"
        ldif.write_text(self._init_ldif())
        run_tool([self._slapadd, "-n0", "-F", str(self.config_dir), "-l", str(ldif)],
                 what="creating slapd's cn=config", log_path=self.log_file)
        for path in (self.config_dir, *self.config_dir.rglob("*"), self.data_dir):
            chown_to(path, self.run_as)

    def daemon(self) -> Daemon:
        urls = [f"{scheme}://{self.address}:{self.ports[name]}/"
                for name, scheme in (("ldap", "ldap"), ("ldaps", "ldaps")) if name in self.ports]
        argv = [self._slapd, "-F", str(self.config_dir), "-h", " ".join([*urls, self.ldapi_url]),
                "-d", "stats"]  # -d: stay in the foreground, connections and TLS to the log
        if self.run_as:
            argv += ["-u", self.run_as, "-g", self.run_as]
        return Daemon("slapd", argv, log_path=self.log_file, cwd=self.dir)

    def _tls_ldif(self) -> str:
        lines = ["dn: cn=config", "changetype: modify"]
        values = {"olcTLSCertificateFile": self.cert, "olcTLSCertificateKeyFile": self.key,
                  "olcTLSCACertificateFile": self.chain or self.cert}
        for attr, path in values.items():
            lines += [f"replace: {attr}", f"{attr}: {path}", "-"]
        return "\n".join(lines) + "\n"

    def presented_fingerprint(self, listener: str, timeout: float = 5.0) -> str:
        """SHA-256 hex of the leaf ``listener`` presents now, through the installed verifier of its
        scheme: LDAP is not in the core, ``lecentral-openldap`` brings ``ldap+starttls://`` and
        ``ldaps://`` (a clear PluginError naming it when it is not installed)."""
        from lecentral.verify import presented_fingerprint

        return presented_fingerprint(_registry(), self.verify_urls[listener], timeout)

    @property
    def pid_path(self) -> Path:
        return self.dir / "slapd.pid"

    @property
    def reload_argv(self) -> list[str]:
        """``ldapmodify`` over ldapi re-setting the olcTLS* paths, which makes slapd reload them."""
        ldif = self.dir / "tls-reload.ldif"
        ldif.write_text(self._tls_ldif())
        return [self._ldapmodify, "-Q", "-Y", "EXTERNAL", "-H", self.ldapi_url, "-f", str(ldif)]

    @property
    def check_argv(self) -> list[str]:
        return [self._slaptest, "-u", "-F", str(self.config_dir)]


@functools.cache
def _registry() -> Registry:
    from lecentral.registry import Registry

    return Registry.load()
