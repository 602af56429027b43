"""``lecentral fleet --json`` in one pass over ``certs``: the document streamed, nothing held
per certificate (:mod:`lecentral.fleet.onepass`).

A plainly current row is written into the spool as ``cert_json`` writes it, with its targets
as the database wrote them in the same statement (:meth:`lecentral.fleet.current.Split.
counts_column` with ``json``): on SQLite their JSON, elsewhere their values, whose JSON
:func:`targets_text` writes, as ``cert_json`` would. The held rows' JSON is written at their
places: the file is copied up to the point where a held row came in the pass, then the held
row.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Iterable
from typing import Any

from lecentral.fleet.current import FS, RAW_FIELDS, SEP
from lecentral.fleet.onepass import OnePass, Send
from lecentral.fleet.states import _count, _int


class JsonPass(OnePass):
    """The ``taker`` of a ``fleet --json`` snapshot: see the module's docstring."""

    wants = "json"

    def text(self, name: str, fp: str, expire: Any, update: Any, fails: Any,
             targets: str) -> str | None:
        """``,`` and the certificate's JSON."""
        # CertFleet's values (lecentral.fleet.states.compute), as cert_json writes them
        if not (type(expire) is int and expire):
            expire = _int(expire)
        if not (type(update) is int and update):
            update = _int(update)
        fp_json = _string(fp)
        if self._split.raw_targets:
            listed = targets_text(fp, targets, fp_json)
            if listed is None:
                return None
        else:
            listed = targets.replace(SEP, ",")
        return (f',{{"name":{_string(name)},"enabled":true,"fingerprint":{fp_json},'
                f'"ts_expire":{"null" if expire is None else expire},'
                f'"ts_last_update":{"null" if update is None else update},'
                f'"count_fail_update":{fails if type(fails) is int else _count(fails)},"state":"current",'
                f'"targets":[{listed}]}}')

    def write(self, write: Callable[[str], object], held: Iterable[str],
              send: Send | None = None) -> None:
        """The certificates of the document (after its ``"certs":[``), joined by commas:
        the file's text in order, each of ``held`` (the held rows' JSON, in the pass's
        order) at its place; the file's bytes copied by ``send`` where it can (the kernel
        writing them to stdout: :meth:`~lecentral.fleet.onepass.OnePass.sent`)."""
        first = True

        def copy(end: int | None) -> None:
            nonlocal first
            if send is not None:
                # (each spooled certificate starts with its comma: the first one's left out)
                copied = self.sent(end, send, skip=1 if first else 0)
                if copied is not None:
                    first = first and not copied
                    return
            for text in self.chunks(end):
                if first and text:
                    text, first = text[1:], False  # the leading comma of the first
                write(text)

        texts = iter(held)
        for offset in self.offsets:
            copy(offset)
            write(("" if first else ",") + next(texts))
            first = False
        copy(None)


def _string(value: str) -> str:
    """``json.dumps(value)``, without the call for the usual printable ASCII."""
    if value.isascii() and value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return json.dumps(value)


#: a text JSON writes between quotes as it is (json.dumps escapes ``"``, ``\``, control
#: characters, DEL and everything outside ASCII); possessive (``*+``): no character of it
#: ends a value, so nothing is given back, and nothing is kept to give back
_PLAIN = r"[ !#-\[\]-~]*+"
#: an integer's digits as the database writes them
_DIGITS = re.compile("-?[0-9]+")


#: a current target's values as the database writes them (:data:`RAW_FIELDS`), each one
#: needing no escaping: host and entry, numbers and texts as JSON has them (``null`` for
#: NULL), ``served`` 0 or 1, ``ts_reported`` not NULL
_ONE = FS.join((_PLAIN, _PLAIN, "(?:-?[0-9]++|null)", "[01]", "(?:-?[0-9]++|null)",
                f'(?:"{_PLAIN}"|null)', f'(?:"{_PLAIN}"|null)', "(?:-?[0-9]++|null)", "-?[0-9]++",
                f'(?:"{_PLAIN}"|null)', f'(?:"{_PLAIN}"|null)'))
