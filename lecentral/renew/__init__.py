"""The renew job (the seed's download_cert.pl): pick what is due, issue it, check it, store it.

Each pass runs under the database's renew lock (so two central hosts never order the same
certificate):

1. **Due**: an enabled, valid row is due when it has no certificate yet, or its renewal time
   has come (:mod:`lecentral.window`: a third of its certificate's lifetime left, half under 10
   days; or ``renew.before`` / ``renew.before_days``), or the CA's ARI window (RFC 9773) for its
   certificate has opened; and its last attempt (``ts_last_update``) is older than
   ``renew.min_interval``. ``--force`` skips both tests. ARI can only make a renewal earlier (a
   CA announcing a mass revocation), never later than the renewal time. A whole sweep reads only
   the rows SQL cannot rule out (:mod:`lecentral.store.facts`: changed since last checked, bad,
   invalid, near their renewal time, or whose ARI window kept in the database is stale or due:
   :mod:`lecentral.renew.ari`); the others are counted not due, unread.
2. **Issue**: each due row goes to its issuer (``renew.dns01_issuer``, or ``renew.http01_issuer``
   for certbot='Y' rows), ``renew.workers`` at a time, all sharing one ACME account.
3. **Check, then save**: the certificate's key must match ``md5_modulus``, its names the CSR's, its
   chain must verify; only then one transaction saves it (old_crt/old_ca keep the previous one).
   A mismatch is refused and counted as a failure; ``crt`` stays as it was.
4. **Failures**: ``count_fail_update`` + 1, the error in the event log, the
   ``lecentral_renew_failed`` event, and a notification (an error once the count passes 2).
5. **Rounds**: unless ``once``, failed rows are retried after ``renew.retry_pause`` until they
   succeed or their count exceeds ``renew.max_failures``. Retries skip the min_interval test:
   the pause is their rate guard. The lock is held per pass, not while sleeping between rounds.
   (The library's default is rounds; the ``lecentral renew`` command does one pass unless
   ``--rounds``, so that a human's ``renew NAME`` never sleeps an hour in the foreground.)

Nothing is lost between runs (:mod:`lecentral.renew.recovery`): an issued certificate is spooled
(:mod:`lecentral.renew.spool`) before it is saved, and the next run saves it without a new order; a
challenge record an issuer could not remove (:mod:`lecentral.leftovers`) is stored, shown and
alerted, makes the run exit non-zero, and is removed at the start of every later run until gone.

The package, by responsibility: :mod:`~lecentral.renew.outcome` (the request and the report),
:mod:`~lecentral.renew.checks` (due? fit?), :mod:`~lecentral.renew.job` (the passes and rounds),
:mod:`~lecentral.renew.recovery` and :mod:`~lecentral.renew.cleanup` (what earlier runs left),
:mod:`~lecentral.renew.spool`, :mod:`~lecentral.renew.context` (what they share).
"""

from __future__ import annotations

from lecentral.renew.checks import DAY, ari_due_at, check_issued, check_row, due_reason
from lecentral.renew.job import RenewJob
from lecentral.renew.outcome import FAILED, Outcome, Progress, RenewReport, RenewRequest

__all__ = ["DAY", "FAILED", "Outcome", "Progress", "RenewJob", "RenewReport", "RenewRequest",
           "ari_due_at", "check_issued", "check_row", "due_reason"]
