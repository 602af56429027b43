"""``lecentral metrics`` in one pass over ``certs``: nothing held per certificate.

At 100,000 certificates × 3 hosts the view of every certificate (a row, a ``CertFleet``, its
listed targets: ~1.4 KB each) was what made ``metrics`` grow with the fleet (280 MiB). Here the
snapshot's own pass (:meth:`lecentral.fleet.store.FleetStore.snapshot`, ``taker``) hands every
``certs`` row to :class:`MetricsPass` first, which writes that row's samples of the
per-certificate families and its counted current targets into temporary files (one per family:
the text format groups a family's samples under its HELP and TYPE lines), and keeps the row out
of the snapshot when it is *plainly current*: every sample it contributes is then written, and
the judge would say ``current`` with no target of its own to list. The other rows (failing,
stale, silent, probed, odd names, no facts: ~2 % here) are held and judged by
:mod:`lecentral.fleet.states` as before. :func:`write_spooled` then writes the document in the
order :func:`lecentral.fleet.metrics.write_exposition` writes it for the whole view, copying the
files at their places.

Plainly current, decided here in Python from the pass's columns (SQL's part is
:meth:`lecentral.fleet.current.Split.counts_column`): the row is enabled, its fingerprint is the
one SQL compared its deployments against, it has deployments and SQL calls every one of them
current (and listed exactly that many), no probe result has its exact name, and its name is its
own lower-case key. What a single row cannot tell (another row, deployment or probe the judge
files under the same key) is checked after the pass; if anything could differ from the judge's
view, the pass is *abandoned*: the files are dropped and ``metrics`` is computed as before
(the split view with listing), never written half one way and half the other.

The files are anonymous temporary files in ``$TMPDIR`` (``tempfile.TemporaryFile``: unlinked as
soon as they are made, so they go on every path, an error, Ctrl-C or a kill included). A
``$TMPDIR`` that is set is used as it is (:func:`lecentral.fleet.tempfiles.temp_dir`): missing, unwritable or full, it is
the command's error, never silently replaced by ``/tmp``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, Self

from lecentral.fleet.current import SEP, Split
from lecentral.fleet.metrics import (
    PER_CERT_DOCS,
    SPOOLED_CURRENT,
    Write,
    _esc,
    _family,
    _go,
    _shown,
    _write_the_rest,
    crt_expiry,
)
from lecentral.fleet.states import _count, _int
from lecentral.fleet.tempfiles import append, discard, temp_dir, temp_error

if TYPE_CHECKING:
    from lecentral.fleet.model import FleetView
    from lecentral.journal import JournalSurvey
    from lecentral.leftovers import Leftover

#: the spooled families, in the document's order (the per-certificate ones, then the current
#: deployments SQL listed)
EXPIRY, LIFETIME, FAILURES, LAST_ATTEMPT, TS_EXPIRE = range(len(PER_CERT_DOCS))
CURRENT_LISTED = SPOOLED_CURRENT
#: one temporary file per spooled family
SPOOLED = SPOOLED_CURRENT + 1
_PREFIXES = tuple(name for name, _ in PER_CERT_DOCS)
#: the snapshot's columns this pass reads, in the order it unpacks them
COLUMNS = ("name", "enable", "crt", "cached_fp", "md5_modulus", "ts_expire", "ts_last_update",
           "count_fail_update", "certbot", "csr_length", "hint_fp", "fleet_counts", "probed",
           "facts_not_after", "facts_not_before")
#: rows between two writes of the collected lines into the files
FLUSH_EVERY = 4096


class MetricsPass:
    """The ``taker`` of a metrics snapshot: see the module's docstring."""

    def __init__(self) -> None:
        self._files: list[IO[str]] = []
        self._parts: list[list[str]] = [[] for _ in range(SPOOLED)]
        self._pending = 0
        #: certificates kept out of the snapshot (plainly current)
        self.taken = 0
        self.wants = ""
        #: held rows whose counted targets this pass wrote (account() must list the same)
        self.listed_held: set[str] = set()
        #: lower-case keys of the held rows (two rows of one key: the judge shows one)
        self._held_keys: set[str] = set()
        #: why the pass cannot stand for the judge's view (then: computed as before)
        self.abandoned: str | None = None
        self._split = Split("", 0)
        #: the lifetime of a certificate whose row does not tell it (check's rule: its crt)
        self._parse: Callable[[bytes, str], int | None] = _lifetime_of_pem
        try:
            for _ in range(SPOOLED):
                self._files.append(tempfile.TemporaryFile(  # noqa: SIM115 - closed by close()
                    "w+", encoding="utf-8", newline="\n", prefix="lecentral-metrics-",
                    dir=temp_dir()))
        except OSError as exc:
            self.close()
            raise temp_error(exc) from None
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close (and so remove) the files. What their buffers still held is dropped: a full
        disk failing that last write must not hide the error the command is already raising."""
        for f in self._files:
            discard(f)
        self._files = []

    def start(self, keys: Sequence[str], split: Split) -> None:
        """The pass's columns, checked once (the snapshot adds ``probed`` for this pass), and
        its split (an aggregate the database may have cut is not trusted)."""
        self._split = split
        if tuple(keys) != COLUMNS:
            raise AssertionError(f"the metrics pass expects the columns {COLUMNS}, not {keys}")

    def abandon(self, why: str) -> None:
        self.abandoned = self.abandoned or why

    def twin(self) -> Self:
        """Another pass with files of its own, for the rows of ``certs`` a forked process
        reads (:mod:`lecentral.fleet.halves`)."""
        return type(self)()

    def handoff(self) -> dict[str, Any]:
        """In that process, after its rows: the samples written into the files, what else
        the pass learned (for :meth:`merge`)."""
        self.flush()
        for f in self._files:
            try:
                f.flush()
            except OSError as exc:
                raise temp_error(exc) from None
        return {"taken": self.taken, "listed_held": self.listed_held,
                "held_keys": self._held_keys, "abandoned": self.abandoned}

    def merge(self, twin: Self, state: dict[str, Any]) -> None:
        """After this pass's own rows: each of ``twin``'s files appended to this one's of
        the same family, and what it learned (``state``: its :meth:`handoff`), as if this
        pass had read its rows."""
        self.flush()
        for mine, theirs in zip(self._files, twin._files, strict=True):
            append(mine, theirs)
        self.listed_held |= state["listed_held"]
        self._held_keys = merged(self, self._held_keys, state)

    def take(self, row: Any, fp: str | None) -> bool:
        """Write ``row``'s samples; True if it is plainly current (the snapshot then drops
        it), False to hold it for the judge. ``fp``: its fingerprint, as the snapshot found it.
        (100,000 calls a run: kept flat, with the number formatting inline.)"""
        (name, enable, crt, _, _, expire, update, fails, _, _, hint, counts, probed,
         crt_not_after, crt_not_before) = row
        if type(name) is not str:
            name = str(name)
        enabled = enable == "Y" or str(enable or "").upper() == "Y"
        # CertFleet's values (lecentral.fleet.states.compute)
        if not (type(expire) is int and expire):
            expire = _int(expire)
        if not (type(update) is int and update):
            update = _int(update)
        fails = fails if type(fails) is int else _count(fails)
        parts = self._parts
        esc = name if _plain_label(name) else _esc(name)
        if enabled:
            # a ts_expire that is not (or does not tell) the crt's notAfter, where the facts
            # describe this crt: the crt's values (a wrong ts_expire in a family of its own)
            truth = (crt_expiry(expire, crt_not_after, crt_not_before)
                     if crt_not_after is not None and fp and fp == hint else None)
            lifetime: int | None = None
            if truth is not None:
                if expire and expire > 1:
                    parts[TS_EXPIRE].append(f'{esc}"}} {_number(expire)}\n')
                parts[EXPIRY].append(f'{esc}"}} {_number(truth[0])}\n')
                lifetime = truth[1]
            elif expire and expire > 1 and fp:
                parts[EXPIRY].append(f'{esc}"}} {_number(expire)}\n')
                issued = update or 0
                if fails == 0 and 1 < issued < expire:
                    lifetime = expire - issued
                elif crt:
                    lifetime = self._parse(bytes(crt), name)
                else:  # the crt was not sent (fingerprint from the facts): read by name
                    self.abandon(f"the crt of {name} was not read")
            if lifetime is not None:
                parts[LIFETIME].append(f'{esc}"}} {_number(lifetime)}\n')
            parts[FAILURES].append(f'{esc}"}} {_number(fails)}\n')
            if update and update > 1:
                parts[LAST_ATTEMPT].append(f'{esc}"}} {_number(update)}\n')
        plain = False
        if counts:
            # what Split.account decides for a row that is the judge's row for its name
            total, _, rest = str(counts).partition(":")
            current_text, _, listed = rest.partition(":")
            current = int(current_text)
            # (the escaping leaves SEP alone)
            if (current and hint is not None and fp == hint and enabled
                    and listed.count(SEP) + 1 == current and not self._split.cut(listed)):
                prefix = f'lecentral_deployment_current{{name="{esc}",target="'
                if not _plain_label(listed):
                    listed = _esc(listed)
                parts[CURRENT_LISTED].append(
                    prefix + ('"} 1.0\n' + prefix).join(listed.split(SEP)) + '"} 1.0\n')
                plain = (current == int(total) and not self._split.is_probed(name, probed)
                         and name == name.lower().rstrip("."))
                if not plain:
                    self.listed_held.add(name)
        if plain:
            self.taken += 1
        else:
            key = name.lower().rstrip(".")
            if key in self._held_keys:
                self.abandon(f"two rows named {name} (case or a final dot differs)")
            self._held_keys.add(key)
        self._pending += 1
        if self._pending >= FLUSH_EVERY:
            self.flush()
        return plain

    def flush(self) -> None:
        """Write the collected lines into the files."""
        for f, part in zip(self._files, self._parts, strict=True):
            if part:
                try:
                    f.write("".join(part))
                except OSError as exc:
                    raise temp_error(exc) from None
                part.clear()
        self._pending = 0

    def copy(self, family: int, write: Write) -> None:
        """Write one family's spooled samples through ``write`` (after the pass)."""
        self.flush()
        f = self._files[family]
        prefix = _PREFIXES[family] + '{name="' if family < CURRENT_LISTED else ""
        try:
            f.flush()
            f.seek(0)
        except OSError as exc:
            raise temp_error(exc) from None
        while True:
            try:  # (an error of ``write`` is the caller's: not caught here)
                if prefix:  # the per-certificate lines were spooled without their family name
                    lines = f.readlines(1 << 20)
                    text = prefix + prefix.join(lines) if lines else ""
                else:
                    text = f.read(1 << 20)
            except OSError as exc:
                raise temp_error(exc) from None
            if not text:
                return
            write(text)


