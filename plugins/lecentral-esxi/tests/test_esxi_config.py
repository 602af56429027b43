"""The ``esxi`` entries of install.toml, through the real loader and the installed plugin.

No daemon needed: these are the checks made when the configuration is loaded, before any
connection, and ``lecentral-install plugins`` / ``status`` as an operator sees them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lecentral_esxi.plugin import DEFAULTS, EsxiOptions
from lecentral_testing.agent import dump_toml

from lecentral.install.config import CertEntry, load_install
from lecentral.registry import Registry


def load(tmp_path: Path, *tables: dict[str, Any]) -> tuple[list[CertEntry], list[str]]:
    """The ``[[cert]]`` entries of an install.toml holding ``tables``: (good ones, errors)."""
    path = tmp_path / "install.toml"
    path.write_text(dump_toml({"database": {"url": "sqlite:///unused.db"}}, list(tables)))
    config = load_install(str(path), Registry.load())
    return list(config.certs), [b.error for b in config.broken]


def test_a_two_line_entry_gets_the_esxi_layout(tmp_path: Path) -> None:
    (entry,), errors = load(tmp_path, {"name": "esx1.example.com", "service": "esxi"})
    assert not errors
    assert entry.key == "/etc/lecentral/esxi/esx1.example.com.key"
    assert entry.files == {"cert": "/etc/lecentral/esxi/esx1.example.com.crt"}
    assert entry.reload == "/etc/init.d/hostd restart && /etc/init.d/rhttpproxy restart"
    assert entry.verify == ["tls://esx1.example.com:443"]
    assert entry.options == EsxiOptions(host="esx1.example.com")


def test_many_hosts_on_one_management_host(tmp_path: Path) -> None:
    """Every host has the same remote paths; the local ones differ by name, so entries never clash."""
    entries, errors = load(tmp_path, *({"name": f"esx{i}.example.com", "service": "esxi"} for i in range(3)))
    assert not errors and len(entries) == 3


def test_options_and_defaults_can_be_overridden(tmp_path: Path) -> None:
    options = {"host": "10.0.0.5", "port": 2222, "user": "certadmin", "remote_dir": "/etc/vmware/ssl2",
               "identity_file": "/root/.ssh/esxi", "known_hosts": "/root/.ssh/known_hosts",
               "persist": "", "crt_chain": False, "connect_timeout": 3.5, "ssh_config": "/root/.ssh/config"}
    (entry,), errors = load(tmp_path, {"name": "esx1.example.com", "service": "esxi",
                                       "reload": "/sbin/services.sh restart", "options": options})
    assert not errors
    assert entry.options == EsxiOptions(**options) and entry.reload == "/sbin/services.sh restart"
    assert set(DEFAULTS) <= {"key", "cert", "reload", "verify", "verify_timeout", "command_timeout", "options"}


@pytest.mark.parametrize(("keys", "error"), [
    ({"options": {"host": "-oProxyCommand=touch /tmp/x"}}, "options.host: '-oProxyCommand=touch /tmp/x' is not valid"),
    ({"options": {"port": "22"}}, "cert[0].options.port must be int, not str ('22')"),
    ({"options": {"port": 70000}}, "options.port: 70000 must be a port number"),
    ({"options": {"host": "esx1\nProxyCommand x"}}, "options.host"),
    ({"options": {"user": "root\n"}}, "options.user"),
    ({"options": {"user": "root; reboot"}}, "options.user: 'root; reboot' is not valid"),
    ({"options": {"remote_dir": "etc/vmware/ssl"}}, "options.remote_dir: 'etc/vmware/ssl' is not valid"),
    ({"options": {"remote_dir": "/etc/vmware/ssl $(reboot)"}}, "options.remote_dir"),
    ({"options": {"identity_file": "id_rsa"}}, "options.identity_file: 'id_rsa' must be an absolute path"),
    ({"options": {"known_hosts": "/etc/lecentral/known hosts"}}, "without spaces or %"),
    ({"options": {"crt_chain": "yes"}}, "cert[0].options.crt_chain must be bool, not str ('yes')"),
    ({"options": {"connect_timeout": 0}}, "options.connect_timeout: 0 must be a number of seconds"),
    ({"options": {"password": "secret"}}, "unknown key cert[0].options.password for service 'esxi'"),
    ({"action": "reboot"}, "cert[0].action: \"reboot\" would reboot this management host, not the ESXi host"),
    ({"chain": "/etc/lecentral/esxi/ca.pem"}, "cert[0].chain: not used by the esxi service"),
    ({"mode": "0640"}, "cert[0].mode: not used by the esxi service"),
])
def test_bad_entries_are_refused_at_load_time(tmp_path: Path, keys: dict[str, Any], error: str) -> None:
    entries, errors = load(tmp_path, {"name": "esx1.example.com", "service": "esxi", **keys},
                           {"name": "www.example.com", "key": "/k", "cert": "/c"})
    assert [e.name for e in entries] == ["www.example.com"]  # the others keep working
    (message,) = errors
    assert error in message
    assert "secret" not in message


def test_lecentral_install_plugins_lists_esxi() -> None:
    """The installed distribution's entry point, as ``lecentral-install plugins`` shows it."""
    out = subprocess.run([sys.executable, "-c", "from lecentral.cli.agent import main; main()",
                          "plugins", "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    services = {s["name"]: s for s in json.loads(out.stdout)["services"]}
    assert services["esxi"]["distribution"] == "lecentral-esxi"
    assert services["esxi"]["defaults"]["options"]["remote_dir"] == "/etc/vmware/ssl"
