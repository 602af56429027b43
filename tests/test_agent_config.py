"""install.toml: service defaults, validation of every key, one broken entry never stopping the others."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lecentral_testing.agent import dump_toml

from lecentral.errors import ConfigError, EntryError
from lecentral.hookspecs import hookimpl
from lecentral.install.config import CertEntry, InstallConfig, load_install
from lecentral.install.service import CommandService
from lecentral.plugins import get_plugin_manager
from lecentral.registry import Registry
from lecentral.types import ServiceType, lazy_service, option


class PickyService(CommandService):
    def check_entry(self, entry: CertEntry) -> None:
        if entry.options.get("chroot", "/").startswith("/") is False:
            raise ConfigError(f"options.chroot of {entry.name} must be absolute")


class DemoPlugin:
    """A service plugin as a third party would write it: defaults make entries two lines."""

    @hookimpl
    def lecentral_register_services(self) -> list[ServiceType]:
        return [ServiceType(
            "demo", PickyService, description="demo daemon",
            defaults={"key": "/etc/demo/{name}.key", "cert": "/etc/demo/{name}.crt",
                      "fullchain": "/etc/demo/demo.full", "check": "demo -t",
                      "reload": "demo reload", "verify": "tls://127.0.0.1:4443",
                      "options": {"chroot": "/var/demo"}},
            options={"chroot": "directory the daemon is chrooted to"})]


@pytest.fixture
def registry() -> Registry:
    loaded = get_plugin_manager(entrypoints=False)
    loaded.pm.register(DemoPlugin(), name="demo")
    return Registry(loaded)


def load(tmp_path: Path, registry: Registry, *certs: dict[str, Any], **tables: Any) -> InstallConfig:
    path = tmp_path / "install.toml"
    path.write_text(dump_toml({"agent": {"state_dir": str(tmp_path)}, **tables}, certs))
    return load_install(str(path), registry)


def only_error(config: InstallConfig) -> str:
    assert not config.certs, config.certs
    assert len(config.broken) == 1
    return config.broken[0].error


def test_service_defaults_make_a_two_line_entry(tmp_path: Path, registry: Registry) -> None:
    config = load(tmp_path, registry, {"name": "www.example.test", "service": "demo"})
    (entry,) = config.certs
    assert entry.cert == "/etc/demo/www.example.test.crt" and entry.reload == "demo reload"
    assert entry.key == "/etc/demo/www.example.test.key"  # {name} expanded
    assert entry.verify == ["tls://127.0.0.1:4443"] and entry.options == {"chroot": "/var/demo"}


def test_entry_keys_win_over_defaults(tmp_path: Path, registry: Registry) -> None:
    config = load(tmp_path, registry, {"name": "www.example.test", "service": "demo",
                                       "reload": "systemctl reload demo", "verify": [],
                                       "options": {"chroot": "/srv/demo"}})
    (entry,) = config.certs
    assert entry.reload == "systemctl reload demo" and entry.verify == []
    assert entry.options == {"chroot": "/srv/demo"}


def test_unknown_option_and_the_service_own_check(tmp_path: Path, registry: Registry) -> None:
    error = only_error(load(tmp_path, registry, {"name": "a.example.test", "service": "demo",
                                                 "options": {"colour": "red"}}))
    assert "unknown key cert[0].options.colour for service 'demo' (allowed: chroot)" in error
    error = only_error(load(tmp_path, registry, {"name": "a.example.test", "service": "demo",
                                                 "options": {"chroot": "relative"}}))
    assert "options.chroot of a.example.test must be absolute" in error


def test_unknown_service_names_the_package(tmp_path: Path, registry: Registry) -> None:
    error = only_error(load(tmp_path, registry, {"name": "a.example.test", "service": "esxi"}))
    assert "no service plugin named 'esxi'" in error and "pip install lecentral-esxi" in error


FILES = {"key": "/k/a.key", "cert": "/c/a.crt"}


@pytest.mark.parametrize(("keys", "words"), [
    ({"colour": "red"}, "unknown key 'cert[0].colour'"),
    ({"name": ""}, "cert[0].name: missing"),
    ({"name": "WWW.Example.test"}, "write it in lower case"),
    ({"name": "not a name"}, "is not a valid DNS name"),
    ({"key": ""}, "cert[0].key: missing"),
    ({"cert": "relative.crt"}, "'relative.crt' must be an absolute path"),
    ({"fullchain": "/c/a.crt"}, "/c/a.crt is also the cert path"),
    ({"mode": "0999"}, "is not an octal file mode"),
    ({"mode": 640}, "mode must be str"),
    ({"mode": "0664"}, "'0664' is wider than \"0644\": a certificate file must not be writable"),
    ({"mode": "0755"}, "'0755' is wider than \"0644\""),
    ({"combined": "/c/a.pem", "mode": "0644"},
     ("'0644' is too wide for combined /c/a.pem, which holds the private key: use \"0600\" or "
     "\"0640\"")),
    ({"combined": "/c/a.pem", "mode": "0604"}, "too wide for combined /c/a.pem"),
    ({"action": "restart"}, "choose one of reload, mail, syslog, reboot"),
    ({"action": "mail"}, "needs [notify] mail_to"),
    ({"action": "syslog"}, "needs [notify] syslog = true"),
    ({"owner": "no-such-user"}, "no user 'no-such-user' on this host"),
    ({"group": "no-such-group"}, "no group 'no-such-group' on this host"),
    ({"verify": "gopher://127.0.0.1:70"}, "gopher"),
    ({"verify": "127.0.0.1:443"}, "expected SCHEME://HOST[:PORT]"),
    ({"combined_order": ["key", "chain"]}, "list cert and optionally key and chain"),
    ({"verify_timeout": 0}, "must be more than 0 seconds"),
])
def test_invalid_entry(tmp_path: Path, registry: Registry, keys: dict[str, Any], words: str) -> None:
    error = only_error(load(tmp_path, registry, {"name": "a.example.test", **FILES, **keys}))
    assert words in error
    assert str(tmp_path / "install.toml") in error


@pytest.mark.parametrize(("keys", "mode"), [
    ({"mode": "0644"}, 0o644), ({"mode": "0444"}, 0o444),
    ({"combined": "/c/a.pem", "mode": "0640"}, 0o640),
    ({"combined": "/c/a.pem", "mode": "0600"}, 0o600),
    # without the key in combined_order, combined is a certificate file like the others
    ({"combined": "/c/a.pem", "combined_order": ["cert", "chain"], "mode": "0644"}, 0o644),
])
def test_narrow_enough_modes_are_accepted(tmp_path: Path, registry: Registry, keys: dict[str, Any],
                                          mode: int) -> None:
    config = load(tmp_path, registry, {"name": "a.example.test", **FILES, **keys})
    assert not config.broken, config.broken
    assert config.certs[0].mode_bits == mode


def test_broken_entry_leaves_the_others(tmp_path: Path, registry: Registry) -> None:
    config = load(tmp_path, registry, {"name": "a.example.test", **FILES, "colour": 1},
                  {"name": "b.example.test", "key": "/k/b.key", "cert": "/c/b.crt"})
    assert [e.name for e in config.certs] == ["b.example.test"]
    assert [b.name for b in config.broken] == ["a.example.test"]


def test_two_entries_may_share_a_name_not_a_file(tmp_path: Path, registry: Registry) -> None:
    """The same certificate for two daemons is fine; two entries writing one file is not."""
    config = load(tmp_path, registry, {"name": "a.example.test", **FILES},
                  {"name": "a.example.test", "service": "demo", "key": "/k/a.key"},
                  {"name": "a.example.test", "service": "demo", "key": "/k/a.key",
                   "cert": "/c/other.crt"},
                  {"name": "c.example.test", "key": "/k/c.key", "cert": "/c/a.crt"})
    assert [e.id for e in config.certs] == ["files-a.example.test", "demo-a.example.test"]
    errors = [b.error for b in config.broken]
    assert "repeats name 'a.example.test' with service 'demo'" in errors[0]
    assert "writes /c/a.crt, which cert[0] (a.example.test) writes too" in errors[1]


def test_whole_file_errors(tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="does not exist; create it or pass --config"):
        load_install(str(tmp_path / "nope.toml"), registry)
    with pytest.raises(ConfigError, match="unknown key 'agent.colour'"):
        load(tmp_path, registry, agent={"colour": 1})
    with pytest.raises(ConfigError, match="agent.keep must be at least 1"):
        load(tmp_path, registry, agent={"keep": 0})
    (tmp_path / "bad.toml").write_text("cert = 1\n")
    with pytest.raises(ConfigError, match=r"written \[\[cert\]\]"):
        load_install(str(tmp_path / "bad.toml"), registry)
    (tmp_path / "env.toml").write_text("[agent]\nkeep = 5\n")
    monkeypatch.setenv("LECENTRAL_INSTALL_CONFIG", str(tmp_path / "env.toml"))
    assert load_install(None, registry).agent.keep == 5


def test_cli_config_error_exit_status(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lecentral.cli.agent import main

    (tmp_path / "bad.toml").write_text("[database]\nurl = 1\n")
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "bad.toml"), "run"])
    assert result.exit_code == 2
    assert "database.url must be str" in result.stderr


def test_the_example_config_loads() -> None:
    """contrib/install.toml.example stays valid (accounts that only exist where those daemons
    are installed are the only errors allowed here)."""
    example = Path(__file__).parents[1] / "contrib" / "install.toml.example"
    config = load_install(str(example), Registry.load())
    assert [e.name for e in config.certs][:1] == ["www.example.com"]
    for broken in config.broken:
        assert "on this host" in broken.error, broken.error


@pytest.mark.parametrize(("notify", "words"), [
    ({"mail_to": ["ops@example.test"], "smtp": "localhost:abc"},
     "[notify] smtp: 'localhost:abc' is not host:port (the port must be a number from 1 to 65535)"),
    ({"mail_to": ["ops@example.test"], "smtp_timeout": 0}, "[notify] smtp_timeout: 0 must be more"),
    ({"syslog": True, "syslog_address": "loghost:70000"}, "[notify] syslog_address: 'loghost:70000'"),
    ({"syslog": True, "syslog_facility": "nope"}, "[notify] syslog_facility 'nope' is not a syslog"),
])
def test_invalid_notify_is_a_config_error(tmp_path: Path, registry: Registry, notify: dict[str, Any],
                                          words: str) -> None:
    """A notifier that cannot be built is refused when the file is read: it used to crash the run
    (smtp port) or fail silently (facility) only when there was something to report."""
    with pytest.raises(ConfigError) as info:
        load(tmp_path, registry, {"name": "a.example.test", **FILES}, notify=notify)
    assert words in str(info.value) and str(tmp_path / "install.toml") in str(info.value)


# ---------------------------------------------------------------- typed options, EntryError


@dataclass(frozen=True)
class TunnelOptions:
    """A service's ``[cert.options]`` as a dataclass: types, defaults and help in one place."""

    host: str = option("{name}", "where the tunnel goes (default: the entry's name)")
    port: int = option(22, "its port")
    hops: list[str] = option([], "jump hosts")  # noqa: RUF009 - option() is a field()
    token: str = option("", "an API token", secret=True)

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise EntryError("port", f"{self.port} is not a port number (1-65535)")


