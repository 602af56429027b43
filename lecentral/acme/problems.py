"""Turning what the acme library and requests raise into IssueErrors a sysadmin can act on.

An ACME problem document (RFC 8555 §6.7) becomes :class:`AcmeProblem` carrying its type, detail
and subproblems (one per name, e.g. which identifier failed validation and why); ``rateLimited``
also carries the time to retry, from the response's Retry-After. Network failures name the
directory URL and what to check.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator
from email.utils import parsedate_to_datetime

from lecentral.errors import IssueError

ACME_ERROR_PREFIX = "urn:ietf:params:acme:error:"

#: what to do next, by ACME error code
_ADVICE = {
    "rateLimited": "the CA's rate limit was hit; wait until the retry time (lecentral renew "
                   "does not retry before renew.min_interval)",
    "badCSR": "the CSR in the database was refused; make a new key and CSR on the server and "
              "lecentral set-csr NAME FILE",
    "rejectedIdentifier": "the CA will not issue for one of the names; remove it from the CSR",
    "unauthorized": "the CA refused the account or a name; check [acme] and the names' DNS",
    "externalAccountRequired": "this CA needs External Account Binding: set [acme] eab_kid "
                               "and eab_hmac_key",
    "userActionRequired": "the CA wants a human to act (new terms of service?); see its detail",
    "accountDoesNotExist": "the account behind [acme] account_key is gone; move the key "
                           "aside so that a new account is registered",
    "dns": "the CA could not resolve the validation record; check the delegation with "
           "lecentral dns check NAME",
    "incorrectResponse": "the CA saw another TXT value; check that no other system updates "
                         "_acme-challenge records of this name",
    "caa": "a CAA record forbids this CA for the name; fix the CAA record",
    "connection": "the CA could not reach the server that answers for the name",
}


#: problem codes that are the CA's, not ours: another CA of ``[[acme.ca]]`` may issue in the same
#: run (a ``badNonce`` reaches here only after SafeNetwork's retries). Everything else (``dns``,
#: ``connection``, ``unauthorized``, ``incorrectResponse``, ``caa``, ``badCSR``,
#: ``rejectedIdentifier``...) says something about our names, DNS, CSR or policy, which another CA
#: would see the same way: it is not retried elsewhere.
CA_FAULT_CODES = frozenset({"serverInternal", "rateLimited", "badNonce"})


class CaFailure(IssueError):
    """A failure that is the CA's: unreachable, timed out, TLS, an HTTP 5xx without a problem
    document, an answer that is not ACME. The next CA of ``[[acme.ca]]`` is tried."""


def is_ca_fault(exc: BaseException) -> bool:
    """True if ``exc`` is the CA's fault (see :data:`CA_FAULT_CODES`, :class:`CaFailure`)."""
    if isinstance(exc, AcmeProblem):
        return exc.code in CA_FAULT_CODES
    return isinstance(exc, CaFailure)


class AcmeProblem(IssueError):
    """The CA answered with a problem document."""

    def __init__(self, message: str, *, typ: str, detail: str, subproblems: list[str],
                 retry_at: datetime.datetime | None) -> None:
        super().__init__(message)
        self.typ = typ
        self.detail = detail
        self.subproblems = subproblems
        self.retry_at = retry_at

    @property
    def code(self) -> str:
        """The type without its ``urn:ietf:params:acme:error:`` prefix."""
        return self.typ.removeprefix(ACME_ERROR_PREFIX)


def parse_retry_after(value: str | None, now: datetime.datetime | None = None
                      ) -> datetime.datetime | None:
    """A Retry-After header (seconds or HTTP date) as an aware UTC datetime; None if absent/bad."""
    if not value:
        return None
    now = now or datetime.datetime.now(datetime.UTC)
    value = value.strip()
    if value.isdigit():
        return now + datetime.timedelta(seconds=int(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def _one_line(problem: object) -> str:
    typ = str(getattr(problem, "typ", "") or "").removeprefix(ACME_ERROR_PREFIX)
    detail = " ".join(str(getattr(problem, "detail", "") or "").split())
    ident = getattr(problem, "identifier", None)
    who = f"{ident.value}: " if ident is not None and getattr(ident, "value", None) else ""
    return f"{who}{typ}: {detail}" if detail else f"{who}{typ}"


def problem_error(problem: object, what: str) -> AcmeProblem:
    """An :class:`AcmeProblem` from an ``acme.messages.Error``; ``what`` says which step failed."""
    typ = str(getattr(problem, "typ", "about:blank"))
    code = typ.removeprefix(ACME_ERROR_PREFIX)
    detail = " ".join(str(getattr(problem, "detail", "") or "").split())
    subs = [_one_line(p) for p in (getattr(problem, "subproblems", None) or ())]
    retry_at = parse_retry_after(getattr(problem, "retry_after", None))
    text = f"{what}: the CA answered {code}"
    if detail:
        text += f": {detail}"
    if subs:
        text += " [" + "; ".join(subs) + "]"
    if code == "rateLimited":
        text += (f"; retry after {retry_at:%Y-%m-%d %H:%M:%S} UTC" if retry_at
                 else "; the CA gave no retry time")
    advice = _ADVICE.get(code)
    if advice:
        text += f" ({advice})"
    return AcmeProblem(text, typ=typ, detail=detail, subproblems=subs, retry_at=retry_at)


@contextlib.contextmanager
def acme_errors(what: str, directory: str) -> Iterator[None]:
    """Translate acme/requests exceptions raised inside the block into IssueErrors.

    ``what`` names the step ("creating the order for www.example.com"); ``directory`` is the
    ``[acme] directory`` URL, named in network errors.
    """
    import requests
    from acme import errors as acme_lib_errors
    from acme import messages

    try:
        yield
    except IssueError:
        raise
    except messages.Error as problem:
        raise problem_error(problem, what) from None
    except requests.exceptions.SSLError as exc:
        raise CaFailure(
            f"{what}: TLS to the ACME server {directory} failed ({_short(exc)}); for a private CA "
            "set [acme] ca_bundle to its root certificate"
        ) from None
    except requests.exceptions.RequestException as exc:
        raise CaFailure(
            f"{what}: cannot reach the ACME server {directory} ({_short(exc)}); check [acme] "
            "directory and the network"
        ) from None
    except acme_lib_errors.ClientError as exc:
        status = _status(exc)
        if status is not None and status >= 500:  # a proxy's or CA's error page, not a problem
            raise CaFailure(f"{what}: the ACME server {directory} answered HTTP {status} without "
                            "a problem document (the CA's side is failing)") from None
        raise IssueError(f"{what}: ACME protocol error: {_short(exc)}") from None
    except acme_lib_errors.Error as exc:
        raise IssueError(f"{what}: ACME protocol error: {_short(exc)}") from None
    except ValueError as exc:  # a CA sending non-JSON where JSON was due
        raise CaFailure(f"{what}: unexpected answer from {directory}: {_short(exc)}") from None


def _status(exc: BaseException) -> int | None:
    """The HTTP status of the response an acme ``ClientError`` carries, if any."""
    import requests

    arg = exc.args[0] if exc.args else None
    if isinstance(arg, tuple) and arg:
        arg = arg[0]
    return arg.status_code if isinstance(arg, requests.Response) else None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]
