"""Configuration loading: every mistake is a clear error naming the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from lecentral.config import CentralConfig, load_central, mask_url, masked
from lecentral.errors import ConfigError


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "lecentral.toml"
    path.write_text(text)
    return str(path)


def test_defaults_when_the_default_file_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LECENTRAL_CONFIG", raising=False)
    monkeypatch.setattr("lecentral.config.DEFAULT_CONFIG", Path("/nonexistent/lecentral.toml"))
    config = load_central(None)
    assert config == CentralConfig()
    assert config.database.url == "sqlite:////var/lib/lecentral/lecentral.db"
    assert config.renew.before_days == 0 and config.renew.before == "auto"  # relative window


def test_a_named_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"{tmp_path}/nope.toml does not exist"):
        load_central(str(tmp_path / "nope.toml"))


def test_environment_variable_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[renew]\nbefore_days = 20\n')
    monkeypatch.setenv("LECENTRAL_CONFIG", path)
    assert load_central(None).renew.before_days == 20


def test_values_and_nested_zone_tables(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    key.write_text('key "k" { algorithm hmac-sha512; secret "c2VjcmV0"; };\n')
    path = write(tmp_path, f'''
[database]
url = "sqlite:///{tmp_path}/db"
[acme]
email = "hostmaster@example.test"
[renew]
before_days = 21
[dns]
server = "127.0.0.1:5353"
propagation_timeout = 30
[dns.zones."svc.example.test"]
tsig_key_file = "{key}"
server = "10.1.1.1:53"
''')
    config = load_central(path)
    assert config.dns.propagation_timeout == 30.0
    assert config.dns.zones["svc.example.test"].tsig_key_file == str(key)
    assert config.path == path


@pytest.mark.parametrize("text, message", [
    ("[renew]\nbefore_dayz = 3\n", "unknown key 'renew.before_dayz'"),
    ("[renw]\n", "unknown key 'renw'"),
    ('[renew]\nbefore_days = "30"\n', "renew.before_days must be int"),
    ("[renew]\nbefore_days = true\n", "renew.before_days must be int"),
    ("[notify]\nsyslog = 1\n", "notify.syslog must be bool"),
    ('[notify]\nmail_to = "ops@example.test"\n', "notify.mail_to must be a list of str"),
    ("[database]\nurl = 1\n", "database.url must be str"),
    ("renew = 3\n", r"\[renew\] must be a table"),
    ('[acme]\nca_bundle = "/nonexistent/ca.pem"\n', "acme.ca_bundle = '/nonexistent/ca.pem': no such file"),
    ('[dns.zones."x.example.test"]\nkey = "/k"\n', r'unknown key \'dns.zones."x.example.test".key\''),
    ("[renew\n", "invalid TOML"),
])
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_central(path)
    assert path in str(info.value)


def test_secret_values_never_appear_in_type_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "[acme]\neab_hmac_key = 12345678\n")
    with pytest.raises(ConfigError) as info:
        load_central(path)
    assert "12345678" not in str(info.value)


def test_masking(tmp_path: Path) -> None:
    path = write(tmp_path, '''
[database]
url = "mysql+pymysql://lecentral:s3cr3t@db.example.test:3306/certs"
[acme]
eab_kid = "kid-1"
eab_hmac_key = "aGVsbG8gd29ybGQ"
''')
    shown = masked(load_central(path))
    assert shown["database"]["url"] == "mysql+pymysql://lecentral:********@db.example.test:3306/certs"
    assert shown["acme"]["eab_hmac_key"] == "********"
    assert shown["acme"]["eab_kid"] == "kid-1"
    assert "s3cr3t" not in str(shown) and "aGVsbG8gd29ybGQ" not in str(shown)
    assert mask_url("sqlite:////var/lib/x.db") == "sqlite:////var/lib/x.db"


@pytest.mark.parametrize("password", ["s3cr#t", "s3/cr3t", "s3cr@t", "s3@cr/t#x", "s3:cr3t"])
def test_masking_a_password_with_url_characters(password: str) -> None:
    """Everything up to the last '@' is the credentials: no fragment of the password is shown."""
    shown = mask_url(f"mysql+pymysql://lecentral:{password}@db.example.test:3306/certs")
    assert shown == "mysql+pymysql://lecentral:********@db.example.test:3306/certs"


@pytest.mark.parametrize(("value", "seconds"), [
    ('"2d"', 172800), ('"36h"', 129600), ('"90m"', 5400), ('"1w"', 604800), ('"1.5d"', 129600),
    ("3600", 3600), ('"3600"', 3600), ("7200.0", 7200),
])
def test_fleet_durations(tmp_path: Path, value: str, seconds: int) -> None:
    config = load_central(write(tmp_path, f"[fleet]\nagent_max_age = {value}\n"))
    assert config.fleet.agent_max_age == seconds


@pytest.mark.parametrize(("text", "error"), [
    ('agent_max_age = "2 days"', 'fleet.agent_max_age must be a duration'),
    ("agent_max_age = -1", "fleet.agent_max_age must be a duration"),
    ('agent_max_age = "1x"', "fleet.agent_max_age must be a duration"),
    ("agent_max_age = 0", "fleet.agent_max_age = 0 is out of range: from 60s to 10 years"),
    ("keep_runs = 99999999999999999999", "fleet.keep_runs = 99999999999999999999 is out of range"),
    ('stale_after = "nan"', "fleet.stale_after must be a duration"),
    ("probe_timeout = 0", "fleet.probe_timeout must be at least 0.1 (not 0.0)"),
    ("probe_workers = 0", "fleet.probe_workers must be at least 1 (not 0)"),
])
def test_bad_fleet_settings_name_the_key(tmp_path: Path, text: str, error: str) -> None:
    path = write(tmp_path, f"[fleet]\n{text}\n")
    with pytest.raises(ConfigError) as caught:
        load_central(path)
    assert error in str(caught.value) and path in str(caught.value)


def test_the_shipped_examples_fleet_table_loads() -> None:
    """contrib/lecentral.toml.example's [fleet] is valid and says the defaults (the whole file
    names paths of a real central host: its other tables are checked where they are used)."""
    import tomllib

    from lecentral.config import FleetConfig, build

    example = Path(__file__).parents[1] / "contrib" / "lecentral.toml.example"
    table = tomllib.loads(example.read_text())["fleet"]
    assert build(FleetConfig, table, "fleet", str(example)) == FleetConfig()


def test_tsig_key_files_may_not_exist_yet(tmp_path: Path) -> None:
    """The key is made in a later step of the guide: loading does not check it, its users do
    (tests/test_dns_old_setups.py shows their error)."""
    path = write(tmp_path, '[dns]\ntsig_key_file = "/nonexistent/tsig.key"\n'
                           '[dns.zones."x.example.test"]\ntsig_key_file = "/nonexistent/x.key"\n')
    config = load_central(path)
    assert config.dns.tsig_key_file == "/nonexistent/tsig.key"
    assert config.dns.zones["x.example.test"].tsig_key_file == "/nonexistent/x.key"


def test_the_shipped_example_loads_as_it_is() -> None:
    """contrib/lecentral.toml.example, copied to /etc/lecentral unchanged, must load: its TSIG key
    file does not exist yet and its primary is a host name (resolved only when used)."""
    example = Path(__file__).parent.parent / "contrib" / "lecentral.toml.example"
    config = load_central(str(example))
    assert config.path == str(example)
    assert config.dns.server == "dns.example.com:53"
    assert config.dns.tsig_key_file == "/etc/lecentral/tsig.key"
    assert not Path(config.dns.tsig_key_file).exists()  # what the test is about
    assert config.acme.email == "hostmaster@example.com" and config.fleet.keep_runs == 90 * 86400


def test_renew_intervals_are_durations(tmp_path: Path) -> None:
    config = load_central(write(tmp_path, '[renew]\nmin_interval = "2h"\nretry_pause = 600\n'))
    assert (config.renew.min_interval, config.renew.retry_pause) == (7200, 600)
    with pytest.raises(ConfigError, match="renew.min_interval must be a duration"):
        load_central(write(tmp_path, "[renew]\nmin_interval = -5\n"))


def test_before_days_out_of_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"renew.before_days = 100000 is out of range: at most 3650"):
        load_central(write(tmp_path, "[renew]\nbefore_days = 100000\n"))


@pytest.mark.parametrize(("value", "loaded"), [('"auto"', "auto"), ('"AUTO"', "auto"), ("1", 1),
                                               ("3", 3)])
def test_renew_processes_is_auto_or_a_number(tmp_path: Path, value: str, loaded: object) -> None:
    assert CentralConfig().renew.processes == "auto"
    config = load_central(write(tmp_path, f"[renew]\nprocesses = {value}\n"))
    assert config.renew.processes == loaded


@pytest.mark.parametrize("value", ["0", "-1", '"2"', "true", "1.5", '"all"'])
def test_renew_processes_mistakes_are_named(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r'renew.processes must be "auto" or a whole number of '
                                          r"processes, at least 1 \(not "):
        load_central(write(tmp_path, f"[renew]\nprocesses = {value}\n"))


AFFINITY = """
import os, sys
from lecentral.config import processes_for
os.sched_setaffinity(0, {int(c) for c in sys.argv[1].split(",")})
print(processes_for("auto"), processes_for(1), processes_for(3))
"""


def test_auto_processes_are_two_where_two_cores_may_run_them() -> None:
    """"auto" follows the CPUs this process may run on (its affinity, as taskset or a cgroup's
    cpuset sets it), in a real process pinned to one core and then to all."""
    import os
    import subprocess
    import sys

    cores = sorted(os.sched_getaffinity(0))

    def auto(cpus: list[int]) -> str:
        return subprocess.run([sys.executable, "-c", AFFINITY, ",".join(map(str, cpus))],
                              capture_output=True, text=True, check=True).stdout.strip()

    assert auto(cores[:1]) == "1 1 3"
    assert auto(cores) == ("2 1 3" if len(cores) >= 2 else "1 1 3")
