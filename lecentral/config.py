"""TOML configuration: loading, validation and masking, in one place.

Each table is a frozen dataclass; its fields are the only keys allowed, typed by their annotations.
Unknown keys, wrong types and missing files are :class:`ConfigError` naming the key and the file.
Field metadata: ``secret=True`` (masked by ``config show``), ``must_exist=True`` (a path that must
exist when set; an empty string means unset), ``checked_on_use=True`` (a path only its reader
checks, see :func:`used_path`), ``parser="NAME"`` (a value only :data:`_PARSERS` ``[NAME]`` can
check, such as ``renew.before``). A table whose keys must agree with each other defines
``validate_table(where, source)``, called once it is built (``renew.before`` and ``before_days``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lecentral.errors import ConfigError

DEFAULT_CONFIG = Path("/etc/lecentral/lecentral.toml")
CONFIG_ENV = "LECENTRAL_CONFIG"
MASK = "********"

T = TypeVar("T")


def secret(default: str = "") -> Any:
    """A string field whose value is never printed."""
    return field(default=default, metadata={"secret": True})


def duration(default: int, minimum: int = 0) -> Any:
    """A duration field: seconds (a number) or a string such as ``"2d"``, ``"36h"``, ``"90m"``;
    held as whole seconds once loaded, at least ``minimum``, at most :data:`MAX_DURATION`."""
    return field(default=default, metadata={"duration": True, "minimum": minimum})


def at_least(default: float, minimum: float) -> Any:
    """A number field that must be at least ``minimum``."""
    return field(default=default, metadata={"minimum": minimum})


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: no duration setting means more than this (ten years); larger values are typos
MAX_DURATION = 10 * 365 * 86400


def parse_duration(value: Any, where: str, source: str, minimum: int = 0) -> int:
    """Seconds of a duration setting; ConfigError naming the key for anything else."""
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = (float(text[:-1]) * _UNITS[text[-1]] if text and text[-1] in _UNITS
                       else float(text))
        except ValueError:
            seconds = None
    if seconds is None or math.isnan(seconds) or seconds < 0:
        raise ConfigError(f"{source}: {where} must be a duration: seconds, or a number with a "
                          f"unit s, m, h, d or w, e.g. \"2d\" or \"36h\" (not {value!r})")
    if not minimum <= seconds <= MAX_DURATION:
        raise ConfigError(f"{source}: {where} = {value!r} is out of range: from {minimum}s to "
                          f"{MAX_DURATION // (365 * 86400)} years")
    return int(seconds)


def existing_path(default: str = "") -> Any:
    """A path field that must name an existing file when it is set."""
    return field(default=default, metadata={"must_exist": True})


#: an ACME profile name (draft-ietf-acme-profiles) as lecentral accepts it, in ``[acme] profile``,
#: ``lecentral set --profile`` and lecentral_cert_settings: the CAs' names are short tokens
#: (``classic``, ``tlsserver``, ``shortlived``)
PROFILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PROFILE_RULE = "letters, digits, '.', '_' and '-', at most 64, starting with a letter or digit"


def profile_name(default: str = "") -> Any:
    """A field holding an ACME profile name ("" for none: the CA's default)."""
    return field(default=default, metadata={"pattern": PROFILE_RE, "rule": PROFILE_RULE})


def used_path(default: str = "") -> Any:
    """A path field checked only by the commands that read the file, not when the configuration
    loads: the file may be made in a later step of the guide (the TSIG key: after ``lecentral
    init`` and ``config show``), and only its reader can say which step makes it."""
    return field(default=default, metadata={"checked_on_use": True})


@dataclass(frozen=True)
class DatabaseConfig:
    """``[database]``: where the ``certs`` table lives, and how long to retry a crowded or
    restarting server (``retry_for`` seconds, 0: never; waits from ``retry_delay`` doubling up to
    ``retry_max_delay``, jittered: lecentral.store.retry)."""

    url: str = field(default="sqlite:////var/lib/lecentral/lecentral.db", metadata={"url": True})
    retry_for: float = at_least(60.0, 0.0)
    retry_delay: float = at_least(0.5, 0.01)
    retry_max_delay: float = at_least(10.0, 0.01)

    def validate_table(self, where: str, source: str) -> None:
        """The waits must fit the retry time, which is bounded (an agent run must end)."""
        if self.retry_for > MAX_RETRY_FOR:
            raise ConfigError(f"{source}: {where}.retry_for = {self.retry_for:g} is more than "
                              f"{MAX_RETRY_FOR} seconds; a run waiting longer for its database is "
                              "better failing loudly (and trying again at the next timer)")
        if self.retry_max_delay < self.retry_delay:
            raise ConfigError(f"{source}: {where}.retry_max_delay ({self.retry_max_delay:g}) must "
                              f"be at least retry_delay ({self.retry_delay:g})")


#: the longest ``[database] retry_for`` (seconds)
MAX_RETRY_FOR = 3600
#: the longest a monitoring check retries a crowded database: NRPE gives a plugin 10 s by
#: default (60 s at most); an answer (UNKNOWN, naming the database) beats a killed check
CHECK_RETRY_FOR = 5.0


def for_a_check(database: DatabaseConfig) -> DatabaseConfig:
    """``[database]`` as a monitoring check uses it: ``retry_for`` at most :data:`CHECK_RETRY_FOR`."""
    return dataclasses.replace(database, retry_for=min(database.retry_for, CHECK_RETRY_FOR))


#: a CA's name in ``[[acme.ca]]``: recorded per certificate (lecentral_cert_settings.issuer_ca)
CA_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CA_NAME_RULE = "letters, digits, '.', '_' and '-', at most 64, starting with a letter or digit"
#: the name of the one CA of the single ``[acme]`` form (no ``[[acme.ca]]``)
DEFAULT_CA_NAME = "default"
#: the ``[acme]`` keys an ``[[acme.ca]]`` entry has instead: set in both places, which one applies
#: would be a guess, so that is a ConfigError
PER_CA_KEYS = ("directory", "email", "account_key", "ca_bundle", "eab_kid", "eab_hmac_key")


@dataclass(frozen=True)
class CaConfig:
    """``[[acme.ca]]``: one CA of the fallback list, tried in order, each with its own account."""

    name: str = field(default="", metadata={"pattern": CA_NAME_RE, "rule": CA_NAME_RULE})
    directory: str = ""
    email: str = ""
    account_key: str = ""
    ca_bundle: str = existing_path()
    eab_kid: str = ""
    eab_hmac_key: str = secret()
    profile: str = profile_name()  # "": [acme] profile applies

    def validate_table(self, where: str, source: str) -> None:
        """Every entry names itself, its directory and its own account key."""
        for key in ("name", "directory", "account_key"):
            if not getattr(self, key):
                raise ConfigError(f"{source}: {where}.{key} is required in every [[acme.ca]] entry")


@dataclass(frozen=True)
class AcmeConfig:
    """``[acme]``: the CA and the account used to talk to it; or, with ``[[acme.ca]]``, the CAs
    tried in order (the next one only when an order failed for a reason that is the CA's)."""

    directory: str = "https://acme-v02.api.letsencrypt.org/directory"
    email: str = ""
    account_key: str = "/var/lib/lecentral/account.key"  # writable under the unit's sandbox
    ca_bundle: str = existing_path()
    eab_kid: str = ""
    eab_hmac_key: str = secret()
    poll_timeout: float = 300.0  # seconds to wait for validation and issuance of one order
    profile: str = profile_name()  # the ACME profile to order ("": the CA's default)
    ca: list[CaConfig] = field(default_factory=list)  # [[acme.ca]]: the fallback list, in order

    def validate_table(self, where: str, source: str) -> None:
        """``[[acme.ca]]`` replaces the single-CA keys: both given is ambiguous. Names and account
        keys are unique (the name is recorded per certificate; an account record
        ``<account_key>.json`` belongs to one CA)."""
        if not self.ca:
            return
        defaults = AcmeConfig()
        both = [k for k in PER_CA_KEYS if getattr(self, k) != getattr(defaults, k)]
        if both:
            raise ConfigError(f"{source}: [{where}] {', '.join(both)} and [[{where}.ca]] both say "
                              f"which CA to use; with [[{where}.ca]] entries, move "
                              f"{'it' if len(both) == 1 else 'them'} into the entries (the "
                              f"single-CA keys are for a configuration without [[{where}.ca]])")
        for key in ("name", "account_key"):
            seen: set[str] = set()
            for index, entry in enumerate(self.ca):
                value = getattr(entry, key)
                if value in seen:
                    raise ConfigError(f"{source}: {where}.ca[{index}].{key} = {value!r} is used by "
                                      f"an earlier [[{where}.ca]] entry; each CA needs its own")
                seen.add(value)

    def authorities(self) -> list[tuple[str, AcmeConfig]]:
        """(name, the one-CA configuration of it) of every CA, in the order they are tried: the
        ``[[acme.ca]]`` entries, or the single ``[acme]`` CA named :data:`DEFAULT_CA_NAME`."""
        if not self.ca:
            return [(DEFAULT_CA_NAME, self)]
        return [(entry.name, dataclasses.replace(
            self, directory=entry.directory, email=entry.email, account_key=entry.account_key,
            ca_bundle=entry.ca_bundle, eab_kid=entry.eab_kid, eab_hmac_key=entry.eab_hmac_key,
            profile=entry.profile or self.profile, ca=[])) for entry in self.ca]

    def first(self) -> AcmeConfig:
        """The first CA's configuration: what one-CA commands use (``lecentral account``, ARI
        windows of certificates without a recorded issuing CA, the certbot-webroot issuer)."""
        return self.authorities()[0][1]


AUTO = "auto"


def parse_before(value: Any, where: str, source: str) -> str:
    """``renew.before`` checked and normalised (the text kept: :func:`before_rule` reads it).

    A bare number is refused: "0.5" could mean half the lifetime or half a second, and 30 could
    mean days or seconds; the message says how to write each.
    """
    text = value.strip().lower() if isinstance(value, str) else None
    hint = (f"{where} must be \"auto\", a fraction of the certificate's lifetime (\"1/3\", "
            f"\"50%\") or a duration before it expires with a unit s, m, h, d or w (\"36h\", "
            f"\"30d\")")
    if text is None or not text:
        raise ConfigError(f"{source}: {hint} (not {value!r})")
    if text == AUTO:
        return AUTO
    if "/" in text or text.endswith("%"):
        try:
            fraction = before_fraction(text)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"{source}: {hint} (not {value!r})") from None
        if not 0 < fraction < 1:
            raise ConfigError(f"{source}: {where} = {value!r}: a fraction of the lifetime must be "
                              "more than 0 and less than 1 (\"1/3\": renew with a third left)")
        return text
    if text[-1] not in _UNITS:
        try:
            float(text)
        except ValueError:
            raise ConfigError(f"{source}: {hint} (not {value!r})") from None
        raise ConfigError(f"{source}: {hint} (not {value!r}: a number without a unit is "
                          "ambiguous)")
    parse_duration(text, where, source, minimum=60)
    return text


