"""Asking the CA about an account key without ever registering one.

``lecentral account import`` and ``account show`` must not create an account as a side effect (a
new account at an EAB CA would even need the EAB credentials the operator is trying not to use):
the account behind a key is found with newAccount and ``onlyReturnExisting`` (RFC 8555 §7.3.1),
which returns the existing account's URL or ``accountDoesNotExist``, and read with a POST-as-GET
to its URL (§7.3.2 leaves the body of the newAccount answer optional; the POST-as-GET has it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lecentral import __version__
from lecentral.acme.problems import acme_errors
from lecentral.errors import IssueError

if TYPE_CHECKING:
    from acme.client import ClientV2
    from josepy.jwa import JWASignature
    from josepy.jwk import JWK

    from lecentral.config import AcmeConfig


class AccountUnknown(IssueError):
    """The CA has no account for this key (``accountDoesNotExist``)."""


class AccountLookup:
    """A connection to ``[acme] directory`` signed with one key, for look-ups only."""

    def __init__(self, config: AcmeConfig, jwk: JWK, alg: JWASignature) -> None:
        from acme.client import ClientV2

        from lecentral.acme.network import SafeNetwork

        self.directory_url = config.directory
        self.net = SafeNetwork(jwk, alg=alg, verify=config.ca_bundle or True,
                               user_agent=f"lecentral/{__version__}", pool_size=1)
        try:
            with acme_errors("reading the ACME directory", self.directory_url):
                directory = ClientV2.get_directory(self.directory_url, self.net)
        except BaseException:
            self.close()
            raise
        self.acme: ClientV2 = ClientV2(directory, self.net)

    def find(self) -> str:
        """The URL of the key's account; :class:`AccountUnknown` if the CA has none."""
        from acme import errors, messages

        reg = messages.NewRegistration(only_return_existing=True)
        what = "looking up the account of this key (newAccount, onlyReturnExisting)"
        with acme_errors(what, self.directory_url):
            try:
                self.acme.new_account(reg)
            except errors.ConflictError as existing:  # 200 + Location: the account exists
                return str(existing.location)
            except messages.Error as problem:
                if problem.code == "accountDoesNotExist":
                    raise AccountUnknown(f"the CA at {self.directory_url} has no account for this "
                                         "key (accountDoesNotExist)") from None
                raise
        # a 201: this CA ignored onlyReturnExisting and registered the key (RFC 8555 forbids it)
        url = self.net.account.uri if self.net.account is not None else "?"
        raise IssueError(f"the CA at {self.directory_url} registered a new account {url} instead of "
                         "answering onlyReturnExisting; it does not follow RFC 8555 §7.3.1")

    def fetch(self, url: str) -> dict[str, Any]:
        """The account object at ``url`` (POST-as-GET): status, contact, orders..."""
        from acme import messages

        self.net.account = messages.RegistrationResource(uri=url, body=messages.Registration())
        with acme_errors(f"reading the account {url}", self.directory_url):
            response = self.net.post(url, None, new_nonce_url=self.acme.directory["newNonce"])
            body = response.json()
        if not isinstance(body, dict):
            raise IssueError(f"the CA answered the account {url} with no JSON object")
        return body

    def close(self) -> None:
        """Close the HTTP session."""
        self.net.session.close()
