"""What is special about the ``haproxy`` service, against Debian's real haproxy on 127.0.0.1.

The four contract tests are in test_haproxy_contract.py (the worked example of
docs/plugin-authors.md); here: the defaults, why the leaf never goes into the crt directory, the
combined file's order and mode, and the entries the service refuses.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from lecentral_haproxy.plugin import DEFAULTS
from lecentral_testing.agent import AgentWorld, dump_toml
from lecentral_testing.daemons.certs import write_cert_files
from lecentral_testing.daemons.haproxy import HaproxyServer
from lecentral_testing.pki import make_self_signed

from lecentral.install.config import load_install
from lecentral.install.csr import load_key
from lecentral.registry import Registry

NAME = "lb.example.test"
NAME_EXAMPLE = "lb.example.com"  # the HAProxy entry of contrib/install.toml.example


def load(tmp_path: Path, *tables: dict[str, Any]) -> Any:
    """install.toml holding ``tables``, through the real loader."""
    path = tmp_path / "install.toml"
    path.write_text(dump_toml({"database": {"url": "sqlite:///unused.db"}}, list(tables)))
    return load_install(str(path), Registry.load())


def test_a_two_line_entry_gets_the_combined_file_alone_in_the_crt_directory(tmp_path: Path) -> None:
    config = load(tmp_path, {"name": NAME, "service": "haproxy"})
    assert not config.broken, config.broken
    (entry,) = config.certs
    assert entry.key == f"/etc/ssl/private/{NAME}.key"
    assert entry.files == {"cert": f"/etc/haproxy/{NAME}.crt",
                           "combined": f"/etc/haproxy/certs/{NAME}.pem"}
    assert (entry.combined_order, entry.mode) == (["cert", "chain", "key"], "0600")
    assert entry.check == "haproxy -c -f /etc/haproxy/haproxy.cfg"
    assert entry.reload == "systemctl reload haproxy"
    assert entry.verify == [f"tls://127.0.0.1:443?sni={NAME}"]


def test_haproxy_refuses_a_certificate_without_its_key_in_a_crt_directory(tmp_path: Path) -> None:
    """Why the defaults keep the leaf out of /etc/haproxy/certs/: the real haproxy -c fails."""
    files = write_cert_files(tmp_path / "pki", [NAME])
    crt_dir = tmp_path / "certs"
    crt_dir.mkdir()
    combined = crt_dir / f"{NAME}.pem"
    combined.write_bytes(files.cert.read_bytes() + files.key.read_bytes())
    server = HaproxyServer(tmp_path / "haproxy", combined=combined, crt=crt_dir)
    server.ports = {"https": 1}  # never started: only the config test reads the configuration
    server.write_config()
    subprocess.run(server.check_argv, check=True, capture_output=True)
    shutil.copy(files.cert, crt_dir / f"{NAME}.crt")
    out = subprocess.run(server.check_argv, capture_output=True, text=True, check=False)
    assert out.returncode != 0
    assert f"No Private Key found in '{crt_dir}/{NAME}.crt.key'" in out.stdout + out.stderr


def test_a_file_of_the_entry_in_the_crt_directory_breaks_only_that_entry(tmp_path: Path) -> None:
    config = load(tmp_path,
                  {"name": NAME, "service": "haproxy", "cert": f"/etc/haproxy/certs/{NAME}.crt"},
                  {"name": "ok.example.test", "service": "haproxy"},
                  {"name": "x.example.test", "service": "haproxy", "combined": ""})
    assert [entry.name for entry in config.certs] == ["ok.example.test"]
    leaf, empty = config.broken
    assert (f"cert[0].cert: /etc/haproxy/certs/{NAME}.crt is in "
            "/etc/haproxy/certs/, the directory of combined; HAProxy loads every file of a crt "
            "directory and fails on a certificate without its key: put cert outside "
            f"/etc/haproxy/certs/ (cert's default: /etc/haproxy/{NAME}.crt)") in leaf.error
    assert "cert[2].combined: is empty" in empty.error


def test_the_combined_file_is_leaf_chain_key_0600_and_alone_in_its_directory(tmp_path: Path) -> None:
    """A real run with the production layout (paths moved under tmp_path): the crt directory
    holds only the combined file, leaf then chain then key, mode 0600; haproxy presents it. Then
    a broken haproxy.cfg: the rollback's message quotes HAProxy, and nothing is left behind."""
    world = AgentWorld(tmp_path / "world")
    key = world.add(NAME)
    crt_dir, leaf_path = tmp_path / "etc" / "certs", tmp_path / "etc" / f"{NAME}.crt"
    crt_dir.mkdir(parents=True)
    combined = crt_dir / f"{NAME}.pem"
    placeholder, _ = make_self_signed([NAME], load_key(key), days=2)
    combined.write_bytes(placeholder + key.read_bytes())
    server = HaproxyServer(tmp_path / "haproxy", combined=combined, crt=crt_dir).start()
    try:
        leaf = world.issue(NAME, days=30)
        world.write_config({"name": NAME, "service": "haproxy", "key": str(key),
                            "cert": str(leaf_path), "combined": str(combined),
                            "check": server.check_command, "reload": server.reload_command,
                            "verify": f"{server.verify_urls['https']}?sni={NAME}"})
        result = world.run("run").by_name(NAME)
        assert result["status"] == "installed", result
        row = world.store.get(NAME)
        assert row is not None
        assert combined.read_bytes() == row.crt + row.ca + key.read_bytes()
        assert stat.S_IMODE(os.stat(combined).st_mode) == 0o600
        assert os.listdir(crt_dir) == [combined.name]
        assert leaf_path.read_bytes() == row.crt
        server.wait_presented(leaf.fingerprint)

        # haproxy -c fails: the operator reads HAProxy's own alert; nothing changed on disk
        with server.conf.open("a") as conf:
            conf.write("not_a_haproxy_keyword\n")
        world.issue(NAME, days=60)
        before = combined.read_bytes(), leaf_path.read_bytes()
        result = world.run("run").by_name(NAME)
        assert result["status"] == "rolled-back", result
        assert "config test" in result["message"], result["message"]
        assert "unknown keyword 'not_a_haproxy_keyword'" in result["message"], result["message"]
        assert (combined.read_bytes(), leaf_path.read_bytes()) == before
        assert os.listdir(crt_dir) == [combined.name]
        server.wait_presented(leaf.fingerprint)
    finally:
        server.close()
        world.close()


