"""Which certificate and key files Apache will load, read from Apache's own parse of its configuration.

``apache2ctl configtest`` parses the configuration but loads no certificate: a key that does not
match its certificate passes it, and then stops Apache at the graceful restart. To check the pairs
before that, we ask Apache itself for its parsed configuration (mod_info's ``-t -D DUMP_CONFIG``,
with ``Include``, ``<IfModule>``, ``<IfDefine>`` and ``${VARIABLES}`` already resolved) and its
``ServerRoot`` (``-D DUMP_RUN_CFG``), so nothing of Apache's configuration syntax is re-implemented
here beyond reading one argument.

Pairing follows mod_ssl: a virtual host's ``SSLCertificateFile`` and ``SSLCertificateKeyFile``
lists are followed by the main server's (so a global key serves a virtual host that names only its
certificate); the n-th certificate goes with the n-th key, and a certificate without a key of its
own must hold the key itself. ``SSLEngine`` and ``SSLCertificateChainFile`` are inherited from
the main server when a virtual host does not set them.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field

#: the arguments that make Apache print its parsed configuration and ServerRoot, then exit
DUMP_ARGS = ("-t", "-D", "DUMP_RUN_CFG", "-D", "DUMP_CONFIG")

_SERVER_ROOT = re.compile(r'^ServerRoot: "(.*)"$')
_FILE = re.compile(r"^# In file: (.*)$")
_LINE = re.compile(r"^#\s*(\d+):$")
_ARG = re.compile(r"""\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|(\S+))""")


def dump_command(apachectl: str, mod_info: str) -> str:
    """The command line printing the parsed configuration (mod_info loaded for this run only)."""
    load = f'LoadModule info_module "{mod_info}"'
    return " ".join([apachectl, "-C", shlex.quote(load), *DUMP_ARGS])


def first_argument(text: str) -> str:
    """The first argument of a directive, quoted or not, as Apache reads it (``ap_getword_conf``)."""
    match = _ARG.match(text)
    if match is None:
        return ""
    double, single, bare = match.groups()
    if double is not None:
        return double.replace('\\"', '"')
    if single is not None:
        return single.replace("\\'", "'")
    return bare


@dataclass
class SslServer:
    """The TLS settings of the main server or of one ``<VirtualHost>``, as written in it."""

    label: str
    certs: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    chain: str | None = None
    engine: str | None = None  # "on", "off", "optional" or None (not set here)


@dataclass(frozen=True)
class CertPair:
    """One certificate Apache loads for a server, the key it pairs with it, and its chain file."""

    server: str
    cert: str
    key: str | None  # None: Apache reads the key from the certificate file itself
    chain: str | None


@dataclass
class ParsedConfig:
    """The servers of a parsed Apache configuration, paths resolved against ``server_root``."""

    server_root: str
    main: SslServer
    vhosts: list[SslServer]

    def _path(self, value: str) -> str:
        return value if os.path.isabs(value) else os.path.join(self.server_root, value)

    def pairs(self) -> Iterator[CertPair]:
        """Every (certificate, key) pair of every server that has TLS enabled."""
        main = self.main
        for server in [main, *self.vhosts]:
            inherits = server is not main
            engine = server.engine or (main.engine if inherits else None)
            if engine not in ("on", "optional"):
                continue
            certs = server.certs + (main.certs if inherits else [])
            keys = server.keys + (main.keys if inherits else [])
            chain = server.chain or (main.chain if inherits else None)
            for index, cert in enumerate(certs):
                key = keys[index] if index < len(keys) else None
                yield CertPair(server.label, self._path(cert), self._path(key) if key else None,
                               self._path(chain) if chain else None)


def parse_dump(output: str) -> ParsedConfig:
    """Read the output of :func:`dump_command` (mod_info's dump, then the run-time settings)."""
    server_root = ""
    main = SslServer("the main server")
    vhosts: list[SslServer] = []
    current = main
    depth = 0  # nesting of containers inside the current server (<Directory>, <Location>...)
    where = ("?", "?")
    for raw in output.splitlines():
        line = raw.strip()
        if match := _SERVER_ROOT.match(line):
            server_root = match.group(1)
            continue
        if match := _FILE.match(line):
            where = (match.group(1), where[1])
            continue
        if match := _LINE.match(line):
            where = (where[0], match.group(1))
            continue
        if line.lower().startswith("<virtualhost") and current is main:
            current = SslServer(f"{line} ({where[0]}:{where[1]})")
            vhosts.append(current)
            depth = 0
            continue
        if line.lower() == "</virtualhost>" and depth == 0:
            current = main
            continue
        if line.startswith("</"):
            depth = max(depth - 1, 0)
            continue
        if line.startswith("<"):
            depth += 1
            continue
        if depth == 0 and line:
            _directive(current, line)
    return ParsedConfig(server_root or "/", main, vhosts)


def _directive(server: SslServer, line: str) -> None:
    name, _, rest = line.partition(" ")
    name = name.lower()
    if name == "sslcertificatefile":
        server.certs.append(first_argument(rest))
    elif name == "sslcertificatekeyfile":
        server.keys.append(first_argument(rest))
    elif name == "sslcertificatechainfile":
        server.chain = first_argument(rest)
    elif name == "sslengine":
        server.engine = first_argument(rest).lower()
