"""One ACME account and its connection, shared by every renew worker of a process.

:class:`AcmeClient` wraps ``acme.client.ClientV2`` with the steps an issuer needs: order the names
of a CSR, list the challenges still to be answered, answer them, wait for the authorizations,
finalize and download the chain, and read ACME Renewal Information (RFC 9773). Every POST goes
through :class:`~lecentral.acme.network.SafeNetwork` (locked nonce pool, bounded badNonce retries);
every poll waits at least as long as the CA's Retry-After asks; every failure is an IssueError
naming the step, the names and what to do.

The account is registered (or found again: newAccount with an existing key returns it) once, before
any worker starts, so the account URL the JWS headers carry never changes under a worker. A key
with an account record beside it (``<account_key>.json``, written by ``lecentral account
import``) is not registered at all: the recorded account URL is used as it is.
"""

from __future__ import annotations

import base64
import datetime
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lecentral import __version__
from lecentral.acme.problems import acme_errors, problem_error
from lecentral.errors import ConfigError, IssueError

if TYPE_CHECKING:
    import requests
    from acme import messages
    from acme.client import ClientV2

    from lecentral.acme.account import AccountKey
    from lecentral.acme.orders import OrderOptions
    from lecentral.config import AcmeConfig

log = logging.getLogger(__name__)

UTC = datetime.UTC

#: seconds between an answer saying "processing" (finalize, a challenge) and the first poll, when
#: the CA sends no Retry-After: a local CA is done within milliseconds, a busy one says how long
ANSWER_DELAY = 0.01


@dataclass(frozen=True)
class PendingChallenge:
    """A challenge to fulfil: the name it proves, and what to publish for it."""

    name: str          # the identifier's domain; for a wildcard order, the name without "*."
    wildcard: bool
    typ: str           # "dns-01", "http-01"
    validation: str    # the TXT value (dns-01) or key authorization (http-01)
    token: str
    challb: Any        # acme.messages.ChallengeBody, handed back to answer()
    authz_uri: str


@dataclass(frozen=True)
class RenewalWindow:
    """The CA's suggested renewal window for one certificate (RFC 9773)."""

    start: datetime.datetime
    end: datetime.datetime
    explanation: str | None = None