def spool_fits(view: FleetView, spooled: MetricsPass,
               listed_held: Mapping[str, Sequence[str]]) -> bool:
    """True if :func:`write_spooled` writes for ``view`` (a split view of the rows ``spooled``
    held; ``listed_held``: the current targets it listed for them) the document
    :func:`write_exposition` writes for the whole split view: the spool was not abandoned,
    the held rows' listed targets are the ones it spooled, and no row or target is shown twice
    (otherwise the caller computes the document as before)."""
    shown, managed = _shown(view)
    shown_agents = {(c.name, t.target) for c in managed for t in c.targets if t.kind == "agent"}
    return not (spooled.abandoned or not view.split or len(shown) != len(view.certs)
                or set(listed_held) != spooled.listed_held
                or any(t in listed_held.get(n, ()) for n, t in shown_agents))


def write_spooled(write: Write, view: FleetView, leftovers: Sequence[Leftover],
                  spooled: MetricsPass, journals: JournalSurvey | None = None,
                  ari_failing: tuple[int, int | None] | None = None) -> None:
    """The document :func:`write_exposition` writes for the whole split view (with listing),
    from ``view`` (the rows ``spooled`` held, judged) and the samples it spooled for every row
    (:mod:`lecentral.fleet.spool`); only where :func:`spool_fits`."""
    shown, managed = _shown(view)
    for family, (name, doc) in enumerate(PER_CERT_DOCS):
        _family(write, name, doc)
        spooled.copy(family, write)

    def listed(_: set[tuple[str, str]]) -> None:
        spooled.copy(SPOOLED_CURRENT, write)

    _write_the_rest(write, view, shown, managed, leftovers, listed, spooled.taken, journals,
                    ari_failing)


