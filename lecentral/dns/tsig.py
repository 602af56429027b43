"""TSIG keys from BIND key files (``tsig-keygen`` output), parsed without ever showing the secret.

A key file holds one or more clauses::

    key "acme-update" {
        algorithm hmac-sha512;
        secret "base64...";
    };

Comments (``#``, ``//``, ``/* */``) are allowed, as in named.conf, so an ``include``-able file
works as is. Every error names the file, the line and the key, never the secret.
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

log = logging.getLogger(__name__)

#: algorithms BIND and dnspython both implement (hmac-md5 is accepted for old setups)
ALGORITHMS = ("hmac-md5", "hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512")

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
        """The ``dns.tsig.Key`` to pass as ``keyring`` to ``dns.update.UpdateMessage``."""
        import dns.tsig

        return dns.tsig.Key(self.name, self.secret, self.algorithm)


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


def read_key_file(path: Path | str) -> dict[str, TsigKey]:
    """Parse the BIND key file ``path``; warns once if others may read it."""
    path = Path(path)
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"TSIG key file {path} does not exist; write it with "
                          f"`lecentral dns zone NAME --out DIR` or tsig-keygen") from None
    except PermissionError:
        raise ConfigError(f"TSIG key file {path} is not readable by this user (uid {os.geteuid()})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"TSIG key file {path} is not a text file") from None
    if mode & stat.S_IROTH:
        log.warning("TSIG key file %s is readable by every user; chmod 600 %s", path, path)
    return parse_key_text(text, str(path))


class KeyFiles:
    """Key files read once and re-read when they change; safe to share between threads."""

    def __init__(self, on_secret: Callable[[str], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[int, int], dict[str, TsigKey]]] = {}
        self._on_secret = on_secret  # told every secret read, so that no message shows it

    def keys(self, path: str) -> dict[str, TsigKey]:
        """The keys of ``path`` (cached by modification time and size)."""
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = (0, 0)
        with self._lock:
            cached = self._cache.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        keys = read_key_file(path)
        if self._on_secret is not None:
            for key in keys.values():
                self._on_secret(key.secret)
        with self._lock:
            self._cache[path] = (stamp, keys)
        return keys

    def pick(self, path: str, key_name: str, zone: str, setting: str) -> TsigKey:
        """The key to use for ``zone`` from ``path``.

        ``key_name`` chooses among several keys; without it a file with one key uses that key,
        and a file with several uses the one named like the zone. ``setting`` names the config
        table for error messages.
        """
        keys = self.keys(path)
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
