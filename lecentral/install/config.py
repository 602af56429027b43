"""``/etc/lecentral/install.toml``: the agent's configuration, loaded and validated in one place.

Tables: ``[database]`` and ``[notify]`` (the same dataclasses as on the central host), ``[agent]``
(state directory, backups), and one ``[[cert]]`` per certificate installed on this server. Each
``[[cert]]`` is merged over the ``defaults`` of the service it names, then checked. A broken entry
(unknown key, service plugin not installed, bad path) is reported and skipped; the others run.
"""

from __future__ import annotations

import dataclasses
import grp
import pwd
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lecentral.config import (
    DatabaseConfig,
    NotifyConfig,
    PluginsConfig,
    build,
    read_toml,
    resolve_path,
)
from lecentral.errors import ConfigError, CsrError, EntryError, LecentralError
from lecentral.interfaces import (
    Service,  # at run time: build() reads InstallConfig's hints
)
from lecentral.names import check_name
from lecentral.records import (
    CERT_MAX_MODE,
    COMBINED_PARTS,
    KEY_BEARING_MAX_MODE,
    CertEntry,
)

if TYPE_CHECKING:
    from lecentral.registry import Registry

DEFAULT_INSTALL_CONFIG = Path("/etc/lecentral/install.toml")
INSTALL_CONFIG_ENV = "LECENTRAL_INSTALL_CONFIG"

#: what happens after the files are in place (the seed's alternatives)
ACTIONS = ("reload", "mail", "syslog", "reboot")
@dataclass(frozen=True)
class AgentConfig:
    """``[agent]``: where the agent keeps its journal and backups, and how many it keeps."""

    state_dir: str = "/var/lib/lecentral/install"
    keep: int = 3
    reboot_command: str = "systemctl reboot"
    # write this host's deployments and runs (and events) to the central database: fleet truth
    report: bool = False
    host: str = ""  # the name this host reports under (default: its FQDN); see docs/fleet.md


@dataclass(frozen=True)
class BrokenEntry:
    """A ``[[cert]]`` entry that could not be used, and why (shown and alerted, never fatal to the others)."""

    index: int
    name: str
    error: str

    @property
    def label(self) -> str:
        return self.name or f"[[cert]] #{self.index + 1}"


@dataclass(frozen=True)
class InstallConfig:
    """The whole agent configuration (``install.toml``)."""

    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    certs: tuple[CertEntry, ...] = field(default=(), metadata={"internal": True})
    broken: tuple[BrokenEntry, ...] = field(default=(), metadata={"internal": True})
    path: str = field(default="", metadata={"internal": True})
    #: the service of each entry (by ``CertEntry.id``), built once when the entry was resolved
    services: Mapping[str, Service] = field(default_factory=dict, metadata={"internal": True})

    def service(self, entry: CertEntry) -> Service:
        """The service that installs ``entry`` (the one that checked it at load time)."""
        return self.services[entry.id]


