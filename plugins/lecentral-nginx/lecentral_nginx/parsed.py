"""Which certificate and key files each nginx ``server`` block loads, read from ``nginx -T``.

``nginx -T`` tests the configuration and prints every file it read, each after a
``# configuration file PATH:`` header, in the order it opened them. ``include`` directives stay
as written in the including file, so they are expanded here by matching their (glob) pattern
against the dumped paths: nginx itself already resolved which files exist. Tokens follow nginx's
reader (``ngx_conf_read_token``): words end at whitespace, ``;`` or ``{``; ``#`` starts a comment
only at the start of a word; ``"..."`` and ``'...'`` quote, ``\\`` escapes.

Pairing follows ``ngx_http_ssl_module``: a ``server`` that sets no ``ssl_certificate`` inherits
the list of its ``http`` (or ``stream``/``mail``) block, and likewise ``ssl_certificate_key``,
each list on its own; the n-th certificate goes with the n-th key. Relative paths are relative to
the directory of the main configuration file (nginx's conf prefix).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field

from lecentral.api import KeyPair

log = logging.getLogger(__name__)

_HEADER = re.compile(r"^# configuration file (.+):$")
#: the flags of nginx's command line that take a value (attached or as the next argument)
_VALUE_FLAGS = "pcegs"
#: top-level blocks whose ``server`` blocks take TLS certificates
_SERVER_CONTEXTS = ("http", "stream", "mail")
_ESCAPES = {"t": "\t", "r": "\r", "n": "\n"}


def dump_argv(check: str) -> list[str]:
    """The command printing nginx's configuration: the entry's ``check`` with ``-T`` for ``-t``.

    The ``nginx`` word of ``check`` and its ``-p``/``-c``/``-e``/``-g`` options are kept (so an
    instance with its own configuration is read, and ``sudo nginx -t`` stays ``sudo``); ``-t`` and
    ``-q`` are dropped. A ``check`` that is not an ``nginx ... -t`` command line (empty, or
    ``systemctl ...``) gives plain ``nginx -T``.
    """
    try:
        argv = shlex.split(check)
    except ValueError:
        argv = []
    for at, word in enumerate(argv):
        if os.path.basename(word).startswith("nginx"):
            dump = _options(argv[at + 1:])
            if dump is not None:
                return [*argv[:at + 1], *dump, "-T"]
    return ["nginx", "-T"]


def _options(args: list[str]) -> list[str] | None:
    """nginx's options ``args`` without ``-t``/``-T``/``-q``; None if they are not a config test."""
    kept, tests, words = [], False, iter(args)
    for arg in words:
        if not arg.startswith("-") or len(arg) < 2:
            return None
        flags = ""
        for index, flag in enumerate(arg[1:], start=1):
            if flag in _VALUE_FLAGS:
                flags += arg[index:]
                if index == len(arg) - 1:  # the value is the next argument
                    kept += ["-" + flags, next(words, "")]
                    flags = ""
                break
            tests = tests or flag in "tT"
            if flag not in "tTq":
                flags += flag
        if flags:
            kept.append("-" + flags)
    return kept if tests else None


@dataclass
class Directive:
    """One directive: its name, arguments, where it starts, and its block (``None``: no block)."""

    name: str
    args: list[str]
    file: str
    line: int
    block: list[Directive] | None = None


def tokenize(text: str) -> Iterator[tuple[str, int, bool]]:
    """The words of ``text`` as (word, line, quoted), with ``;``, ``{`` and ``}`` as words too."""
    i, line, n = 0, 1, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
        elif ch.isspace():
            i += 1
        elif ch == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif ch in ";{}":
            yield ch, line, False
            i += 1
        elif ch in "\"'":
            start, word, i = line, [], i + 1
            while i < n and text[i] != ch:
                if text[i] == "\\" and i + 1 < n:
                    word.append(text[i])
                    i += 1
                word.append(text[i])
                line += text[i] == "\n"
                i += 1
            i += 1
            yield _unescape("".join(word)), start, True
        else:
            word, variable = [], False
            while i < n:
                ch = text[i]
                if ch == "{" and variable:  # ${name}
                    word.append(ch)
                    i += 1
                    continue
                if ch.isspace() or ch in ";{":
                    break
                if ch == "\\" and i + 1 < n:
                    word.append(text[i:i + 2])
                    i += 2
                    continue
                variable = ch == "$"
                word.append(ch)
                i += 1
            yield _unescape("".join(word)), line, False


