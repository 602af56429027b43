"""The typed registry: the only code that calls ``pm.hook.*``.

It asks every plugin for its records once, remembers which plugin gave which record, and answers
look-ups by name with clear errors ("no service plugin named 'postfix' is installed ...; install it
with: pip install lecentral-postfix", "no service plugin named 'ngnix' ...; did you mean 'nginx'?").
A package to install is suggested only for the plugins this project ships (:data:`SERVICE_PACKAGES`),
never made from the name typed: a typo must not send anyone to install a package someone else may
have registered under that name. A name claimed by two plugins is an error naming both distributions, raised when
that name is used and shown by ``lecentral plugins``; the other names keep working.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pluggy import HookCaller

from lecentral.errors import PluginError
from lecentral.plugins import (
    DISABLE_ENV,
    LoadedPlugins,
    PluginFailure,
    PluginInfo,
    get_plugin_manager,
)
from lecentral.records import Notification
from lecentral.types import (
    IssuerType,
    NotifierType,
    ServiceType,
    StoreType,
    VerifierType,
)

log = logging.getLogger(__name__)

R = TypeVar("R")

#: verify URL schemes that a plugin of this project provides, and its distribution
VERIFIER_PACKAGES = {"ldap+starttls": "lecentral-openldap", "ldaps": "lecentral-openldap"}

#: the services the plugins of this project (plugins/ in its source tree) register, and their
#: distributions: the only packages an unknown service name makes lecentral suggest installing
#: (tests/test_plugins.py checks it against plugins/)
SERVICE_PACKAGES = {name: f"lecentral-{name}" for name in (
    "apache", "dovecot", "esxi", "freeradius", "haproxy", "nginx", "openldap", "postfix")}

@dataclass
class Kind(Generic[R]):
    """All records of one kind: by key, who registered each, and the keys claimed twice."""

    hook: str
    word: str
    records: dict[str, R] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)
    conflicts: dict[str, list[str]] = field(default_factory=dict)

    def names(self) -> list[str]:
        """The keys registered once, sorted."""
        return sorted(self.records)


class Registry:
    """What the installed plugins provide, looked up by name."""

    def __init__(self, loaded: LoadedPlugins) -> None:
        self.loaded = loaded
        self.failures: list[PluginFailure] = list(loaded.failures)
        self.provides: dict[str, list[str]] = {name: [] for name in loaded.infos}
        self.issuers: Kind[IssuerType] = self._collect("lecentral_register_issuers", "issuer",
                                                       lambda r: r.name)
        self.stores: Kind[StoreType] = self._collect("lecentral_register_stores", "store",
                                                     lambda r: r.name)
        self.services: Kind[ServiceType] = self._collect("lecentral_register_services", "service",
                                                         lambda r: r.name)
        self.verifiers: Kind[VerifierType] = self._collect("lecentral_register_verifiers",
                                                           "verifier", lambda r: r.scheme)
        self.notifier_types: Kind[NotifierType] = self._collect("lecentral_register_notifiers",
                                                                "notifier", lambda r: r.name)

    @property
    def kinds(self) -> tuple[Kind[Any], ...]:
        return (self.issuers, self.stores, self.services, self.verifiers, self.notifier_types)

    @classmethod
    def load(cls, *, entrypoints: bool = True, disabled: Iterable[str] = ()) -> Registry:
        """Load every plugin (built-ins and entry points, less ``disabled``) and collect their
        records."""
        return cls(get_plugin_manager(entrypoints=entrypoints, disabled=disabled))

    # -- calling hooks through pluggy ----------------------------------------------------------

    def _each_impl(self, hook: str) -> Iterator[tuple[str, HookCaller]]:
        """(plugin name, a caller of ``hook`` that runs only that plugin's implementation and
        every ``wrapper=True`` one), in pluggy's call order: so one plugin's failure is its own
        and wrappers still wrap."""
        pm = self.loaded.pm
        impls = [i for i in getattr(pm.hook, hook).get_hookimpls()
                 if not (i.wrapper or i.hookwrapper)]
        for impl in reversed(impls):
            others = [i.plugin for i in impls if i is not impl]
            yield impl.plugin_name, pm.subset_hook_caller(hook, remove_plugins=others)

    # -- collection ---------------------------------------------------------------------------

    def _collect(self, hook: str, word: str, key: Callable[[R], str]) -> Kind[R]:
        kind: Kind[R] = Kind(hook, word)
        for plugin, call in self._each_impl(hook):
            try:
                records = [r for result in call() for r in (result or [])]
            except Exception as exc:  # noqa: BLE001 - one plugin's bug must not hide the others
                log.warning("plugin %s failed in %s: %s", plugin, hook, exc)
                self.failures.append(self._failure(plugin, f"{hook}: {exc}"))
                continue
            for record in records:
                self._add(kind, key(record), record, plugin)
        return kind

    def _add(self, kind: Kind[R], key: str, record: R, plugin: str) -> None:
        if key in kind.records or key in kind.conflicts:
            owners = kind.conflicts.setdefault(key, [kind.owner.pop(key)] if key in kind.owner else [])
            kind.records.pop(key, None)
            owners.append(plugin)
            return
        kind.records[key] = record
        kind.owner[key] = plugin
        self.provides.setdefault(plugin, []).append(f"{kind.word}:{key}")

    def _failure(self, plugin: str, error: str) -> PluginFailure:
        info = self.loaded.infos.get(plugin)
        dist, version = (info.distribution, info.version) if info else ("?", "?")
        return PluginFailure(plugin, dist, version, error)

    def _dist(self, plugin: str) -> str:
        info = self.loaded.infos.get(plugin)
        return f"{info.distribution} {info.version}" if info else plugin

    # -- look-ups -------------------------------------------------------------------------------

    def _get(self, kind: Kind[R], key: str, hint: str = "") -> R:
        if key in kind.conflicts:
            dists = " and ".join(sorted(self._dist(p) for p in kind.conflicts[key]))
            raise PluginError(
                f"{kind.word} {key!r} is registered by more than one plugin ({dists}); "
                f"uninstall all but one of them"
            )
        try:
            return kind.records[key]
        except KeyError:
            known = ", ".join(kind.names()) or "none"
            if key in self.loaded.blocked:
                raise PluginError(
                    f"no {kind.word} plugin named {key!r}: the plugin {key!r} is installed but "
                    f"disabled ([plugins] disable or ${DISABLE_ENV}); remove it from there to "
                    "use it") from None
            if self.loaded.blocked:  # what a disabled plugin registers is unknown: say it is off
                disabled = ", ".join(sorted(self.loaded.blocked))
                hint = (f"; disabled plugins ([plugins] disable, ${DISABLE_ENV}): {disabled}"
                        f"{hint}")
            close = difflib.get_close_matches(key, kind.names(), n=1)
            guess = f"; did you mean {close[0]!r}?" if close else ""
            raise PluginError(
                f"no {kind.word} plugin named {key!r} is installed (installed: {known}){guess}{hint}"
            ) from None

    def issuer(self, name: str) -> IssuerType:
        """The issuer record called ``name``."""
        return self._get(self.issuers, name)

    def service(self, name: str) -> ServiceType:
        """The service record called ``name``; the error suggests the installed service the name
        may be a typo of, or the package to install for a service this project ships."""
        return self._get(self.services, name, _service_hint(name, self.services.names()))

    def verifier(self, scheme: str) -> VerifierType:
        """The verifier for a URL scheme such as ``tls`` or ``smtp+starttls``; for a scheme a known
        plugin provides, the error names the package to install."""
        package = VERIFIER_PACKAGES.get(scheme)
        return self._get(self.verifiers, scheme, f"; install it with: pip install {package}" if package else "")

    def store_for_url(self, url: str) -> StoreType:
        """The store whose schemes include the driver part of ``url`` (``sqlite``, ``mysql+pymysql``)."""
        scheme = url.split(":", 1)[0]
        for rec in self.stores.records.values():
            if scheme in rec.schemes:
                return rec
        known = ", ".join(sorted(s for r in self.stores.records.values() for s in r.schemes))
        raise PluginError(
            f"no store plugin handles database URLs of scheme {scheme!r} (known: {known}); "
            "check [database] url"
        )

    # -- notifications and events -------------------------------------------------------------

    def notifiers(self, settings: Mapping[str, Any]) -> list[Any]:
        """The notifiers that ``settings`` (the ``[notify]`` table) enables."""
        active = []
        for _name, rec in sorted(self.notifier_types.records.items()):
            notifier = rec.factory(settings)
            if notifier is not None:
                active.append(notifier)
        return active

    def notify(self, notification: Notification, settings: Mapping[str, Any]) -> list[str]:
        """Send ``notification`` to every enabled notifier; return the errors (never raises)."""
        errors = []
        for notifier in self.notifiers(settings):
            try:
                notifier.send(notification)
            except Exception as exc:  # noqa: BLE001 - an unsent alert must not hide the original problem
                log.warning("notifier %s failed: %s", type(notifier).__name__, exc)
                errors.append(f"{type(notifier).__name__}: {exc}")
        return errors

    def emit(self, event: str, **kwargs: Any) -> None:
        """Broadcast an event hook to every implementation; a failing one is logged, never fatal."""
        for plugin, call in self._each_impl(event):
            try:
                call(**kwargs)
            except Exception as exc:  # noqa: BLE001 - a failing event handler is logged, never fatal
                log.warning("plugin %s failed handling %s: %s", plugin, event, exc)

    # -- reporting ---------------------------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        """One dict per plugin (loaded or failed) for ``lecentral plugins``."""
        rows: list[dict[str, Any]] = []
        for name, info in self.loaded.infos.items():
            rows.append(self._row(info, self.provides.get(name, []), None))
        for failure in self.failures:
            rows.append({
                "name": failure.name, "distribution": failure.distribution,
                "version": failure.version, "module": None, "registers": [],
                "status": "error", "error": failure.error,
            })
        for name, (dist, version) in self.loaded.blocked.items():
            rows.append({"name": name, "distribution": dist, "version": version, "module": None,
                         "registers": [], "status": "disabled",
                         "error": None})
        for kind in self.kinds:
            for key, plugins in kind.conflicts.items():
                dists = " and ".join(sorted(self._dist(p) for p in plugins))
                for plugin in plugins:
                    info = self.loaded.infos[plugin]
                    row = self._row(info, [], f"{kind.word} {key!r} is registered by more than one plugin ({dists})")
                    rows.append(row)
        return rows

    @staticmethod
    def _row(info: PluginInfo, registers: list[str], error: str | None) -> dict[str, Any]:
        return {
            "name": info.name, "distribution": info.distribution, "version": info.version,
            "module": info.module, "registers": registers,
            "status": "error" if error else "ok", "error": error,
        }


def _service_hint(name: str, installed: list[str]) -> str:
    """What the error about the unknown service ``name`` adds: the package of a service this
    project ships (:data:`SERVICE_PACKAGES`), or of the one ``name`` is a typo of when no
    installed service is a close match (that one is suggested by :meth:`Registry._get`); for
    any other name, no package at all."""
    if name in SERVICE_PACKAGES:
        return f"; install it with: pip install {SERVICE_PACKAGES[name]}"
    if difflib.get_close_matches(name, installed, n=1):
        return ""
    close = difflib.get_close_matches(name, list(SERVICE_PACKAGES), n=1)
    if close:
        return (f"; did you mean {close[0]!r}? (not installed: pip install "
                f"{SERVICE_PACKAGES[close[0]]})")
    return ("; check the service name (the service plugins of lecentral: "
            f"{', '.join(SERVICE_PACKAGES)}; a third-party plugin's own documentation names "
            "its package)")
