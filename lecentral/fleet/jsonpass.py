"""``lecentral fleet --json`` in one pass over ``certs``: the document streamed, nothing held
per certificate (:mod:`lecentral.fleet.onepass`).

A plainly current row is written into the spool as ``cert_json`` writes it, with its targets'
JSON written by the database in the same statement (:meth:`lecentral.fleet.current.Split.
counts_column` with ``json``): the same text :meth:`~lecentral.fleet.current.Split.current_json`
reads. The held rows' JSON is written at their places: the file is copied up to the point
where a held row came in the pass, then the held row.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from lecentral.fleet.current import SEP
from lecentral.fleet.onepass import OnePass
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
        return (f',{{"name":{_string(name)},"enabled":true,"fingerprint":{_string(fp)},'
                f'"ts_expire":{"null" if expire is None else expire},'
                f'"ts_last_update":{"null" if update is None else update},'
                f'"count_fail_update":{fails if type(fails) is int else _count(fails)},"state":"current",'
                f'"targets":[{targets.replace(SEP, ",")}]}}')

    def write(self, write: Callable[[str], object], held: Iterable[str]) -> None:
        """The certificates of the document (after its ``"certs":[``), joined by commas:
        the file's text in order, each of ``held`` (the held rows' JSON, in the pass's
        order) at its place."""
        first = True

        def copy(end: int | None) -> None:
            nonlocal first
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
