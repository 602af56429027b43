"""The renewal window: when a stored certificate becomes due, and why, from its own lifetime.

Certificates no longer all live 90 days (Let's Encrypt: 64 days from 2027-02-10, then 45; its
``shortlived`` profile 6 days; private CAs hours). A fixed "30 days before" is always true for
all of those, so every run would reissue them. The default rule is the one certbot 4 and Let's
Encrypt recommend: renew when a third of the lifetime is left, or half when the lifetime is under
10 days. The lifetime is notAfter - notBefore of the stored certificate itself (no other column
says it reliably: ``ts_last_update`` is also the last failed attempt), both ends included.

Precedence (``[renew]``): ``before_days`` > 0 is the absolute override (days before notAfter,
as lecentral always did); otherwise ``before``: ``auto`` (the rule above), a fraction of the
lifetime (``"1/3"``, ``"50%"``) or a duration before notAfter (``"36h"``). Setting both is a
configuration error. ARI (RFC 9773) can only make a renewal earlier than this; the renew job
asks it, :func:`renew_at` does not (it is pure and offline, for ``list``/``show`` too).

Pure: nothing here reads the database or the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lecentral.config import AUTO, before_fraction, parse_duration

if TYPE_CHECKING:
    from lecentral.config import RenewConfig

DAY = 86400
HOUR = 3600
#: under this lifetime ``auto`` renews at half of it instead of a third (certbot 4's rule)
SHORT_LIFETIME = 10 * DAY
#: no sensible ``min_interval`` is longer than this, whatever the lifetimes (6-day certificates)
MAX_SENSIBLE_MIN_INTERVAL = DAY
#: nor longer than this share of the shortest lifetime: with ``auto`` (half of a short lifetime
#: left) a failed attempt still leaves room for another before the certificate's last quarter
MIN_INTERVAL_SHARE = 4


@dataclass(frozen=True)
class Window:
    """``at``: the Unix time the certificate becomes due; ``reason``: why then, for people
    (``1/3 of its 64-day lifetime left``); ``rule``: ``fraction``, ``duration`` or ``before_days``."""

    at: int
    reason: str
    rule: str


def span(seconds: int) -> str:
    """A lifetime or a time left, as people say it: ``64-day``-style units, whole numbers."""
    seconds = max(seconds, 0)
    if seconds >= 2 * DAY:
        return f"{round(seconds / DAY)} days"
    if seconds >= 2 * HOUR:
        return f"{round(seconds / HOUR)} hours"
    return f"{round(seconds / 60)} minutes"


def _lifetime(seconds: int) -> str:
    number, unit = span(seconds).split()
    return f"{number}-{unit.rstrip('s')}"


def _fraction_name(text: str, value: float) -> str:
    return {0.5: "half", 1 / 3: "1/3", 0.25: "1/4"}.get(value, text)


def lifetime_of(not_before: int, not_after: int) -> int:
    """Seconds a certificate is valid: both ends count (RFC 5280 §4.1.2.5), so Let's Encrypt's
    "90-day" certificate, notAfter - notBefore = 90 days - 1 s, lives exactly 90 days."""
    return max(not_after - not_before + 1, 0)


def renew_at(not_before: int, not_after: int, renew: RenewConfig) -> Window:
    """When a certificate valid from ``not_before`` to ``not_after`` becomes due under ``renew``
    (``renew.before`` was checked when the configuration loaded)."""
    lifetime = lifetime_of(not_before, not_after)
    if renew.before_days > 0:
        return Window(not_after - renew.before_days * DAY,
                      f"{renew.before_days} days before it expires (renew.before_days)",
                      "before_days")
    before = renew.before.strip().lower()
    if before == AUTO:
        fraction = 0.5 if lifetime < SHORT_LIFETIME else 1 / 3
        text = "1/2" if fraction == 0.5 else "1/3"
    elif "/" in before or before.endswith("%"):
        fraction, text = before_fraction(before), before
    else:
        seconds = parse_duration(before, "renew.before", "configuration")
        return Window(not_after - seconds, f"{span(seconds)} before it expires "
                      f"(renew.before \"{renew.before}\")", "duration")
    return Window(not_after - int(fraction * lifetime),
                  f"{_fraction_name(text, fraction)} of its {_lifetime(lifetime)} lifetime left",
                  "fraction")


def window_warnings(renew: RenewConfig, shortest_lifetime: int | None) -> list[str]:
    """What in ``[renew]`` does not fit short-lived certificates: ``min_interval`` above a day
    (always) or above 1/4 of ``shortest_lifetime`` (the shortest stored certificate's, when
    known); an absolute ``before``/``before_days`` at least that lifetime (always due)."""
    warnings = []
    if renew.min_interval > MAX_SENSIBLE_MIN_INTERVAL:
        warnings.append(
            f"renew.min_interval {renew.min_interval} s is more than a day: a 6-day certificate "
            "(Let's Encrypt's shortlived profile) whose renewal fails would wait that long for the "
            "next attempt; keep it at most 86400 (the default 3600)")
    if shortest_lifetime is None or shortest_lifetime <= 0:
        return warnings
    share = shortest_lifetime // MIN_INTERVAL_SHARE
    if share < renew.min_interval <= MAX_SENSIBLE_MIN_INTERVAL:
        warnings.append(
            f"renew.min_interval {renew.min_interval} s is more than 1/{MIN_INTERVAL_SHARE} of the "
            f"shortest certificate lifetime in the database ({span(shortest_lifetime)}): a failed "
            f"renewal could wait into its last quarter; set it to at most {share} s")
    window = renew_at(0, shortest_lifetime - 1, renew)
    if window.rule != "fraction" and window.at <= 0:
        setting = (f"renew.before_days = {renew.before_days}" if window.rule == "before_days"
                   else f"renew.before = \"{renew.before}\"")
        warnings.append(
            f"{setting} is at least the shortest certificate lifetime in the database "
            f"({span(shortest_lifetime)}): such a certificate is due as soon as it is issued, and "
            "is reissued at every run once renew.min_interval has passed; use renew.before = "
            "\"auto\" or a fraction")
    return warnings