class AcmeClient:
    """The ACME account behind ``[acme]``, registered and ready; thread-safe for issuing."""

    def __init__(self, config: AcmeConfig, *, workers: int = 8) -> None:
        from acme.client import ClientV2

        from lecentral.acme.account import load_or_create
        from lecentral.acme.network import SafeNetwork

        self.config = config
        self.directory_url = config.directory
        self.poll_timeout = config.poll_timeout
        self.key: AccountKey = load_or_create(config.account_key)
        verify: bool | str = config.ca_bundle or True
        self.net = SafeNetwork(self.key.jwk, alg=self.key.alg, verify=verify,
                               user_agent=f"lecentral/{__version__}", pool_size=workers + 2)
        with acme_errors("reading the ACME directory", self.directory_url):
            directory = ClientV2.get_directory(self.directory_url, self.net)
        self.acme: ClientV2 = ClientV2(directory, self.net)
        self.account_uri = self._register()

    # -- account ---------------------------------------------------------------------------------

    def _register(self) -> str:
        from acme import errors, messages

        from lecentral.acme.account import record_for

        record = record_for(self.key, self.directory_url)
        if record is not None:
            # an imported (or known) account: used as it is, no newAccount, so an EAB-bound
            # account needs no EAB credentials here and the CA sees no registration
            self.net.account = messages.RegistrationResource(uri=record.url,
                                                             body=messages.Registration())
            log.info("ACME account %s at %s (from %s.json)", record.url, self.directory_url,
                     self.key.path)
            return record.url
        eab = None
        if self.config.eab_kid or self.config.eab_hmac_key:
            if not (self.config.eab_kid and self.config.eab_hmac_key):
                raise ConfigError("[acme] eab_kid and eab_hmac_key go together; set both or neither")
            try:
                eab = messages.ExternalAccountBinding.from_data(
                    account_public_key=self.key.jwk.public_key(), kid=self.config.eab_kid,
                    hmac_key=self.config.eab_hmac_key, directory=self.acme.directory)
            except (ValueError, TypeError):
                # never echo the value: it is the shared secret
                raise ConfigError("[acme] eab_hmac_key is not valid base64url; copy it exactly as "
                                  "the CA gave it") from None
        elif self.acme.external_account_required():
            raise ConfigError(f"the CA at {self.directory_url} requires External Account Binding: "
                              "set [acme] eab_kid and eab_hmac_key from the CA's account page")
        reg = messages.NewRegistration.from_data(
            email=self.config.email or None, terms_of_service_agreed=True,
            external_account_binding=eab)
        with acme_errors(f"registering the ACME account of {self.key.path}", self.directory_url):
            try:
                regr = self.acme.new_account(reg)
            except errors.ConflictError as conflict:
                # the key already has an account: use it (newAccount returned its URL)
                uri = conflict.location
                regr = messages.RegistrationResource(uri=uri, body=messages.Registration())
                self.net.account = regr
        log.info("ACME account %s at %s", regr.uri, self.directory_url)
        return str(regr.uri)

    # -- orders ----------------------------------------------------------------------------------

    def new_order(self, csr_pem: bytes, names: list[str],
                  options: OrderOptions | None = None) -> messages.OrderResource:
        """Create the order for every name of ``csr_pem``.

        ``options`` (by default those the renew job set for this thread, see
        :mod:`lecentral.acme.orders`) add the ACME profile, checked against the directory's
        ``meta.profiles``, and the ARI certID the order ``replaces`` (only to a CA offering
        ``renewalInfo``). A CA rejecting ``replaces`` gets the order once more without it.
        """
        from acme import messages

        from lecentral.acme.orders import (
            OrderOptions,
            chosen_profile,
            current_options,
            rejects_replaces,
        )

        options = options or current_options() or OrderOptions(profile=self.config.profile or None)
        profile = chosen_profile(options.profile, self.offered_profiles, self.directory_url,
                                 options.profile_source)
        if options.profile and profile is None:  # asked for, and not applied: said loudly
            log.warning("the CA at %s offers no ACME profiles: ordering %s without %s %r",
                     self.directory_url, ", ".join(names), options.profile_source, options.profile)
        replaces = options.replaces if self.offers_ari else None
        what = f"creating the order for {', '.join(names)}"
        with acme_errors(what, self.directory_url):
            try:
                return self._order(csr_pem, profile, replaces)
            except messages.Error as problem:
                if replaces is None:
                    raise
                rejected = problem_error(problem, what)
                if not rejects_replaces(rejected.code, rejected.detail):
                    raise
        log.warning("%s: the CA rejected replaces=%s (%s: %s); ordering once more without it (no "
                    "rate-limit exemption for this renewal)", ", ".join(names), replaces,
                    rejected.code, rejected.detail[:200])
        with acme_errors(what + " (without replaces)", self.directory_url):
            return self._order(csr_pem, profile, None)

    def _order(self, csr_pem: bytes, profile: str | None,
               replaces: str | None) -> messages.OrderResource:
        """ClientV2.new_order, with the ``replaces`` field its NewOrder lacks."""
        from acme import messages
        from cryptography import x509

        from lecentral.acme.orders import NewOrderWithReplaces
        from lecentral.certificates import Csr, is_ip

        # the names as certbot and Let's Encrypt read them: the CN (kept when it is not among the
        # SANs, or when there are none) then the SANs, de-duplicated case-insensitively, an IP
        # address CN as an IP identifier (certbot's get_identifiers_from_x509 orders it as "dns")
        names = Csr(x509.load_pem_x509_csr(csr_pem)).names
        identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value=name)
                       for name in names if not is_ip(name)]
        identifiers += [messages.Identifier(typ=messages.IDENTIFIER_IP, value=name)
                        for name in names if is_ip(name)]
        order = NewOrderWithReplaces(identifiers=identifiers, profile=profile, replaces=replaces)
        response = self.acme._post(self.acme.directory["newOrder"], order)
        body = messages.Order.from_json(response.json())
        authorizations = [self.acme._authzr_from_response(self.acme._post_as_get(url), uri=url)
                          for url in body.authorizations]
        return messages.OrderResource(body=body, uri=response.headers.get("Location"),
                                      authorizations=authorizations, csr_pem=csr_pem)

    @property
    def offered_profiles(self) -> dict[str, str]:
        """The directory's ``meta.profiles`` (name -> description); empty if it has none."""
        try:
            profiles = self.acme.directory.meta.profiles
        except (AttributeError, KeyError):
            return {}
        if not isinstance(profiles, Mapping):  # josepy decodes it as a frozendict
            return {}
        return {str(k): str(v) for k, v in profiles.items()}

    def pending_challenges(self, order: messages.OrderResource, typ: str) -> list[PendingChallenge]:
        """The ``typ`` challenges of the order's authorizations that are not valid yet.

        Authorizations the CA already holds as valid (authorization reuse) need nothing.
        """
        from acme import messages

        found: list[PendingChallenge] = []
        for authzr in order.authorizations:
            body = authzr.body
            ident = body.identifier.value
            if body.status == messages.STATUS_VALID:
                continue
            if body.status != messages.STATUS_PENDING:
                raise IssueError(f"the CA holds the authorization for {ident} as {body.status.name}; "
                                 "it cannot be completed (try again later for a fresh one)")
            for challb in body.challenges:
                if challb.chall.typ == typ:
                    found.append(PendingChallenge(
                        name=ident, wildcard=bool(body.wildcard), typ=typ,
                        validation=challb.chall.validation(self.key.jwk),
                        token=challb.chall.encode("token"), challb=challb, authz_uri=authzr.uri))
                    break
            else:
                offered = ", ".join(c.chall.typ for c in body.challenges) or "none"
                raise IssueError(f"the CA offers no {typ} challenge for {ident} (offered: {offered})")
        return found

    def answer(self, challenge: PendingChallenge) -> None:
        """Tell the CA the challenge is ready to be checked."""
        response = challenge.challb.chall.response(self.key.jwk)
        with acme_errors(f"answering the {challenge.typ} challenge of {challenge.name}",
                         self.directory_url):
            self.acme.answer_challenge(challenge.challb, response)

    def wait_authorizations(self, order: messages.OrderResource, hint: str | None = None) -> None:
        """Poll every authorization of the order until valid; IssueError naming each failure
        and ending with ``hint`` (what to check for this challenge type; by default the
        ``lecentral dns check`` command for the names that failed)."""
        from acme import messages

        deadline = time.monotonic() + self.poll_timeout
        failures: list[str] = []
        failed: list[str] = []
        if any(a.body.status != messages.STATUS_VALID for a in order.authorizations):
            # a challenge answered this instant is never validated yet: the first poll comes
            # ANSWER_DELAY later (one request less per name at a fast CA, and at a slow one)
            time.sleep(ANSWER_DELAY)
        for authzr in order.authorizations:
            ident = authzr.body.identifier.value
            what = f"waiting for the CA to validate {ident}"

            def pending(resp: requests.Response) -> bool:
                return messages.Authorization.from_json(resp.json()).status in (
                    messages.STATUS_PENDING, messages.STATUS_PROCESSING)

            response = self._poll(authzr.uri, pending, deadline, what)
            body = messages.Authorization.from_json(response.json())
            if body.status != messages.STATUS_VALID:
                errors = [str(c.error.detail or c.error.typ) for c in body.challenges
                          if c.error is not None]
                failures.append(f"{ident}: {body.status.name}"
                                + (f" ({'; '.join(errors)})" if errors else ""))
                failed.append(ident)
        if failures:
            hint = hint or f"check the TXT records with lecentral dns check {' '.join(failed)}"
            raise IssueError("the CA did not validate " + "; ".join(failures)
                             + f" ({hint})")

    def finalize(self, order: messages.OrderResource) -> str:
        """Send the CSR, wait for issuance and return the full chain PEM (leaf first)."""
        from acme import messages

        names = ", ".join(a.body.identifier.value for a in order.authorizations)
        deadline = time.monotonic() + self.poll_timeout
        finalized: requests.Response | None = None
        what = f"finalizing the order for {names}"
        with acme_errors(what, self.directory_url):
            for _ in range(5):
                try:
                    finalized = self._begin_finalization(order)
                    break
                except messages.Error as problem:
                    if problem.code != "orderNotReady":
                        raise _finalize_refused(problem, what, order.csr_pem) from None
                    self._poll(order.uri, lambda r: messages.Order.from_json(r.json()).status
                               == messages.STATUS_PENDING, deadline, f"waiting for {names}")

        def processing(resp: requests.Response) -> bool:
            return messages.Order.from_json(resp.json()).status in (
                messages.STATUS_PROCESSING, messages.STATUS_READY)

        # the finalize answer is the order: a CA that issued at once (status valid) is not asked
        # again, and one still processing is asked after its Retry-After (RFC 8555 §7.4)
        response = self._poll(order.uri, processing, deadline,
                              f"waiting for the certificate of {names}", answer=finalized)
        body = messages.Order.from_json(response.json())
        if body.status != messages.STATUS_VALID or not body.certificate:
            why = f": {body.error}" if body.error is not None else ""
            raise IssueError(f"the CA did not issue the certificate for {names} "
                             f"(order {body.status.name}{why})")
        with acme_errors(f"downloading the certificate of {names}", self.directory_url):
            cert = self.net.post(body.certificate, None, new_nonce_url=self.acme.directory["newNonce"],
                                 headers={"Accept": "application/pem-certificate-chain",
                                          "Content-Type": self.net.JOSE_CONTENT_TYPE})
        return str(cert.content.decode("ascii", "replace"))

    def _begin_finalization(self, order: messages.OrderResource) -> requests.Response:
        """POST the CSR to the order's finalize URL; the CA's answer (the order, and maybe a
        Retry-After), which ``ClientV2.begin_finalization`` does not return."""
        from acme import messages
        from cryptography import x509

        csr = x509.load_pem_x509_csr(order.csr_pem)
        response: requests.Response = self.acme._post(order.body.finalize,
                                                      messages.CertificateRequest(csr=csr))
        return response

    def _poll(self, url: str, busy: Callable[[requests.Response], bool], deadline: float,
              what: str, answer: requests.Response | None = None) -> requests.Response:
        """POST-as-GET ``url`` until ``busy(response)`` is false, honoring Retry-After.

        ``answer``: the CA's answer in hand (the finalize response), taken as the first poll; the
        first request then comes ANSWER_DELAY after it (or after its Retry-After), and the polls
        that follow keep the usual schedule: no more requests than polling at once would make."""
        from lecentral.acme.problems import parse_retry_after

        delay = 0.05  # the first answers of a fast CA come within tens of milliseconds
        while True:
            in_hand = answer is not None
            if answer is not None:
                response, answer = answer, None
            else:
                with acme_errors(what, self.directory_url):
                    response = self.net.post(url, None,
                                             new_nonce_url=self.acme.directory["newNonce"])
            if not busy(response):
                return response
            wait = ANSWER_DELAY if in_hand else delay
            retry_at = parse_retry_after(response.headers.get("Retry-After"))
            if retry_at is not None:
                wait = max(wait, (retry_at - datetime.datetime.now(UTC)).total_seconds())
            if time.monotonic() + wait > deadline:
                raise IssueError(f"{what}: no answer from the CA within {self.poll_timeout:.0f} s "
                                 "([acme] poll_timeout); the order stays open at the CA and a "
                                 "later run starts a new one")
            time.sleep(wait)
            if not in_hand:
                delay = min(delay * 2, 2.0)

    @property
    def offers_ari(self) -> bool:
        """True if the directory has a ``renewalInfo`` URL (RFC 9773)."""
        try:
            return bool(self.acme.directory["renewalInfo"])
        except KeyError:
            return False

    def close(self) -> None:
        """Close the HTTP session."""
        self.net.session.close()