def parse_processes(value: Any, where: str, source: str) -> int | str:
    """``renew.processes``: "auto" or a whole number, at least 1."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ConfigError(f"{source}: {where} must be \"auto\" or a whole number of processes, at "
                      f"least 1 (not {value!r})")


def processes_for(setting: int | str) -> int:
    """The processes ``renew.processes`` asks for here: "auto" is 2 where this process may run
    on 2 cores or more (its CPU affinity, not only the machine's cores) and its cgroups' CPU
    quota, if any, allows at least 1.5 cores, else 1."""
    if setting != AUTO:
        return int(setting)
    return auto_processes()[0]


def auto_processes() -> tuple[int, str]:
    """``renew.processes = "auto"`` here (:func:`processes_for`), and why, for ``-vv``."""
    from lecentral.idle import quota_cores

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = quota_cores()
    why = (f"{cores} core(s) in this process's CPU affinity, "
           + ("no cgroup CPU quota" if quota is None else f"a cgroup CPU quota of {quota:.2f} cores"))
    return (2 if cores >= 2 and (quota is None or quota >= 1.5) else 1), why


def before_fraction(text: str) -> float:
    """The fraction of ``"1/3"`` or ``"50%"`` (ValueError for anything else)."""
    if text.endswith("%"):
        return float(text[:-1]) / 100
    top, _, bottom = text.partition("/")
    return float(top) / float(bottom)


@dataclass(frozen=True)
class RenewConfig:
    """``[renew]``: when and how ``lecentral renew`` asks for certificates."""

    csr_dir: str = "/etc/lecentral/csr"
    #: when to renew, relative to the certificate: "auto" (1/3 of its lifetime left, 1/2 under 10
    #: days), a fraction ("1/3", "50%") or a duration before notAfter ("36h", "30d")
    before: str = field(default=AUTO, metadata={"parser": "renew_before"})
    before_days: int = field(default=0, metadata={"minimum": 0})  # > 0: the absolute override
    min_interval: int = duration(3600)  # seconds or "1h": the rate guard between attempts
    retry_pause: int = duration(3600)  # seconds or "1h" between --rounds
    max_failures: int = 10
    #: failures of a run alerted one by one; the rest of each pass in one alert at its end
    #: (lecentral/renew/alerts.py)
    alert_digest_after: int = field(default=10, metadata={"minimum": 0})
    workers: int = 8
    #: processes for a pass of more than ``workers`` certificates, the ``workers`` threads shared
    #: out among them (lecentral/renew/forked.py): 1 keeps every pass in one process, one core;
    #: "auto" is 2 where this process may run on 2 cores or more (affinity and CPU quota; for
    #: the console script, one sat idle while it started: lecentral/renew/forked.py), else 1
    processes: int | str = field(default=AUTO, metadata={"parser": "renew_processes"})
    http01_issuer: str = "certbot-webroot"
    dns01_issuer: str = "dns-subzone"
    ari: bool = True  # ask the CA's renewal information (RFC 9773) when its directory offers it
    state_dir: str = "/var/lib/lecentral/renew"  # the spool of issued certificates not yet saved
    #: how long the renew lock lasts unrenewed where it is a lease (a Galera cluster; docs/ha.md)
    lease: int = duration(60, minimum=10)

    def validate_table(self, where: str, source: str) -> None:
        """``before`` and ``before_days`` are two answers to one question: both set is an error
        (which one wins would be a guess about what the operator meant)."""
        if self.before_days > 3650:  # a typo: no certificate lives ten years
            raise ConfigError(f"{source}: {where}.before_days = {self.before_days} is out of range: "
                              "at most 3650 (and less than the certificates' lifetime)")
        if self.before_days and self.before != AUTO:
            raise ConfigError(f"{source}: {where}.before = {self.before!r} and {where}.before_days "
                              f"= {self.before_days} both say when to renew; keep one (before_days "
                              "is the absolute override of the relative before)")


@dataclass(frozen=True)
class ZoneConfig:
    """``[dns.zones."<zone>"]``: a per-zone override of the TSIG key and primary server."""

    tsig_key_file: str = used_path()
    tsig_key_name: str = ""  # which key of the file, when it holds several
    server: str = ""  # "host:port"; a host name is resolved once per run


@dataclass(frozen=True)
class DnsConfig:
    """``[dns]``: the primary to send RFC 2136 updates to, the key, and propagation checks."""

    server: str = "127.0.0.1:53"  # "host:port"; a host name is resolved once per run
    port: int = 53
    tsig_key_file: str = used_path()
    tsig_key_name: str = ""  # which key of the file, when it holds several
    propagation_timeout: float = 120.0
    propagation_interval: float = 1.0
    check_resolvers: list[str] = field(default_factory=list)
    # NS host name -> "IP:port" to ask instead of its A/AAAA on `port` (NAT, split views, test worlds)
    nameserver_addresses: dict[str, str] = field(default_factory=dict)
    zones: dict[str, ZoneConfig] = field(default_factory=dict)


@dataclass(frozen=True)
class CertbotConfig:
    """``[certbot]``: the certbot-webroot issuer's own state."""

    state_dir: str = "/var/lib/lecentral/certbot"
    command: str = "certbot"


@dataclass(frozen=True)
class Http01Config:
    """``[http01]``: how the HTTP-01 issuers check a site before asking the CA."""

    port: int = 80  # where the CA connects (always 80 at Let's Encrypt); the self-check asks there
    self_check: bool = True  # fetch every name's challenge file ourselves before the CA does


@dataclass(frozen=True)
class NotifyConfig:
    """``[notify]``: alerts, shared by the central host and the agents."""

    mail_to: list[str] = field(default_factory=list)
    mail_from: str = "lecentral@localhost"
    smtp: str = "localhost:25"
    smtp_timeout: float = 30.0
    syslog: bool = False
    syslog_address: str = "/dev/log"
    syslog_facility: str = "daemon"


@dataclass(frozen=True)
class PluginsConfig:
    """``[plugins]``: plugins never to import (an entry point name such as ``apache``, or a
    built-in's module name); ``$LECENTRAL_DISABLE_PLUGINS`` adds to the list."""

    disable: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FleetConfig:
    """``[fleet]``: when a host, an endpoint or the renew timer counts as an alert (docs/fleet.md)."""

    stale_after: int = duration(2 * 86400)  # a newer certificate this old and still not served
    agent_max_age: int = duration(2 * 86400, minimum=60)  # an agent silent this long: "silent"
    renew_max_age: int = duration(2 * 86400, minimum=60)  # no renew run this long: "dead-timer"
    probe_timeout: float = at_least(10.0, 0.1)  # seconds per endpoint for lecentral probe
    probe_workers: int = at_least(64, 1)  # endpoints probed at once
    keep_runs: int = duration(90 * 86400, minimum=86400)  # older lecentral_runs are pruned


@dataclass(frozen=True)
class CentralConfig:
    """The whole central configuration (``lecentral.toml``)."""

    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    acme: AcmeConfig = field(default_factory=AcmeConfig)
    renew: RenewConfig = field(default_factory=RenewConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    certbot: CertbotConfig = field(default_factory=CertbotConfig)
    http01: Http01Config = field(default_factory=Http01Config)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    path: str = field(default="", metadata={"internal": True})


# --- generic validation -----------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_value(value: Any, tp: Any, where: str, source: str, hide: bool = False) -> Any:
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: [{where}] must be a table")
        return build(tp, value, where, source)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {where} must be a list of {_type_name(item)}")
        return [_check_value(v, item, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {where} must be a table")
        return {k: _check_value(v, item, f'{where}."{k}"', source) for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(
            f"{source}: {where} must be {_type_name(tp)}, not {type(value).__name__} ({value!r})"
            if not (hide or _is_secret_name(where)) else f"{source}: {where} must be {_type_name(tp)}"
        )
    return value


def _is_secret_name(where: str) -> bool:
    return any(word in where for word in ("secret", "password", "hmac"))


def build(cls: type[T], table: Mapping[str, Any], where: str, source: str) -> T:
    """Validate ``table`` against dataclass ``cls``; ``where`` names the table in errors."""
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"{where}.{key}" if where else key
        if key not in fields:
            allowed = ", ".join(sorted(fields))
            raise ConfigError(f"{source}: unknown key {dotted!r} (allowed here: {allowed})")
        meta = fields[key].metadata
        if meta.get("duration"):
            values[key] = parse_duration(value, dotted, source, meta.get("minimum", 0))
            continue
        if meta.get("parser"):
            values[key] = _PARSERS[meta["parser"]](value, dotted, source)
            continue
        checked = _check_value(value, hints[key], dotted, source, bool(meta.get("secret")))
        if "minimum" in meta and checked < meta["minimum"]:
            raise ConfigError(f"{source}: {dotted} must be at least {meta['minimum']} (not "
                              f"{checked!r})")
        if meta.get("pattern") and checked and not meta["pattern"].match(checked):
            raise ConfigError(f"{source}: {dotted} = {checked!r} is not valid ({meta['rule']})")
        if fields[key].metadata.get("must_exist") and checked and not Path(checked).is_file():
            raise ConfigError(f"{source}: {dotted} = {checked!r}: no such file")
        values[key] = checked
    built = cls(**values)
    check = getattr(built, "validate_table", None)
    if callable(check):
        check(where, source)
    return built


#: field parsers named by ``metadata={"parser": ...}`` (the functions are defined above the tables)
_PARSERS = {"renew_before": parse_before, "renew_processes": parse_processes}


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; syntax errors and unreadable files become ConfigError naming it."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist; create it or pass --config") from None
    except PermissionError:
        raise ConfigError(f"configuration file {path} is not readable by this user") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def resolve_path(explicit: str | None, env: str, default: Path) -> tuple[Path, bool]:
    """The config path to use, and whether the user named it (so that its absence is an error)."""
    if explicit:
        return Path(explicit), True
    if os.environ.get(env):
        return Path(os.environ[env]), True
    return default, False


def disabled_plugins(explicit: str | None, env: str, default: Path) -> list[str]:
    """``[plugins] disable`` of a configuration file, read alone: the registry is built from it
    before the rest of the file can be validated against the plugins that loaded."""
    path, named = resolve_path(explicit, env, default)
    if not named and not path.exists():
        return []
    table = read_toml(path).get("plugins", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [plugins] must be a table")
    return build(PluginsConfig, table, "plugins", str(path)).disable


def load_central(explicit: str | None = None) -> CentralConfig:
    """Load ``lecentral.toml``: ``--config``, then ``$LECENTRAL_CONFIG``, then the default path.

    A missing default file means built-in defaults; a missing file the user named is an error.
    """
    path, named = resolve_path(explicit, CONFIG_ENV, DEFAULT_CONFIG)
    if not named and not path.exists():
        return CentralConfig()
    config = build(CentralConfig, read_toml(path), "", str(path))
    return dataclasses.replace(config, path=str(path))


# --- showing --------------------------------------------------------------------------------------


def mask_url(url: str) -> str:
    """A database URL with its password replaced by the mask.

    Everything up to the *last* ``@`` counts as the credentials, so a password with a raw ``@``,
    ``/`` or ``#`` in it is masked whole (never a fragment of it shown as the host).
    """
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:{MASK}@{host}"


#: what to write instead of a character that ends the password in a URL
PERCENT_ENCODING = "@ as %40, / as %2F, # as %23, ? as %3F, : as %3A and % itself as %25"


def url_password_problem(url: str) -> str | None:
    """Why ``url`` cannot be parsed safely, or ``None``; the answer quotes no part of the URL.

    A URL parser ends the password at its first ``@``: with a raw ``@`` in the password the rest
    of it becomes the host name, which the driver then prints in its connection error.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or rest.startswith("/"):  # sqlite:////path: no credentials
        return None
    _, at, after = rest.partition("@")
    if at and "@" in after.split("?", 1)[0]:
        return (f"[database] url ({scheme}://...) has more than one '@' before the host: the "
                "password (or user name) contains a raw '@'. Percent-encode it in the URL: "
                f"{PERCENT_ENCODING} (for example p@ss/w#rd becomes p%40ss%2Fw%23rd)")
    return None


def masked(obj: Any) -> Any:
    """A plain dict of a config dataclass with every secret masked, for printing."""
    if not dataclasses.is_dataclass(obj):
        return obj
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("secret") and value:
            value = MASK
        elif f.metadata.get("url"):
            value = mask_url(value)
        elif isinstance(value, dict):
            value = {k: masked(v) for k, v in value.items()}
        elif isinstance(value, list):  # [[acme.ca]]: each entry's secrets masked too
            value = [masked(v) for v in value]
        else:
            value = masked(value)
        out[f.name] = value
    return out