class TunnelService(CommandService):
    def check_entry(self, entry: CertEntry) -> None:
        if entry.options_as(TunnelOptions).host == "localhost" and entry.action == "reboot":
            raise EntryError("action", "\"reboot\" would reboot this host; use \"reload\"")


class TunnelPlugin:
    @hookimpl
    def lecentral_register_services(self) -> list[ServiceType]:
        return [ServiceType("tunnel", lazy_service("test_agent_config:TunnelService"),
                            defaults={"key": "/k/{name}.key", "cert": "/c/{name}.crt"},
                            options_model=TunnelOptions)]


@pytest.fixture
def tunnel_registry() -> Registry:
    loaded = get_plugin_manager(entrypoints=False)
    loaded.pm.register(TunnelPlugin(), name="tunnel")
    return Registry(loaded)


def test_options_model_types_the_options_and_expands_name(tmp_path: Path, tunnel_registry: Registry) -> None:
    config = load(tmp_path, tunnel_registry, {"name": "a.example.test", "service": "tunnel"},
                  {"name": "b.example.test", "service": "tunnel", "options": {"port": 2222, "hops": ["j"]}})
    first, second = config.certs
    assert first.options == TunnelOptions(host="a.example.test", port=22, hops=[])
    assert second.options_as(TunnelOptions) == TunnelOptions(host="b.example.test", port=2222, hops=["j"])
    assert tunnel_registry.service("tunnel").options == {
        "host": "where the tunnel goes (default: the entry's name)", "port": "its port", "hops": "jump hosts",
        "token": "an API token"}
    assert "token" not in repr(TunnelOptions(token="s3cret"))