def test_lecentral_install_plugins_lists_haproxy() -> None:
    """The installed distribution's entry point, as ``lecentral-install plugins --json`` shows it."""
    out = subprocess.run([sys.executable, "-c", "from lecentral.cli.agent import main; main()",
                          "plugins", "--json"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 0, out.stderr
    services = {s["name"]: s for s in json.loads(out.stdout)["services"]}
    assert services["haproxy"]["distribution"] == "lecentral-haproxy"
    assert services["haproxy"]["defaults"] == DEFAULTS


def test_the_contrib_example_keeps_the_leaf_out_of_the_crt_directory(tmp_path: Path) -> None:
    """contrib/install.toml.example's HAProxy entry is one the haproxy service accepts (it used
    to write the leaf into /etc/haproxy/certs/, which HAProxy refuses to load)."""
    example = Path(__file__).parents[3] / "contrib" / "install.toml.example"
    (table,) = [t for t in tomllib.loads(example.read_text())["cert"] if t["name"] == NAME_EXAMPLE]
    config = load(tmp_path, {**table, "service": "haproxy"})
    assert not config.broken, config.broken
    (entry,) = config.certs
    assert os.path.dirname(entry.cert) != os.path.dirname(entry.combined)
    assert entry.combined_order == DEFAULTS["combined_order"]
