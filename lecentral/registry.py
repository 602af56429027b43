"""The typed registry: the only code that calls ``pm.hook.*``.

It asks every plugin for its records once, remembers which plugin gave which record, and answers
look-ups by name with clear errors ("no service plugin named 'postfix' is installed: pip install
lecentral-postfix"). A name claimed by two plugins is an error naming both distributions, raised when
that name is used and shown by ``lecentral plugins``; the other names keep working.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from lecentral.errors import PluginError
from lecentral.plugins import (
    LoadedPlugins,
    PluginFailure,
    PluginInfo,
    get_plugin_manager,
)
from lecentral.types import (
    IssuerType,
    Notification,
    ServiceType,
    StoreType,
    VerifierType,
)

log = logging.getLogger(__name__)

R = TypeVar("R")

#: registration hook -> (record attribute that is its key, human word for errors)
_KINDS: dict[str, tuple[str, str]] = {
    "lecentral_register_issuers": ("name", "issuer"),
    "lecentral_register_stores": ("name", "store"),
    "lecentral_register_services": ("name", "service"),
    "lecentral_register_verifiers": ("scheme", "verifier"),
    "lecentral_register_notifiers": ("name", "notifier"),
}


@dataclass
class Kind(Generic[R]):
    """All records of one kind: by key, who registered each, and the keys claimed twice."""

    word: str
    records: dict[str, R] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)
    conflicts: dict[str, list[str]] = field(default_factory=dict)


class Registry:
    """What the installed plugins provide, looked up by name."""

    def __init__(self, loaded: LoadedPlugins) -> None:
        self.loaded = loaded
        self.failures: list[PluginFailure] = list(loaded.failures)
        self.provides: dict[str, list[str]] = {name: [] for name in loaded.infos}
        self.kinds: dict[str, Kind[Any]] = {}
        for hook, (attr, word) in _KINDS.items():
            self.kinds[hook] = self._collect(hook, attr, word)

    @classmethod
    def load(cls, *, entrypoints: bool = True) -> Registry:
        """Load every plugin (built-ins and entry points) and collect their records."""
        return cls(get_plugin_manager(entrypoints=entrypoints))

    # -- collection ---------------------------------------------------------------------------

    def _collect(self, hook: str, attr: str, word: str) -> Kind[Any]:
        kind: Kind[Any] = Kind(word)
        for impl in getattr(self.loaded.pm.hook, hook).get_hookimpls():
            try:
                records = list(impl.function() or [])
            except Exception as exc:  # noqa: BLE001 - one plugin's bug must not hide the others
                log.warning("plugin %s failed in %s: %s", impl.plugin_name, hook, exc)
                self.failures.append(self._failure(impl.plugin_name, f"{hook}: {exc}"))
                continue
            for record in records:
                self._add(kind, getattr(record, attr), record, impl.plugin_name)
        return kind

    def _add(self, kind: Kind[Any], key: str, record: Any, plugin: str) -> None:
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

    def _get(self, hook: str, key: str, hint: str = "") -> Any:
        kind = self.kinds[hook]
        if key in kind.conflicts:
            dists = " and ".join(sorted(self._dist(p) for p in kind.conflicts[key]))
            raise PluginError(
                f"{kind.word} {key!r} is registered by more than one plugin ({dists}); "
                f"uninstall all but one of them"
            )
        try:
            return kind.records[key]
        except KeyError:
            known = ", ".join(sorted(kind.records)) or "none"
            raise PluginError(
                f"no {kind.word} plugin named {key!r} is installed (installed: {known}){hint}"
            ) from None

    def issuer(self, name: str) -> IssuerType:
        """The issuer record called ``name``."""
        rec: IssuerType = self._get("lecentral_register_issuers", name)
        return rec

    def service(self, name: str) -> ServiceType:
        """The service record called ``name``; the error suggests the package to install."""
        hint = f"; install it with: pip install lecentral-{name}"
        rec: ServiceType = self._get("lecentral_register_services", name, hint)
        return rec

    def verifier(self, scheme: str) -> VerifierType:
        """The verifier for a URL scheme such as ``tls`` or ``smtp+starttls``."""
        rec: VerifierType = self._get("lecentral_register_verifiers", scheme)
        return rec

    def store_for_url(self, url: str) -> StoreType:
        """The store whose schemes include the driver part of ``url`` (``sqlite``, ``mysql+pymysql``)."""
        scheme = url.split(":", 1)[0]
        kind = self.kinds["lecentral_register_stores"]
        for rec in kind.records.values():
            if scheme in rec.schemes:
                return rec  # type: ignore[no-any-return]
        known = ", ".join(sorted(s for r in kind.records.values() for s in r.schemes))
        raise PluginError(
            f"no store plugin handles database URLs of scheme {scheme!r} (known: {known}); "
            "check [database] url"
        )

    def names(self, hook: str) -> list[str]:
        """Sorted keys registered for a registration hook."""
        return sorted(self.kinds[hook].records)

    # -- notifications and events -------------------------------------------------------------

    def notifiers(self, settings: Mapping[str, Any]) -> list[Any]:
        """The notifiers that ``settings`` (the ``[notify]`` table) enables."""
        active = []
        kind = self.kinds["lecentral_register_notifiers"]
        for name, rec in sorted(kind.records.items()):
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
        caller = getattr(self.loaded.pm.hook, event)
        for impl in reversed(caller.get_hookimpls()):
            try:
                impl.function(*[kwargs[arg] for arg in impl.argnames])
            except Exception as exc:  # noqa: BLE001 - a failing event handler is logged, never fatal
                log.warning("plugin %s failed handling %s: %s", impl.plugin_name, event, exc)

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
        for kind in self.kinds.values():
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