@pytest.mark.parametrize("keys, error", [
    ({"options": {"port": "22"}}, "cert[1].options.port must be int, not str ('22')"),
    ({"options": {"port": 0}}, "cert[1].options.port: 0 is not a port number (1-65535)"),
    ({"options": {"colour": "red"}}, "unknown key cert[1].options.colour for service 'tunnel' (allowed: hops, host, port, token)"),
    ({"options": "port=22"}, "cert[1].options must be a table"),
    ({"options": {"token": 12345}}, "cert[1].options.token must be str"),
    ({"options": {"host": "localhost"}, "action": "reboot"}, "cert[1].action: \"reboot\" would reboot this host"),
])
def test_option_and_entry_errors_name_file_entry_and_key(tmp_path: Path, tunnel_registry: Registry,
                                                         keys: dict[str, Any], error: str) -> None:
    """The model's and check_entry's EntryError get the core's ``FILE: cert[i].key:`` prefix,
    and break only their entry."""
    config = load(tmp_path, tunnel_registry, {"name": "a.example.test", "service": "tunnel"},
                  {"name": "b.example.test", "service": "tunnel", **keys})
    assert [e.name for e in config.certs] == ["a.example.test"]
    (broken,) = config.broken
    assert broken.error.startswith(f"{tmp_path / 'install.toml'}: "), broken.error
    assert error in broken.error, broken.error
    assert "12345" not in broken.error  # a secret option's value is never shown


def test_lazy_service_imports_on_first_call() -> None:
    factory = lazy_service("json.decoder:JSONDecoder")
    assert type(factory()).__name__ == "JSONDecoder"
    with pytest.raises(ValueError, match="package.module:Name"):
        lazy_service("json.decoder.JSONDecoder")
