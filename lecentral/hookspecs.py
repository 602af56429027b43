"""Every hook lecentral calls, with what it is for, when it is called and what it returns.

Two kinds of hooks:

* **Registration hooks** (``lecentral_register_*``) are called once when the registry is built.
  Each returns a list of records from :mod:`lecentral.types`. The engine then looks the records up by
  name, so an unknown name is a clear error and one broken plugin never stops the others.
* **Event hooks** are broadcast after something happened. Every implementation is called; one that
  raises is logged as a warning and never stops the run.

Implement them in a module or class decorated with :data:`hookimpl` and expose that module through
the ``lecentral.plugins`` entry point group::

    [project.entry-points."lecentral.plugins"]
    apache = "lecentral_apache.plugin"
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from lecentral.types import (
        IssuerType,
        NotifierType,
        ServiceType,
        StoreType,
        VerifierType,
    )

PROJECT = "lecentral"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- registration hooks -------------------------------------------------------------------------


@hookspec
def lecentral_register_issuers() -> list[IssuerType]:
    """Register ways of getting certificates signed.

    Called once per process, when the central host's registry is built (``lecentral renew``,
    ``lecentral plugins``). Return the :class:`~lecentral.types.IssuerType` records this plugin
    provides; names must be unique across all installed plugins.
    """
    raise NotImplementedError


@hookspec
def lecentral_register_stores() -> list[StoreType]:
    """Register certificate database backends.

    Called once per process, before the database is opened. A store claims the SQLAlchemy URL
    schemes it handles (``sqlite``, ``mysql+pymysql``...); a scheme claimed twice is an error.
    """
    raise NotImplementedError


@hookspec
def lecentral_register_services() -> list[ServiceType]:
    """Register server software the agent can install certificates for.

    Called once per ``lecentral-install`` run. The ``service`` key of each ``[[cert]]`` entry names
    one of these records; its ``defaults`` fill the keys the entry leaves out.
    """
    raise NotImplementedError


@hookspec
def lecentral_register_verifiers() -> list[VerifierType]:
    """Register ways to read the certificate a running service presents, by URL scheme.

    Called once per ``lecentral-install`` run; the ``verify`` URL of a ``[[cert]]`` entry picks one
    by its scheme (``tls``, ``smtp+starttls``, ``ldaps``...).
    """
    raise NotImplementedError


@hookspec
def lecentral_register_notifiers() -> list[NotifierType]:
    """Register ways of alerting a human (mail, syslog, chat...).

    Called once per process. Each record's factory receives the ``[notify]`` table and returns a
    notifier, or ``None`` when that table does not enable it.
    """
    raise NotImplementedError


# --- event hooks (broadcast; a failing implementation is logged, never fatal) -------------------


@hookspec
def lecentral_cert_issued(name: str, crt: bytes, ca: bytes, ts_expire: int,
                          issuer_ca: str | None) -> None:
    """A new certificate for ``name`` was stored in the database (PEM leaf and CA chain).

    Called on the central host after the transaction that saved it has committed. ``issuer_ca``:
    the ``[[acme.ca]]`` name of the CA that issued it (``"default"`` for the single ``[acme]``
    CA; None when not known). An implementation may leave the argument out of its signature.
    """


@hookspec
def lecentral_renew_failed(name: str, error: str, count_fail_update: int) -> None:
    """An attempt to renew ``name`` failed; ``count_fail_update`` is the new failure count.

    Called on the central host after the failure was recorded. ``error`` never holds a secret.
    """


@hookspec
def lecentral_cert_installed(name: str, host: str, paths: list[str], fingerprint: str) -> None:
    """The agent on ``host`` installed and verified a new certificate for ``name``.

    ``paths`` are the files written; ``fingerprint`` is the SHA-256 hex of the leaf now served.
    """


@hookspec
def lecentral_install_failed(name: str, host: str, error: str, rolled_back: bool) -> None:
    """The agent on ``host`` could not install ``name``; ``rolled_back`` says whether the previous
    files are back in place and served."""


@hookspec
def lecentral_fleet_state_changed(name: str, target: str, old: str | None, new: str,
                                  detail: str) -> None:
    """A fleet target changed state (``lecentral probe``, ``lecentral renew``, ``lecentral fleet
    --notify``): ``target`` is ``"host (entry)"``, a probed URL, or ``"renew-timer"`` (then
    ``name`` is ``"-"``); ``old`` is None the first time it is seen. States: docs/fleet.md.
    """