def _parse_time(text: str) -> datetime.datetime:
    when = datetime.datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def ari_cert_id(crt_pem: bytes) -> str:
    """The RFC 9773 certificate identifier: base64url(AKI keyIdentifier) "." base64url(serial DER)."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(crt_pem)
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    if aki.key_identifier is None:
        raise IssueError("the certificate has no Authority Key Identifier; ARI cannot name it")
    serial = cert.serial_number
    # the serial as a DER INTEGER's content octets: big-endian, two's complement, minimal
    serial_bytes = serial.to_bytes(serial.bit_length() // 8 + 1, "big", signed=True)
    return f"{_b64url(aki.key_identifier)}.{_b64url(serial_bytes)}"


#: RFC 9773 §4.3: a Retry-After outside these bounds is taken as the nearest bound (a CA asking
#: again within a second, or not for years, is not followed); seconds
RETRY_AFTER_MIN = 60
RETRY_AFTER_MAX = 86400
#: when the CA sends no Retry-After, or one that is neither a number of seconds nor a date
RETRY_AFTER_DEFAULT = 6 * 3600
#: renewal-information requests in flight at once per CA (one HTTP session each)
ARI_WORKERS = 8


class NotAsked(str):
    """The warning :meth:`RenewalInfoReader.ask_many` answers for an item it did not ask (the
    run stopping): no failure of the CA's."""

    __slots__ = ()