def load_install(explicit: str | None, registry: Registry) -> InstallConfig:
    """Load ``install.toml``: ``--config``, then ``$LECENTRAL_INSTALL_CONFIG``, then the default path."""
    path, _ = resolve_path(explicit, INSTALL_CONFIG_ENV, DEFAULT_INSTALL_CONFIG)
    data = read_toml(path)
    source = str(path)
    tables = data.pop("cert", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{source}: cert must be an array of tables, written [[cert]]")
    config = build(InstallConfig, data, "", source)
    if config.agent.keep < 1:
        raise ConfigError(f"{source}: agent.keep must be at least 1 (backups are what rollbacks use)")
    try:  # a notifier that cannot be built would fail only when there is something to report
        registry.notifiers(notify_settings(config))
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    certs: list[CertEntry] = []
    broken: list[BrokenEntry] = []
    services: dict[str, Service] = {}
    for index, table in enumerate(tables):
        try:
            entry, service = resolve_target(table, index, registry, config.notify, source)
            _check_unique(entry, certs, source)
            certs.append(entry)
            services[entry.id] = service
        except LecentralError as exc:
            name = table.get("name") if isinstance(table.get("name"), str) else ""
            broken.append(BrokenEntry(index, name, str(exc)))
    return dataclasses.replace(config, certs=tuple(certs), broken=tuple(broken), path=source,
                               services=services)


def resolve_entry(table: Mapping[str, Any], index: int, registry: Registry,
                  notify: NotifyConfig, source: str) -> CertEntry:
    """Merge one ``[[cert]]`` table over its service's defaults and validate it."""
    return resolve_target(table, index, registry, notify, source)[0]


def resolve_target(table: Mapping[str, Any], index: int, registry: Registry,
                   notify: NotifyConfig, source: str) -> tuple[CertEntry, Service]:
    """One ``[[cert]]`` resolved once: the entry merged over its service's defaults and
    validated, and the service (looked up and built once) that checked it and will install it."""
    where = f"cert[{index}]"
    service_name = table.get("service", "files")
    if not isinstance(service_name, str):
        raise ConfigError(f"{source}: {where}.service must be str")
    stype = registry.service(service_name)
    if not isinstance(table.get("options", {}), dict):
        raise ConfigError(f"{source}: {where}.options must be a table, written [cert.options]")
    name = table.get("name")
    # {name} is expanded once, here: in the service's defaults and in what the admin wrote
    # (the [cert.options] the admin wrote are taken as written: a secret may hold braces)
    defaults = {k: v for k, v in stype.defaults.items() if k != "options"}
    merged = expand_name({**defaults, **{k: v for k, v in table.items() if k != "options"}}, name)
    options = {**expand_name(stype.defaults.get("options", {}), name), **table.get("options", {})}
    if isinstance(merged.get("verify"), str):
        merged["verify"] = [merged["verify"]] if merged["verify"] else []
    entry = build(CertEntry, merged, where, source)
    _validate(entry, where, source, notify)
    unknown = sorted(set(options) - set(stype.options))
    if unknown:
        allowed = ", ".join(sorted(stype.options)) or "none"
        raise ConfigError(f"{source}: unknown key {where}.options.{unknown[0]} for service "
                          f"{service_name!r} (allowed: {allowed})")
    typed = options if stype.options_model is None else typed_options(
        stype.options_model, options, entry.name, where, source)
    entry = dataclasses.replace(entry, options=typed, index=index)
    from lecentral.verify import check_verify_url

    for url in entry.verify:
        try:
            check_verify_url(registry, url)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {where}.verify: {exc}") from None
    service = stype.factory()
    try:
        service.check_entry(entry)
    except EntryError as exc:
        raise ConfigError(f"{source}: {where}.{exc.key}: {exc.message}") from None
    return entry, service


def typed_options(model: type[Any], values: Mapping[str, Any], name: str, where: str,
                  source: str) -> Any:
    """``[cert.options]`` (over the service's defaults) as an instance of its options dataclass.

    The model's own defaults get ``{name}`` expanded like the service's; types are checked by
    :func:`lecentral.config.build` and values by the model's ``__post_init__``, whose
    :class:`EntryError` names a key of the table.
    """
    own = {f.name: f.default for f in dataclasses.fields(model) if f.default is not dataclasses.MISSING}
    try:
        return build(model, {**expand_name(own, name), **values}, f"{where}.options", source)
    except EntryError as exc:
        raise ConfigError(f"{source}: {where}.options.{exc.key}: {exc.message}") from None
    except (ValueError, TypeError) as exc:  # a model checking with ValueError, or a plugin bug:
        raise ConfigError(f"{source}: {where}.options: {exc}") from None  # this entry's, not all


def expand_name(values: Mapping[str, Any], name: object) -> dict[str, Any]:
    """``values`` with ``{name}`` in every string (in lists and tables too) replaced by the
    entry's ``name``, so that a plugin can default to per-certificate paths and verify URLs
    (``/etc/ssl/certs/{name}.crt``, ``tls://127.0.0.1:443?sni={name}``) and a typical entry is two
    lines. A ``name`` that is not a string (an error reported later) expands nothing."""
    def expand(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("{name}", name) if isinstance(name, str) else value
        if isinstance(value, list):
            return [expand(v) for v in value]
        if isinstance(value, Mapping):
            return {k: expand(v) for k, v in value.items()}
        return value

    return {key: expand(value) for key, value in values.items()}


def _validate(entry: CertEntry, where: str, source: str, notify: NotifyConfig) -> None:
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{source}: {where}.{key}: {why}")

    if not entry.name:
        raise bad("name", "missing; set it to the certificate's name in the database")
    try:
        if check_name(entry.name) != entry.name:
            raise bad("name", f"write it in lower case without a trailing dot: {check_name(entry.name)!r}")
    except CsrError as exc:
        raise bad("name", str(exc)) from None
    for key in ("key", "cert"):
        if not getattr(entry, key):
            raise bad(key, f"missing; service {entry.service!r} has no default for it")
    paths = {"key": entry.key, **entry.files}
    for key, value in paths.items():
        if not value.startswith("/"):
            raise bad(key, f"{value!r} must be an absolute path")
    seen: dict[str, str] = {}
    for key, value in paths.items():
        if value in seen:
            raise bad(key, f"{value} is also the {seen[value]} path; every file needs its own path")
        seen[value] = key
    parts = entry.combined_order
    if not set(parts) <= set(COMBINED_PARTS) or len(set(parts)) != len(parts) or "cert" not in parts:
        raise bad("combined_order", f"{parts!r}: list cert and optionally key and chain, once each")
    if entry.mode:
        try:
            bits = int(entry.mode, 8)
        except ValueError:
            bits = -1
        if not 0 <= bits <= 0o777:
            raise bad("mode", f"{entry.mode!r} is not an octal file mode such as \"0640\"")
        _check_mode(entry, bits, bad)
    if entry.action not in ACTIONS:
        raise bad("action", f"{entry.action!r}: choose one of {', '.join(ACTIONS)}")
    if entry.action == "mail" and not notify.mail_to:
        raise bad("action", "\"mail\" needs [notify] mail_to, the operator who restarts by hand")
    if entry.action == "syslog" and not notify.syslog:
        raise bad("action", "\"syslog\" needs [notify] syslog = true")
    for key in ("verify_timeout", "command_timeout"):
        if getattr(entry, key) <= 0:
            raise bad(key, "must be more than 0 seconds")
    _check_account(entry, where, source)


def _check_mode(entry: CertEntry, bits: int, bad: Callable[[str, str], ConfigError]) -> None:
    """``mode`` applies to every file of the entry: refuse one that is too wide for any of them."""
    keyed = [role for role in entry.files if entry.key_bearing(role)]
    if keyed and bits & ~KEY_BEARING_MAX_MODE:
        role = keyed[0]
        raise bad("mode", f"{entry.mode!r} is too wide for {role} {entry.files[role]}, which holds "
                          "the private key: use \"0600\" or \"0640\" (mode applies to every file "
                          "of the entry), or leave mode unset (certificates 0644, key-bearing "
                          "files 0600)")
    if bits & ~CERT_MAX_MODE:
        raise bad("mode", f"{entry.mode!r} is wider than \"0644\": a certificate file must not be "
                          "writable by its group or others, nor executable; use \"0644\" or "
                          "\"0640\"")


def _check_account(entry: CertEntry, where: str, source: str) -> None:
    if entry.owner and not entry.owner.isdigit():
        try:
            pwd.getpwnam(entry.owner)
        except KeyError:
            raise ConfigError(f"{source}: {where}.owner: no user {entry.owner!r} on this host") from None
    if entry.group and not entry.group.isdigit():
        try:
            grp.getgrnam(entry.group)
        except KeyError:
            raise ConfigError(f"{source}: {where}.group: no group {entry.group!r} on this host") from None


def _check_unique(entry: CertEntry, earlier: list[CertEntry], source: str) -> None:
    for other in earlier:
        if other.id == entry.id:
            raise ConfigError(f"{source}: cert[{entry.index}] repeats name {entry.name!r} with service "
                              f"{entry.service!r} (already cert[{other.index}])")
        clash = set(other.files.values()) & set(entry.files.values())
        if clash:
            raise ConfigError(f"{source}: cert[{entry.index}] writes {min(clash)}, which "
                              f"cert[{other.index}] ({other.name}) writes too")


def notify_settings(config: InstallConfig) -> dict[str, Any]:
    """The ``[notify]`` table as the registry's notifiers read it."""
    return dataclasses.asdict(config.notify)
