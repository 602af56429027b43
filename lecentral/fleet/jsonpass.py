"""``lecentral fleet --json`` in one pass over ``certs``: the document streamed, nothing held
per certificate (:mod:`lecentral.fleet.onepass`).

A plainly current row is written into the spool as ``cert_json`` writes it, with its targets
as the database wrote them in the same statement (:meth:`lecentral.fleet.current.Split.
counts_column` with ``json``): on SQLite their JSON, elsewhere their values, whose JSON
:func:`target_text` writes, as ``cert_json`` would. The held rows' JSON is written at their
places: the file is copied up to the point where a held row came in the pass, then the held
row.
"""

from __future__ import annotations

import json
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
        if self._split.raw_targets:
            listed = targets_text(fp, targets)
            if listed is None:
                return None
        else:
            listed = targets.replace(SEP, ",")
        return (f',{{"name":{_string(name)},"enabled":true,"fingerprint":{_string(fp)},'
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


#: what a plain value (written between quotes as it is) does not hold: json.dumps escapes
#: these (DEL too, as \\u007f)
_ESCAPED = re.compile(r'["\\\x00-\x1f\x7f]')
#: the same in a list of targets' values (:data:`FS` and :data:`SEP` between them)
_ESCAPED_LISTED = re.compile(r'["\\\x00-\x1b\x1d\x1e\x7f]')
#: an integer's digits as the database writes them
_DIGITS = re.compile("-?[0-9]+")
#: where the texts are among a target's values (:data:`RAW_FIELDS`)
_TEXTS = frozenset(RAW_FIELDS.index(f) for f in ("host", "entry", "served_url", "served_error",
                                                  "result", "db_user"))
#: a current target's JSON, as ``cert_json`` writes it (:func:`targets_text`)
_TARGET = ('{"kind":"agent","target":"%s (%s)","host":"%s","installed":{"fingerprint":%s,'
           '"not_after":%s,"url":null,"error":null,"ts":%s},"served":%s,"ts":%s,'
           '"state":"current","detail":"the database\'s certificate","result":%s,'
           '"db_user":%s}')
_SEEN = '{"fingerprint":%s,"not_after":%s,"url":%s,"error":%s,"ts":%s}'


def targets_text(fp: str, listed: str) -> str | None:
    """The JSON of a certificate's current targets (``listed``: each one's values as
    :meth:`lecentral.fleet.current.Split.target_json` writes them, joined by :data:`SEP`),
    joined by commas, as ``cert_json`` writes them for the certificate of fingerprint ``fp``;
    None if a target's values are not that. (300,000 targets a run: the usual ones, plain
    ASCII, are checked at once.)"""
    plain = listed.isascii() and not _ESCAPED_LISTED.search(listed)
    fp_json = _string(fp)
    texts = []
    for raw in listed.split(SEP):
        text = target_text(fp, raw, plain, fp_json)
        if text is None:
            return None
        texts.append(text)
    return ",".join(texts)


def target_text(fp: str, raw: str, plain: bool = False, fp_json: str | None = None
                ) -> str | None:
    """The JSON ``cert_json`` writes for a current target of the certificate of fingerprint
    ``fp`` (its installed fingerprint, and the served one if any, are ``fp``: SQL compared
    them byte for byte), from ``raw``, the target's values as
    :meth:`lecentral.fleet.current.Split.target_json` writes them; None if ``raw`` is not
    that (a separator in a value: the caller reads the target's row instead). ``plain``: no
    value needs escaping (the caller checked them all at once); ``fp_json``: ``fp`` in JSON."""
    values = raw.split(FS)
    if len(values) != len(RAW_FIELDS):
        return None
    # as the database writes them: numbers as their digits (``ts_reported`` not NULL: each is
    # digits or nothing if together they are digits; else, a minus sign, one by one),
    # ``served`` 0 or 1, texts ``=`` and the text or nothing (``result`` not NULL)
    (_, _, installed_not_after, served, served_not_after, url, error, ts_served, ts, result,
     db_user) = values
    numbers = installed_not_after + served_not_after + ts_served + ts
    if not (ts and ((numbers.isdigit() and numbers.isascii()) or all(
                not n or _DIGITS.fullmatch(n)
                for n in (installed_not_after, served_not_after, ts_served, ts)))
            and served in ("0", "1") and result[:1] == "="
            and not (url[:1] + error[:1] + db_user[:1]).strip("=")):
        return None
    if not plain and not all(t.isascii() and not _ESCAPED.search(t)
                             for i, t in enumerate(values) if i in _TEXTS):
        return _escaped_text(fp, values)
    return _plain_text(fp_json or _string(fp), values)


def _plain_text(fp_json: str, values: list[str]) -> str:
    """:func:`target_text` of values checked, none needing escaping (``fp_json``: the
    fingerprint in JSON)."""
    (host, entry, installed_not_after, served, served_not_after, url, error, ts_served, ts,
     result, db_user) = values
    seen = "null" if served == "0" else _SEEN % (
        fp_json, served_not_after or "null", _quoted(url), _quoted(error), ts_served or "null")
    return _TARGET % (host, entry, host, fp_json, installed_not_after or "null", ts, seen, ts,
                      _quoted(result), _quoted(db_user))


def _quoted(value: str) -> str:
    """A text value as :meth:`~lecentral.fleet.current.Split.target_json` wrote it (``=`` and
    the text, nothing for NULL) in JSON, where it needs no escaping."""
    return f'"{value[1:]}"' if value else "null"


def _escaped_text(fp: str, values: list[str]) -> str:
    """:func:`target_text` for values that need escaping (through ``json.dumps``, as
    ``cert_json``'s document is written)."""
    (host, entry, installed_not_after, served, served_not_after, url, error, ts_served, ts,
     result, db_user) = values
    url_text, error_text, result_text, user_text = (
        t[1:] if t else None for t in (url, error, result, db_user))

    def number(digits: str) -> int | None:
        return int(digits) if digits else None

    seen = None
    if served == "1":
        seen = {"fingerprint": fp, "not_after": number(served_not_after), "url": url_text,
                "error": error_text, "ts": number(ts_served)}
    return json.dumps({
        "kind": "agent", "target": f"{host} ({entry})", "host": host,
        "installed": {"fingerprint": fp, "not_after": number(installed_not_after), "url": None,
                      "error": None, "ts": int(ts)},
        "served": seen, "ts": int(ts), "state": "current", "detail": "the database's certificate",
        "result": result_text, "db_user": user_text}, separators=(",", ":"))