#: a certificate's current targets, each as :data:`_ONE`
_PLAIN_TARGETS = re.compile(f"{_ONE}(?:{SEP}{_ONE})*+")
#: where :data:`_FORMATS` takes the certificate's fingerprint (its JSON), after the values
_FP = -1
#: a current target's JSON, as ``cert_json`` writes it, from its values written as
#: :data:`_ONE` has them, served (``1``) or not (``0``: ``served`` null), and the values it
#: takes (their names in :data:`RAW_FIELDS`), in order
_FORMATS = {
    served: ('{"kind":"agent","target":"%s (%s)","host":"%s","installed":{"fingerprint":'
             '%s,"not_after":%s,"url":null,"error":null,"ts":%s},"served":'
             + ('{"fingerprint":%s,"not_after":%s,"url":%s,"error":%s,"ts":%s}'
                if served == "1" else "null")
             + ',"ts":%s,"state":"current","detail":"the database\'s certificate",'
               '"result":%s,"db_user":%s}',
             [_FP if f == "fp" else RAW_FIELDS.index(f) for f in (
                 "host", "entry", "host", "fp", "installed_not_after", "ts_reported",
                 *(("fp", "served_not_after", "served_url", "served_error", "ts_served")
                   if served == "1" else ()),
                 "ts_reported", "result", "db_user")])
    for served in "01"}
#: per shape of a certificate's targets (each one's ``served``), their format and what picks
#: its values from theirs: the shapes of up to 8 targets (510 at most)
_SHAPES: dict[str, tuple[str, Callable[[list[str]], tuple[str, ...]]]] = {}
_SERVED = RAW_FIELDS.index("served")


def _shape(shape: str) -> tuple[str, Callable[[list[str]], tuple[str, ...]]]:
    """The format of targets of ``shape`` (:data:`_SHAPES`), and the values it takes."""
    found = _SHAPES.get(shape)
    if found is None:
        at: list[int] = []
        fp = len(RAW_FIELDS) * len(shape)  # (the values, then the fingerprint's JSON)
        for i, served in enumerate(shape):
            at += [fp if k == _FP else len(RAW_FIELDS) * i + k for k in _FORMATS[served][1]]
        found = (",".join(_FORMATS[served][0] for served in shape), operator.itemgetter(*at))
        if len(shape) <= 8:  # (a longer one: made for its certificate alone)
            _SHAPES[shape] = found
    return found


def targets_text(fp: str, listed: str, fp_json: str | None = None) -> str | None:
    """The JSON of a certificate's current targets (``listed``: each one's values as
    :meth:`lecentral.fleet.current.Split.target_json` writes them, joined by :data:`SEP`),
    joined by commas, as ``cert_json`` writes them for the certificate of fingerprint ``fp``
    (``fp_json``: its JSON, where the caller wrote it already); None if a target's values are not that. (300,000 targets a run: where no value needs
    escaping, the usual case, they are checked in one match and written in one ``%``.)"""
    if _PLAIN_TARGETS.fullmatch(listed) is not None:
        values = listed.replace(SEP, FS).split(FS)
        template, take = _shape("".join(values[_SERVED::len(RAW_FIELDS)]))
        values.append(_string(fp) if fp_json is None else fp_json)
        return template % take(values)
    texts = []
    for raw in listed.split(SEP):
        text = target_text(fp, raw)
        if text is None:
            return None
        texts.append(text)
    return ",".join(texts)


def target_text(fp: str, raw: str) -> str | None:
    """The JSON ``cert_json`` writes for a current target of the certificate of fingerprint
    ``fp`` (its installed fingerprint, and the served one if any, are ``fp``: SQL compared
    them byte for byte), from ``raw``, the target's values as
    :meth:`lecentral.fleet.current.Split.target_json` writes them; None if ``raw`` is not
    that (a separator in a value: the caller reads the target's row instead)."""
    values = raw.split(FS)
    if len(values) != len(RAW_FIELDS):
        return None
    (host, entry, installed_not_after, served, served_not_after, url, error, ts_served, ts,
     result, db_user) = values
    numbers = (installed_not_after, served_not_after, ts_served)
    texts = (url, error, result, db_user)
    if not (_DIGITS.fullmatch(ts) and served in ("0", "1")
            and all(n == "null" or _DIGITS.fullmatch(n) for n in numbers)
            and all(t == "null" or (len(t) >= 2 and t[0] == t[-1] == '"') for t in texts)):
        return None

    def number(digits: str) -> int | None:
        return None if digits == "null" else int(digits)

    def text(value: str) -> str | None:
        return None if value == "null" else value[1:-1]

    seen = None
    if served == "1":
        seen = {"fingerprint": fp, "not_after": number(served_not_after), "url": text(url),
                "error": text(error), "ts": number(ts_served)}
    return json.dumps({
        "kind": "agent", "target": f"{host} ({entry})", "host": host,
        "installed": {"fingerprint": fp, "not_after": number(installed_not_after), "url": None,
                      "error": None, "ts": int(ts)},
        "served": seen, "ts": int(ts), "state": "current", "detail": "the database's certificate",
        "result": text(result), "db_user": text(db_user)}, separators=(",", ":"))
