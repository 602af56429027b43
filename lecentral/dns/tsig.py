"""TSIG keys from BIND key files, parsed without ever showing the secret.

Three formats are read. ``tsig-keygen`` output (and named.conf fragments), one or more clauses::

    key "acme-update" {
        algorithm hmac-sha512;
        secret "base64...";
    };

Comments (``#``, ``//``, ``/* */``) are allowed, as in named.conf, so an ``include``-able file
works as is. And the two files of ``dnssec-keygen -a HMAC-SHA512 -n HOST NAME`` (BIND up to
9.16; many sub-zones of that era were made with it), named ``K<name>.+<alg>+<id>.private`` and
``.key``: the ``.private`` holds ``Private-key-format: v1.2``/``v1.3``, ``Algorithm: 165
(HMAC_SHA512)`` and ``Key: base64``, the key name being in the file name; the ``.key`` holds
the KEY record ``name. IN KEY 512 3 165 base64`` (for HMAC the "public" key *is* the secret).

Every error names the file (and line, and key), never the secret.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lecentral.errors import ConfigError
from lecentral.files_io import this_user, user_name

log = logging.getLogger(__name__)

#: algorithms BIND and dnspython both implement (hmac-md5 is accepted for old setups)
ALGORITHMS = ("hmac-md5", "hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512")

#: dnssec-keygen's HMAC algorithm numbers: 157 is HMAC-MD5's KEY-record number (RFC 2845),
#: 161-165 are numbers BIND gave its other HMACs for its own files
KEYGEN_ALGORITHMS = {157: "hmac-md5", 161: "hmac-sha1", 162: "hmac-sha224", 163: "hmac-sha256",
                     164: "hmac-sha384", 165: "hmac-sha512"}

#: the name dnssec-keygen gave its files: K<key name>.+<algorithm>+<key id>.private / .key
_KEYGEN_FILE = re.compile(r"^K(?P<name>.+?)\.?\+(?P<alg>\d{3})\+(?P<id>\d{5})\.(?:private|key)$")
#: the KEY record of a dnssec-keygen .key file: owner [ttl] [IN] KEY flags protocol algorithm base64
_KEY_RECORD = re.compile(r"^(?P<owner>[^\s;]+)\s+(?:\d+\s+)?(?:IN\s+)?(?:\d+\s+)?KEY\s+(?P<flags>\d+)\s+"
                         r"(?P<protocol>\d+)\s+(?P<alg>\d+)\s*(?P<data>.*)$", re.IGNORECASE | re.DOTALL)
_KEY_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")
#: the wire names dnspython knows a BIND algorithm by, where they differ from BIND's
_WIRE_NAMES = {"hmac-md5": "hmac-md5.sig-alg.reg.int"}

_TOKEN = re.compile(
    r'(?P<ws>\s+)|(?P<comment>#[^\n]*|//[^\n]*|/\*.*?\*/)|(?P<string>"[^"\n]*")'
    r"|(?P<punct>[{};])|(?P<word>[^\s{};\"#/]+)|(?P<bad>.)",
    re.DOTALL,
)


@dataclass(frozen=True)
class TsigKey:
    """One TSIG key: its name, algorithm and base64 secret (kept out of repr and str)."""

    name: str
    algorithm: str
    secret: str = field(repr=False)
    source: str = ""

    def __str__(self) -> str:
        return f"TSIG key {self.name} ({self.algorithm}, from {self.source or 'memory'})"

    def dnspython_key(self) -> Any:
        """The ``dns.tsig.Key`` to pass as ``keyring`` to ``dns.update.UpdateMessage``; made once
        per key (it parses the name and decodes the secret; a batch signs hundreds of messages
        with it, and dnspython only reads it)."""
        made = self.__dict__.get("_dnspython_key")
        if made is None:
            import dns.tsig

            # BIND's hmac-md5 is HMAC-MD5.SIG-ALG.REG.INT on the wire (RFC 2845); dnspython only
            # knows it by that name
            made = dns.tsig.Key(self.name, self.secret, _WIRE_NAMES.get(self.algorithm, self.algorithm))
            object.__setattr__(self, "_dnspython_key", made)  # not a field: equality, repr stay
        return made


def _tokens(text: str, source: str) -> list[tuple[str, int]]:
    """(token, line) pairs; comments and blanks dropped."""
    out: list[tuple[str, int]] = []
    line = 1
    for match in _TOKEN.finditer(text):
        kind, value = match.lastgroup, match.group()
        if kind == "bad":
            raise ConfigError(f"{source}:{line}: unexpected character {value!r} in a BIND key file")
        if kind in ("string", "punct", "word"):
            out.append((value, line))
        line += value.count("\n")
    return out


class _Parser:
    """A tiny recursive-descent reader for ``key "name" { ...; };`` clauses."""

    def __init__(self, text: str, source: str) -> None:
        self.tokens = _tokens(text, source)
        self.pos = 0
        self.source = source

    def _where(self) -> str:
        line = self.tokens[min(self.pos, len(self.tokens) - 1)][1] if self.tokens else 1
        return f"{self.source}:{line}"

    def _next(self, what: str) -> str:
        if self.pos >= len(self.tokens):
            raise ConfigError(f"{self._where()}: file ends where {what} was expected")
        token = self.tokens[self.pos][0]
        self.pos += 1
        return token

    def _expect(self, wanted: str) -> None:
        got = self._next(f"'{wanted}'")
        if got != wanted:
            # the token may be a secret: do not echo it
            raise ConfigError(f"{self._where()}: expected '{wanted}' here")

    def _skip_statement(self) -> None:
        """Skip an unrelated statement (``options {...};``) so a named.conf fragment parses."""
        depth = 0
        while True:
            token = self._next("';'")
            if token == "{":
                depth += 1
            elif token == "}":
                depth -= 1
            elif token == ";" and depth == 0:
                return

    def parse(self) -> list[TsigKey]:
        found: list[TsigKey] = []
        while self.pos < len(self.tokens):
            if self.tokens[self.pos][0] != "key":
                self._skip_statement()
                continue
            self.pos += 1
            found.append(self._key())
        return found

    def _key(self) -> TsigKey:
        name = _unquote(self._next("a key name")).rstrip(".").lower()
        where = self._where()
        if not name or name in "{};":
            raise ConfigError(f"{where}: a key clause needs a name: key \"NAME\" {{ ... }};")
        self._expect("{")
        values: dict[str, str] = {}
        while True:
            option = self._next("'algorithm', 'secret' or '}'")
            if option == "}":
                break
            value = _unquote(self._next(f"the value of {option!r}"))
            self._expect(";")
            values[option] = value
        self._expect(";")
        return _checked_key(name, values, where)


def _unquote(token: str) -> str:
    return token[1:-1] if len(token) >= 2 and token[0] == token[-1] == '"' else token


def _checked_key(name: str, values: dict[str, str], where: str) -> TsigKey:
    unknown = sorted(set(values) - {"algorithm", "secret"})
    if unknown:
        raise ConfigError(f"{where}: key {name}: unknown option {unknown[0]!r} (only algorithm and secret)")
    algorithm = values.get("algorithm", "").lower().rstrip(".")
    if algorithm not in ALGORITHMS:
        shown = repr(algorithm) if algorithm else "missing"
        raise ConfigError(f"{where}: key {name}: algorithm {shown}; use one of {', '.join(ALGORITHMS)} "
                          f"(tsig-keygen -a hmac-sha512 {name})")
    secret = values.get("secret", "")
    try:
        if not secret or not base64.b64decode(secret, validate=True):
            raise ValueError
    except (ValueError, binascii.Error):
        raise ConfigError(f"{where}: key {name}: the secret is missing or not valid base64; "
                          f"regenerate it with tsig-keygen -a {algorithm} {name}") from None
    return TsigKey(name=name, algorithm=algorithm, secret=secret, source=where.rsplit(":", 1)[0])


def parse_key_text(text: str, source: str = "<text>") -> dict[str, TsigKey]:
    """Every key clause in ``text``, by key name; ConfigError if none or on a syntax error."""
    keys: dict[str, TsigKey] = {}
    for key in _Parser(text, source).parse():
        if key.name in keys:
            raise ConfigError(f"{source}: key {key.name} is defined twice")
        keys[key.name] = key
    if not keys:
        raise ConfigError(f"{source}: no key clause found; expected the output of tsig-keygen: "
                          f'key "NAME" {{ algorithm hmac-sha512; secret "..."; }};')
    return keys


# --- dnssec-keygen files ---------------------------------------------------------------------


def _significant_lines(text: str, comment: str) -> list[tuple[str, int]]:
    """(line, number) of the lines that are neither blank nor ``comment`` lines."""
    return [(line.strip(), number) for number, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith(comment)]


def file_format(text: str) -> str:
    """``"private"`` (a dnssec-keygen .private), ``"key-record"`` (its .key) or ``"named"``."""
    lines = _significant_lines(text, ";")
    if not lines:
        return "named"
    if lines[0][0].startswith("Private-key-format:"):
        return "private"
    # the record may span lines in parentheses, but its head (owner ... KEY flags ...) is on one line
    if _KEY_RECORD.match(lines[0][0].replace("(", " ")):
        return "key-record"
    return "named"


def _keygen_secret(name: str, number: int, secret: str, where: str, what: str) -> TsigKey:
    """The key of a dnssec-keygen file, after the checks its two formats share."""
    algorithm = KEYGEN_ALGORITHMS.get(number)
    if algorithm is None:
        known = ", ".join(f"{n} ({a.upper().replace('-', '_')})" for n, a in KEYGEN_ALGORITHMS.items())
        raise ConfigError(f"{where}: algorithm {number} is not a TSIG (HMAC) algorithm; a TSIG key file says "
                          f"one of {known} (a DNSSEC signing key is not a TSIG key)")
    try:
        if not secret or not base64.b64decode(secret, validate=True):
            raise ValueError
    except (ValueError, binascii.Error):
        raise ConfigError(f"{where}: key {name}: {what} is missing or not valid base64; the file is "
                          f"damaged: make a new key with tsig-keygen -a {algorithm} {name}") from None
    return _checked_key(name, {"algorithm": algorithm, "secret": secret}, where)


def _keygen_name(text: str, source: str, what: str) -> str:
    """A key name from a dnssec-keygen file name or KEY owner, checked like a DNS name."""
    name = text.rstrip(".").lower()
    if not _KEY_NAME.match(name):
        raise ConfigError(f"{source}: {what} {text!r} is not a usable TSIG key name (letters, digits, "
                          f"'-', '_' and dots)")
    return name


def parse_private_text(text: str, source: str, filename: str) -> dict[str, TsigKey]:
    """The key of a dnssec-keygen ``K<name>.+<alg>+<id>.private`` file (format v1.2 or v1.3).

    Its lines are ``Tag: value``; ``Algorithm``, ``Key`` and the key name (from ``filename``)
    matter, the others (``Bits``, ``Created``, ``Publish``, ``Activate``) are BIND's own.
    """
    tags: dict[str, tuple[str, int]] = {}
    for line, number in _significant_lines(text, ";"):
        tag, colon, value = line.partition(":")
        if not colon or not tag.strip():
            # the line may hold the secret: never quote it
            raise ConfigError(f"{source}:{number}: expected 'Tag: value' as in a dnssec-keygen .private file")
        tags.setdefault(tag.strip().lower(), (value.strip(), number))
    version, _ = tags.get("private-key-format", ("", 1))
    if not re.fullmatch(r"v1\.\d+", version):
        raise ConfigError(f"{source}:1: Private-key-format {version!r} is not one this reads (v1.2, v1.3)")
    match = _KEYGEN_FILE.match(filename)
    if match is None:
        raise ConfigError(f"{source}: cannot tell the key's name: dnssec-keygen names this file "
                          f"K<keyname>.+<algorithm>+<id>.private (e.g. Kacme-update.+165+01234.private); "
                          f"give it back that name, or name the .key file beside it")
    name = _keygen_name(match.group("name"), source, "the key name")
    if "algorithm" not in tags:
        raise ConfigError(f"{source}: key {name}: no 'Algorithm:' line; the file is damaged: make a new key "
                          f"with tsig-keygen -a hmac-sha512 {name}")
    alg_text, alg_line = tags["algorithm"]
    number_text = alg_text.split(maxsplit=1)[0] if alg_text else ""
    if not number_text.isdigit():
        raise ConfigError(f"{source}:{alg_line}: key {name}: 'Algorithm:' must start with a number, "
                          f"e.g. 'Algorithm: 165 (HMAC_SHA512)'")
    number = int(number_text)
    if number != int(match.group("alg")) and number in KEYGEN_ALGORITHMS:
        raise ConfigError(f"{source}:{alg_line}: key {name}: the file name says algorithm "
                          f"{int(match.group('alg'))}, its 'Algorithm:' line {number}; rename the file "
                          f"or make a new key")
    secret, key_line = tags.get("key", ("", alg_line))
    key = _keygen_secret(name, number, secret, f"{source}:{key_line}", "'Key:'")
    return {key.name: key}


def parse_key_record_text(text: str, source: str) -> dict[str, TsigKey]:
    """The key of a dnssec-keygen ``.key`` file: one KEY record, its owner the key's name.

    ``;`` comments (BIND 9.7+ writes the key's dates so) and a record split over lines in
    parentheses are allowed; the base64 may hold spaces, as zone files allow.
    """
    lines = _significant_lines(text, ";")
    first = lines[0][1]
    record = " ".join(line.split(";", 1)[0] for line, _ in lines).replace("(", " ").replace(")", " ")
    match = _KEY_RECORD.match(record.strip())
    if match is None:  # file_format() found the head: only the rest can be wrong
        raise ConfigError(f"{source}:{first}: expected one KEY record: NAME. IN KEY 512 3 165 BASE64")
    name = _keygen_name(match.group("owner"), f"{source}:{first}", "the KEY record's owner")
    secret = "".join(match.group("data").split())
    key = _keygen_secret(name, int(match.group("alg")), secret, f"{source}:{first}", "the KEY record's key data")
    return {key.name: key}


def parse_file_text(text: str, source: str, filename: str = "") -> dict[str, TsigKey]:
    """The keys of a key file in any format this module reads (see the module docstring)."""
    kind = file_format(text)
    if kind == "private":
        return parse_private_text(text, source, filename or Path(source).name)
    if kind == "key-record":
        return parse_key_record_text(text, source)
    return parse_key_text(text, source)


#: the step of the guide that makes a key file, for the error when it does not exist yet
MAKE_KEY_STEP = "docs/dns.md, step 1, \"The TSIG key\""


def read_key_file(path: Path | str, setting: str = "") -> dict[str, TsigKey]:
    """Parse the key file ``path`` (any format above); warns once if others may read it.

    ``setting`` names the configuration key that points at it, for the error when it is missing:
    configuration may name the file before it exists (it is made in a later step of the guide).
    """
    path = Path(path)
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"TSIG key file {path}{_named(setting)} does not exist yet: make it with "
                          f"`tsig-keygen -a hmac-sha512 KEYNAME > {path}` (then chmod 600, and define the "
                          f"same key in named.conf), or use the key file `lecentral dns zone NAME --out DIR` "
                          f"writes ({MAKE_KEY_STEP})") from None
    except PermissionError:
        raise ConfigError(f"TSIG key file {path}{_named(setting)} is not readable by {this_user()}, "
                          f"whom lecentral runs as: give it to that user (chown {user_name()} {path} && chmod 600 "
                          f"{path}) or to a group of that user (chmod 640)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"TSIG key file {path}{_named(setting)} is not a text file: point the setting "
                          f"at the key file tsig-keygen or dnssec-keygen wrote") from None
    except OSError as exc:  # a directory, an I/O error: not a key file either
        raise ConfigError(f"cannot read the TSIG key file {path}{_named(setting)}: {exc.strerror}; point "
                          f"the setting at the key file tsig-keygen or dnssec-keygen wrote") from None
    if mode & stat.S_IROTH and _first_warning(str(path)):
        log.warning("TSIG key file %s is readable by every user; chmod 600 %s", path, path)
    return parse_file_text(text, str(path), path.name)


#: key files already warned about in this process: a run reads one several times (the
#: configuration's checks, each zone's update test, each pass), the operator hears it once
_warned: set[str] = set()
_warned_lock = threading.Lock()


def warn_readable(paths: list[str]) -> None:
    """Warn (once, as :func:`read_key_file` does) of each key file of ``paths`` that every user
    may read: before worker processes are forked, which would each warn again."""
    for path in paths:
        try:
            readable = bool(os.stat(path).st_mode & stat.S_IROTH)
        except OSError:  # said when it is read
            continue
        if readable and _first_warning(str(Path(path))):
            log.warning("TSIG key file %s is readable by every user; chmod 600 %s", path, path)


def _first_warning(path: str) -> bool:
    with _warned_lock:
        first = path not in _warned
        _warned.add(path)
    return first


def _named(setting: str) -> str:
    return f" ({setting})" if setting else ""


class KeyFiles:
    """Key files read once and re-read when they change; safe to share between threads."""

    def __init__(self, on_secret: Callable[[str], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[int, int], dict[str, TsigKey]]] = {}
        self._on_secret = on_secret  # told every secret read, so that no message shows it

    def keys(self, path: str, setting: str = "") -> dict[str, TsigKey]:
        """The keys of ``path`` (cached by modification time and size); ``setting`` as for
        :func:`read_key_file`."""
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = (0, 0)
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        keys = read_key_file(path, setting)
        if self._on_secret is not None:
            for key in keys.values():
                self._on_secret(key.secret)
        with self._lock:
            self._cache[path] = (stamp, keys)
        return keys

    def pick(self, path: str, key_name: str, zone: str, setting: str, file_setting: str = "") -> TsigKey:
        """The key to use for ``zone`` from ``path``.

        ``key_name`` chooses among several keys; without it a file with one key uses that key,
        and a file with several uses the one named like the zone. ``setting`` names the config
        table for error messages, ``file_setting`` the key naming ``path`` (default: ``setting``'s
        tsig_key_file).
        """
        keys = self.keys(path, file_setting or f"{setting} tsig_key_file")
        if key_name:
            wanted = key_name.rstrip(".").lower()
            if wanted not in keys:
                raise ConfigError(f"{setting}: key {wanted} is not in {path} (it holds: {', '.join(sorted(keys))})")
            return keys[wanted]
        if len(keys) == 1:
            return next(iter(keys.values()))
        if zone in keys:
            return keys[zone]
        raise ConfigError(f"{path} holds several keys ({', '.join(sorted(keys))}) and none is named {zone}; "
                          f"say which one with tsig_key_name in {setting}")