def merged(taker: Any, held_keys: set[str], state: dict[str, Any]) -> set[str]:
    """What every pass's :meth:`~MetricsPass.merge` does alike: ``taker``'s count of rows
    taken and its reason to give up, from its twin's ``state``; the held rows' keys of both
    (a key held in each half: two rows the judge files under one key, given up)."""
    taker.taken += state["taken"]
    both = held_keys & state["held_keys"]
    if both:
        taker.abandon(f"two rows named {min(both)} (case or a final dot differs)")
    if state["abandoned"]:
        taker.abandon(state["abandoned"])
    theirs: set[str] = state["held_keys"]
    return held_keys | theirs


def _plain_label(value: str) -> bool:
    """True if ``value`` needs no escaping as a label value (no backslash, newline or quote)."""
    return "\\" not in value and "\n" not in value and '"' not in value


def _number(value: int) -> str:
    """``_go(value)`` of an integer (a timestamp, a count), in fewer steps."""
    if -10**15 < value < 10**6:
        return f"{value}.0"
    if 10**6 <= value < 10**15:
        digits = str(value)
        mantissa = digits.rstrip("0")
        exponent = len(digits) - 1
        if len(mantissa) == 1:
            return f"{mantissa}e+{exponent:02d}"
        return f"{mantissa[0]}.{mantissa[1:]}e+{exponent:02d}"
    return _go(value)


def _lifetime_of_pem(pem: bytes, name: str) -> int | None:
    """notAfter - notBefore of ``pem`` as :func:`lecentral.fleet.nagios.lifetimes` reads it."""
    from lecentral.certificates import Certificate
    from lecentral.errors import CsrError

    try:
        leaf = Certificate.load(pem, f"the crt column of {name}")
    except CsrError:
        return None
    return leaf.not_after - leaf.not_before if leaf.not_after > leaf.not_before else None
