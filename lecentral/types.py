"""The records plugins register: small frozen dataclasses, one per kind of plugin.

A plugin returns these from its ``lecentral_register_*`` hooks. The registry keys them by ``name``
(or ``scheme`` for verifiers); the engine looks them up by that name and builds the object through
``factory``, so a failing plugin only ever breaks the certificates that name it.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lecentral.acme.client import AcmeClient
    from lecentral.config import CentralConfig
    from lecentral.interfaces import Issuer, Notifier, Service, Store, Verifier


@dataclass(frozen=True)
class IssuerContext:
    """What a renew run gives each issuer it builds.

    ``config``: the whole central configuration. ``acme()``: the run's ACME client (account,
    connection and nonce pool) of the CA being tried for the certificate this thread issues
    (``[[acme.ca]]``: the job calls ``Issuer.issue`` again with the next CA after a failure that
    is the CA's, so ask for it inside ``issue``), made on the first call, shared by every issuer
    and worker of the run, and closed by the run at its end: an issuer never closes it. ``secret(value)``: tell
    the run a secret the issuer read (an API token, a TSIG secret), so that no message, event or
    mail of the run ever shows it.
    """

    config: CentralConfig
    acme: Callable[[], AcmeClient]
    secret: Callable[[str], None] = field(default=lambda value: None)


@dataclass(frozen=True)
class IssuerType:
    """A way of getting a certificate signed: ``dns-subzone``, ``certbot-webroot``, ``webroot``...

    ``factory(context)`` builds the issuer from an :class:`IssuerContext`; it is called at most
    once per renew run, and only when a certificate needs this issuer.
    """

    name: str
    factory: Callable[[IssuerContext], Issuer]
    description: str = ""


@dataclass(frozen=True)
class StoreType:
    """A certificate database backend, chosen by the scheme of ``[database] url``.

    ``schemes`` are SQLAlchemy URL driver names such as ``sqlite`` or ``mysql+pymysql``;
    ``factory(url)`` returns a connected store.
    """

    name: str
    schemes: tuple[str, ...]
    factory: Callable[[str], Store]
    description: str = ""


@dataclass(frozen=True)
class ServiceType:
    """How one kind of server software takes its certificate (``files``, ``apache``, ``postfix``...).

    ``defaults`` fills the keys that the ``[[cert]]`` entries naming this service leave out (file
    paths, ``check`` and ``reload`` commands, ``verify`` URLs, ``owner``/``group``/``mode``), so a
    typical entry is two lines; the keys are those of :class:`lecentral.records.CertEntry`.
    ``options_model`` is a dataclass of the service's own keys for ``[cert.options]`` (fields made
    with :func:`option`): the agent validates the table against it when the configuration is
    loaded (types, unknown keys, and the dataclass's ``__post_init__``, which may raise
    :class:`~lecentral.errors.EntryError`) and hands the instance to the service as
    ``entry.options``. ``options`` is the one-line help of each key; it is derived from the
    model's fields when left empty. ``factory()`` builds the :class:`~lecentral.interfaces.Service`
    (:func:`lazy_service` keeps the import of its module for the first call).
    """

    name: str
    factory: Callable[[], Service]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    options: Mapping[str, str] = field(default_factory=dict)
    options_model: type[Any] | None = None

    def __post_init__(self) -> None:
        if self.options_model is not None and not self.options:
            object.__setattr__(self, "options", options_help(self.options_model))


@dataclass(frozen=True)
class VerifierType:
    """A way to ask a running service which certificate it presents, by URL scheme (``tls``, ``ldaps``...)."""

    scheme: str
    factory: Callable[[], Verifier]
    description: str = ""


@dataclass(frozen=True)
class NotifierType:
    """A way to alert a human (``mail``, ``syslog``...).

    ``factory(settings)`` gets the ``[notify]`` table and returns a notifier, or ``None`` when the
    settings do not enable it (no ``mail_to``, ``syslog = false``).
    """

    name: str
    factory: Callable[[Mapping[str, Any]], Notifier | None]
    description: str = ""


def option(default: Any, help: str, *, secret: bool = False) -> Any:
    """A field of a service's options dataclass: its default and its one-line help.

    ``port: int = option(22, "its SSH port")``; a list or table default is copied per entry.
    ``secret=True`` (a password) keeps the value out of the dataclass's ``repr`` and out of the
    load-time error messages.
    """
    metadata = {"help": help, "secret": secret}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata, repr=not secret)
    return field(default=default, metadata=metadata, repr=not secret)


def options_help(model: type[Any]) -> dict[str, str]:
    """key -> help of an options dataclass (its fields made with :func:`option`)."""
    return {f.name: str(f.metadata.get("help", "")) for f in dataclasses.fields(model)}


def _lazy(target: str) -> Callable[[], Any]:
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ValueError(f"lazy factory {target!r}: write it as 'package.module:Name'")

    def factory() -> Any:
        # imported on the first call, not when the registry is built: --help stays fast
        return getattr(importlib.import_module(module_name), attr)()

    factory.__qualname__ = f"lazy({target})"
    return factory


def lazy_service(target: str) -> Callable[[], Service]:
    """A ``ServiceType.factory`` that imports ``"package.module:ServiceClass"`` on its first call."""
    return _lazy(target)


def lazy_verifier(target: str) -> Callable[[], Verifier]:
    """A ``VerifierType.factory`` that imports ``"package.module:VerifierClass"`` on its first call."""
    return _lazy(target)
