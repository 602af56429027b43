"""Finding and loading plugins: built-ins first, then the ``lecentral.plugins`` entry points.

Built-in plugins go through the same registration path as third-party ones (as pytest's
default_plugins do). A plugin that fails to import is remembered as a :class:`PluginFailure` and shown
by ``lecentral plugins``; it never stops the process. So is a hook implementation that matches no
hook (a misspelt name is otherwise silently never called: pluggy's ``check_pending``).

A plugin can be blocked by name, before it is imported: ``[plugins] disable`` in the configuration
file or ``$LECENTRAL_DISABLE_PLUGINS`` (names separated by commas or spaces); pluggy's
``set_blocked``. That is how an operator takes a broken plugin out without uninstalling it.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import ModuleType

import pluggy

from lecentral import __version__, hookspecs

log = logging.getLogger(__name__)

ENTRYPOINT_GROUP = "lecentral.plugins"
DISABLE_ENV = "LECENTRAL_DISABLE_PLUGINS"

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
    #: blocked plugins that are installed: name -> (distribution, version)
    blocked: dict[str, tuple[str, str]] = field(default_factory=dict)


def disabled_from_env() -> list[str]:
    """The plugin names in ``$LECENTRAL_DISABLE_PLUGINS``."""
    return [n for n in re.split(r"[\s,]+", os.environ.get(DISABLE_ENV, "")) if n]


def _register(loaded: LoadedPlugins, name: str, obj: object, dist: str, version: str) -> None:
    module = obj.__name__ if isinstance(obj, ModuleType) else type(obj).__module__
    try:
        loaded.pm.register(obj, name=name)
    except Exception:
        # pluggy may have added some of the plugin's hooks before refusing one: none stays
        if loaded.pm.get_plugin(name) is not None:
            loaded.pm.unregister(name=name)
        raise
    loaded.infos[name] = PluginInfo(name=name, distribution=dist, version=version, module=module)


def get_plugin_manager(*, entrypoints: bool = True, disabled: Iterable[str] = ()) -> LoadedPlugins:
    """Build a plugin manager with the built-ins and every installed ``lecentral.plugins`` entry point.

    With ``entrypoints=False`` only the built-ins are loaded (used by tests that need a clean world).
    ``disabled`` (plus ``$LECENTRAL_DISABLE_PLUGINS``) names plugins never to import: entry point
    names, or a built-in's module name.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    loaded = LoadedPlugins(pm=pm)
    blocked = [*disabled, *disabled_from_env()]
    for name in blocked:
        pm.set_blocked(name)
    for modname in BUILTIN_PLUGINS:
        if pm.is_blocked(modname):
            loaded.blocked[modname] = ("lecentral", __version__)
            continue
        try:
            _register(loaded, modname, importlib.import_module(modname), "lecentral", __version__)
        except Exception as exc:  # noqa: BLE001 - same rule as third-party plugins: report, carry on
            log.warning("built-in plugin %s failed to load: %s", modname, exc)
            loaded.failures.append(
                PluginFailure(modname, "lecentral", __version__, f"{type(exc).__name__}: {exc}")
            )
    if entrypoints:
        _load_entrypoints(loaded)
        for name in dict.fromkeys(blocked):  # a typo must not look like a disabled plugin
            if name not in loaded.blocked:
                error = (f"disabled by [plugins] disable or ${DISABLE_ENV}, but no plugin named "
                         f"{name!r} is installed (a typo? see lecentral plugins)")
                log.warning("%s", error)
                loaded.failures.append(PluginFailure(name, "?", "?", error))
    check_pending(loaded)
    return loaded


def check_pending(loaded: LoadedPlugins) -> None:
    """Report every hook implementation that matches no hook spec (pluggy's ``check_pending``,
    which raises at the first one; here each becomes a failure of its plugin, the others load)."""
    for hook_name, caller in vars(loaded.pm.hook).items():
        if not isinstance(caller, pluggy.HookCaller) or caller.spec is not None:
            continue
        for impl in caller.get_hookimpls():
            if impl.optionalhook:
                continue
            info = loaded.infos.get(impl.plugin_name)
            dist, version = (info.distribution, info.version) if info else ("?", "?")
            error = (f"{hook_name} is not a hook of lecentral {__version__} (misspelt, or written "
                     "for another version?): it is never called; see docs/hooks.md")
            log.warning("plugin %s: %s", impl.plugin_name, error)
            loaded.failures.append(PluginFailure(impl.plugin_name, dist, version, error))


def _load_entrypoints(loaded: LoadedPlugins) -> None:
    for ep in entry_points(group=ENTRYPOINT_GROUP):
        # the distribution's METADATA parsed once (its .name and .version parse it each)
        metadata = ep.dist.metadata if ep.dist is not None else None
        dist = metadata["Name"] if metadata is not None else "?"
        version = metadata["Version"] if metadata is not None else "?"
        if loaded.pm.is_blocked(ep.name):
            loaded.blocked[ep.name] = (dist, version)
            continue
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