def retry_after_seconds(value: str | None, now: float) -> int:
    """The seconds to wait before asking for a certificate's renewal information again, from a
    ``Retry-After`` header (delta-seconds or an HTTP date), bounded as RFC 9773 §4.3 advises;
    :data:`RETRY_AFTER_DEFAULT` when it is missing or not understood."""
    from email.utils import parsedate_to_datetime

    text = (value or "").strip()
    if not text:
        return RETRY_AFTER_DEFAULT
    if text.isdigit():
        seconds = int(text) if len(text) < 12 else RETRY_AFTER_MAX
    else:
        try:
            date = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError, OverflowError):
            return RETRY_AFTER_DEFAULT
        if date.tzinfo is None:
            date = date.replace(tzinfo=UTC)
        seconds = int(date.timestamp() - now)
    return max(RETRY_AFTER_MIN, min(RETRY_AFTER_MAX, seconds))


@dataclass(frozen=True)
class AriAnswer:
    """What the CA answered for one certificate: its window and how long that answer holds."""

    window: RenewalWindow
    retry_after: int  # seconds, bounded (retry_after_seconds)


class RenewalInfoReader:
    """Reads ARI windows with plain GETs: no account, no key, so a dry run may use it too.

    :meth:`ask_many` asks for many certificates at once, :data:`ARI_WORKERS` at a time, each
    worker thread with its own HTTP session (a requests session is not meant to be shared
    between threads)."""

    def __init__(self, config: AcmeConfig) -> None:
        import requests

        self.directory_url = config.directory
        self.session = requests.Session()
        # per request, not session.verify: a REQUESTS_CA_BUNDLE in the environment would win
        self.verify: bool | str = config.ca_bundle or True
        self.session.headers["User-Agent"] = f"lecentral/{__version__}"
        self._base: str | None = None
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        try:
            directory = self.session.get(self.directory_url, timeout=30, verify=self.verify).json()
            self._base = str(directory.get("renewalInfo") or "") or None
        except Exception as exc:  # noqa: BLE001 - ARI is an optimisation: without it, the window decides
            log.warning("cannot read the ACME directory %s for renewal information (%s); the "
                        "renewal window (renew.before) decides", self.directory_url,
                        " ".join(str(exc).split())[:200])

    @property
    def offered(self) -> bool:
        """True if the directory has a ``renewalInfo`` URL."""
        return self._base is not None

    @property
    def base(self) -> str:
        """The ``renewalInfo`` URL (empty when not offered)."""
        return self._base or ""

    def window(self, crt_pem: bytes) -> RenewalWindow | None:
        """The suggested window for ``crt_pem``; None if not offered or unreadable (logged)."""
        answer = self.ask(crt_pem, self.session)
        if isinstance(answer, str):
            log.warning("%s", answer)
            return None
        return answer.window if answer is not None else None

    def ask(self, crt_pem: bytes, session: requests.Session | None = None,
            cert_id: str | None = None) -> AriAnswer | str | None:
        """The CA's answer for ``crt_pem`` (``cert_id``: its ARI certID, if known); None if not
        offered; a warning to log (not logged here) when the answer cannot be had."""
        if self._base is None:
            return None
        try:
            url = f"{self._base.rstrip('/')}/{cert_id or ari_cert_id(crt_pem)}"
            response = (session or self._session()).get(url, timeout=30, verify=self.verify)
            response.raise_for_status()
            data = response.json()
            start = _parse_time(data["suggestedWindow"]["start"])
            end = _parse_time(data["suggestedWindow"]["end"])
            explanation = data.get("explanationURL")
        except Exception as exc:  # noqa: BLE001 - any failure: the renewal window decides
            return (f"renewal information from {self._base} unreadable "
                    f"({' '.join(str(exc).split())[:200]}); the renewal window (renew.before) "
                    "decides")
        if end <= start:  # RFC 9773 §4.2: invalid, as if no answer came
            return f"renewal window from {self._base} ends before it starts; ignored"
        retry = retry_after_seconds(response.headers.get("Retry-After"), time.time())
        return AriAnswer(RenewalWindow(start=start, end=end,
                                       explanation=explanation if isinstance(explanation, str)
                                       else None), retry)

    def ask_many(self, items: list[tuple[bytes, str]], workers: int = ARI_WORKERS,
                 stop: Callable[[], bool] | None = None) -> list[AriAnswer | str | None]:
        """:meth:`ask` for each (certificate PEM, ARI certID) of ``items``, ``workers`` at a
        time; the answers in the order of ``items``. Once ``stop()`` is true (the run was asked
        to stop), the items not yet asked are answered with a warning, not asked."""
        def one(item: tuple[bytes, str], session: requests.Session | None) -> AriAnswer | str | None:
            if stop is not None and stop():
                return NotAsked(f"renewal information from {self._base} not asked: the run "
                                "is stopping; the renewal window (renew.before) decides")
            return self.ask(item[0], session, item[1])

        if len(items) <= 1 or workers <= 1:
            return [one(item, self.session) for item in items]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(workers, len(items)),
                                thread_name_prefix="lecentral-ari") as pool:
            return list(pool.map(lambda item: one(item, None), items))

    def _session(self) -> requests.Session:
        """This thread's HTTP session, made on first use."""
        import requests

        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = f"lecentral/{__version__}"
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        """Close the HTTP sessions."""
        self.session.close()
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions = []


def _finalize_refused(problem: object, what: str, csr_pem: bytes) -> IssueError:
    """The CA's refusal of the CSR at finalization, with why when the CSR's CN is outside its
    subjectAltNames (a CA reading the SANs only, such as Pebble, refuses it; Let's Encrypt not)."""
    from cryptography import x509

    from lecentral.acme.problems import AcmeProblem
    from lecentral.certificates import Csr

    refused = problem_error(problem, what)
    hint = Csr(x509.load_pem_x509_csr(csr_pem)).sans_only_hint()
    if not hint:
        return refused
    # the code's general advice (e.g. "check [acme] and the names' DNS") would mislead here
    text = f"{what}: the CA answered {refused.code}: {refused.detail}; {hint}"
    return AcmeProblem(text, typ=refused.typ, detail=refused.detail,
                       subproblems=refused.subproblems, retry_at=refused.retry_at)
