"""Finding and loading plugins: built-ins first, then the ``lecentral.plugins`` entry points.

Built-in plugins go through the same registration path as third-party ones (as pytest's
default_plugins do). A plugin that fails to import is remembered as a :class:`PluginFailure` and shown
by ``lecentral plugins``; it never stops the process.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType

import pluggy

from lecentral import __version__, hookspecs

log = logging.getLogger(__name__)

ENTRYPOINT_GROUP = "lecentral.plugins"

#: Modules shipped inside lecentral itself, registered exactly like entry-point plugins.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "lecentral.store.plugin",
    "lecentral.builtin.notifiers",
    "lecentral.builtin.verifiers",
    "lecentral.builtin.dns_subzone",
    "lecentral.builtin.webroot",
    "lecentral.install.files",
)


@dataclass(frozen=True)
class PluginInfo:
    """One loaded plugin and where it comes from."""

    name: str
    distribution: str
    version: str
    module: str


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be loaded, with the reason."""

    name: str
    distribution: str
    version: str
    error: str


@dataclass
class LoadedPlugins:
    """The plugin manager plus what was loaded and what failed."""

    pm: pluggy.PluginManager
    infos: dict[str, PluginInfo] = field(default_factory=dict)
    failures: list[PluginFailure] = field(default_factory=list)


def _register(loaded: LoadedPlugins, name: str, obj: object, dist: str, version: str) -> None:
    module = obj.__name__ if isinstance(obj, ModuleType) else type(obj).__module__
    loaded.pm.register(obj, name=name)
    loaded.infos[name] = PluginInfo(name=name, distribution=dist, version=version, module=module)


def get_plugin_manager(*, entrypoints: bool = True) -> LoadedPlugins:
    """Build a plugin manager with the built-ins and every installed ``lecentral.plugins`` entry point.

    With ``entrypoints=False`` only the built-ins are loaded (used by tests that need a clean world).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    loaded = LoadedPlugins(pm=pm)
    for modname in BUILTIN_PLUGINS:
        try:
            _register(loaded, modname, importlib.import_module(modname), "lecentral", __version__)
        except Exception as exc:  # noqa: BLE001 - same rule as third-party plugins: report, carry on
            log.warning("built-in plugin %s failed to load: %s", modname, exc)
            loaded.failures.append(
                PluginFailure(modname, "lecentral", __version__, f"{type(exc).__name__}: {exc}")
            )
    if entrypoints:
        _load_entrypoints(loaded)
    return loaded


def _load_entrypoints(loaded: LoadedPlugins) -> None:
    for ep in entry_points(group=ENTRYPOINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        if ep.name in loaded.infos:
            other = loaded.infos[ep.name]
            loaded.failures.append(PluginFailure(
                ep.name, dist, version,
                f"plugin name {ep.name!r} is already used by distribution {other.distribution}; "
                f"uninstall one of {other.distribution} and {dist}",
            ))
            continue
        try:
            obj = ep.load()
            _register(loaded, ep.name, obj, dist, version)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the tool down
            log.warning("plugin %s from %s %s failed to load: %s", ep.name, dist, version, exc)
            loaded.failures.append(
                PluginFailure(ep.name, dist, version, f"{type(exc).__name__}: {exc}")
            )