def _unescape(word: str) -> str:
    # as nginx copies a token: \" \' \\ \t \r \n are escapes, any other backslash stays
    return re.sub(r"""\\(["'\\trn])""", lambda m: _ESCAPES.get(m.group(1), m.group(1)), word)


def split_dump(output: str) -> dict[str, str]:
    """path -> text of every file in ``nginx -T``'s output, the main configuration first."""
    files: dict[str, str] = {}
    path: str | None = None
    for raw in output.splitlines():
        match = _HEADER.match(raw)
        if match:
            path = match.group(1)
            files[path] = ""
        elif path is not None:
            files[path] += raw + "\n"
    return files


def parse_file(files: dict[str, str], path: str, prefix: str, depth: int = 0) -> list[Directive]:
    """The directives of the dumped file ``path``, ``include`` directives replaced by their files."""
    stack: list[list[Directive]] = [[]]
    words: list[str] = []
    start = 0
    for word, line, quoted in tokenize(files.get(path, "")):
        if not words:
            start = line
        if not quoted and word in (";", "{"):
            if words:
                directive = Directive(words[0], words[1:], path, start)
                if word == "{":
                    directive.block = []
                    stack[-1].append(directive)
                    stack.append(directive.block)
                elif directive.name == "include" and directive.args and depth < 32:
                    for name in _included(files, directive.args[0], prefix):
                        stack[-1].extend(parse_file(files, name, prefix, depth + 1))
                else:
                    stack[-1].append(directive)
            words = []
        elif not quoted and word == "}" and not words:
            if len(stack) > 1:
                stack.pop()
        else:
            words.append(word)
    return stack[0]


def _included(files: dict[str, str], pattern: str, prefix: str) -> list[str]:
    pattern = os.path.join(prefix, pattern)  # an absolute pattern stays as it is
    slashes = pattern.count("/")
    return sorted(name for name in files
                  if name.count("/") == slashes and fnmatch.fnmatchcase(name, pattern))


@dataclass
class Server:
    """The TLS settings of one ``server`` block, or of the block around servers (``http``...)."""

    file: str
    line: int
    names: list[str] = field(default_factory=list)
    certs: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        names = " ".join(self.names) if self.names else "(none)"
        return f"the server block at {self.file}:{self.line} (server_name {names})"


def _settings(into: Server, directives: list[Directive]) -> None:
    for d in directives:
        if d.name == "ssl_certificate" and d.args:
            into.certs.append(d.args[0])
        elif d.name == "ssl_certificate_key" and d.args:
            into.keys.append(d.args[0])
        elif d.name == "server_name":
            into.names.extend(d.args)


def pairs(output: str) -> list[KeyPair]:
    """Every (certificate, key) pair of every ``server`` block in ``nginx -T``'s ``output``.

    Pairs whose paths hold variables (``$ssl_server_name``: chosen per handshake) or inline data
    (``data:``, ``engine:``) are left out, with a debug log: no file on disk can be checked.
    """
    files = split_dump(output)
    if not files:
        return []
    main = next(iter(files))
    prefix = os.path.dirname(main)
    found: list[KeyPair] = []
    for context in parse_file(files, main, prefix):
        if context.name not in _SERVER_CONTEXTS or context.block is None:
            continue
        around = Server(context.file, context.line)
        _settings(around, context.block)
        for d in context.block:
            if d.name != "server" or d.block is None:
                continue
            server = Server(d.file, d.line)
            _settings(server, d.block)
            certs, keys = server.certs or around.certs, server.keys or around.keys
            for cert, key in zip(certs, keys, strict=False):  # unequal counts fail nginx -t itself
                if "$" in cert + key or cert.startswith("data:") or key.startswith(("data:", "engine:")):
                    log.debug("%s: ssl_certificate %s / ssl_certificate_key %s are chosen at run "
                              "time or inline; not checked", server.label, cert, key)
                    continue
                cert, key = os.path.join(prefix, cert), os.path.join(prefix, key)
                found.append(KeyPair(cert, key, server.label, f"ssl_certificate {cert}",
                                     f"ssl_certificate_key {key}"))
    return found
