"""The engine's error branches, each through the real code path: a service plugin that raises
(registered like a third-party one, loaded through the registry), an entry with no row, a real
TLS daemon that never takes the new certificate, an SMTP relay that is down, a reboot command
that fails, and a dry run over a journal left by a run killed with SIGKILL.

Each test asserts what the operator is told (status, message, exit) AND the file tree.
"""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from agent_world import Mailbox, temp_files, tree
from test_agent_safety import KILLER

from lecentral.certificates import Certificate
from lecentral.hookspecs import hookimpl
from lecentral.install.config import CertEntry, load_install
from lecentral.install.engine import Agent, Result
from lecentral.install.service import CommandService
from lecentral.interfaces import Installer
from lecentral.plugins import get_plugin_manager
from lecentral.registry import Registry
from lecentral.testing.agent import AgentWorld
from lecentral.testing.ports import LOOPBACK, free_port
from lecentral.types import ServiceType

NAME = "www.example.test"
OTHER = "two.example.test"


class FlakyService(CommandService):
    """The ``files`` service, plus a bug on demand: ``options.fail_in`` names the method that
    raises, ``options.raise`` what (``OSError`` with a file name, or a ``RuntimeError``)."""

    def _maybe_fail(self, entry: CertEntry, where: str) -> None:
        if entry.options.get("fail_in") != where:
            return
        if entry.options.get("raise") == "OSError":
            raise OSError(errno.EIO, "Input/output error", "/dev/flaky0")
        raise RuntimeError("flaky plugin bug")

    def installer(self, entry: CertEntry, workdir: Path, keep: int) -> Installer | None:
        self._maybe_fail(entry, "installer")
        return super().installer(entry, workdir, keep)

    def check_config(self, entry: CertEntry) -> None:
        self._maybe_fail(entry, "check_config")
        super().check_config(entry)

    def activate(self, entry: CertEntry) -> None:
        self._maybe_fail(entry, "activate")
        super().activate(entry)


class FlakyPlugin:
    @hookimpl
    def lecentral_register_services(self) -> list[ServiceType]:
        return [ServiceType("flaky", FlakyService, description="files, with bugs on demand",
                            options={"fail_in": "method that raises", "raise": "what it raises"})]


@pytest.fixture
def registry() -> Registry:
    loaded = get_plugin_manager(entrypoints=False)
    loaded.pm.register(FlakyPlugin(), name="flaky")
    return Registry(loaded)


def run(world: AgentWorld, registry: Registry, *, dry_run: bool = False) -> dict[str, Result]:
    config = load_install(str(world.config_path), registry)
    return {r.name: r for r in Agent(config, registry, dry_run=dry_run).run()}


def installed_then_newer(world: AgentWorld, registry: Registry, **entry: object) -> dict[str, tuple[bytes, int, int, int]]:
    world.add(NAME)
    world.issue(NAME, days=30)
    world.write_config(world.entry(NAME, service="flaky", **entry))
    assert run(world, registry)[NAME].status == "installed"
    world.issue(NAME, days=60)
    return tree(world.ssl)


def journal(world: AgentWorld, service: str = "flaky") -> Path:
    return world.state_dir / "entries" / f"{service}-{NAME}" / "journal.json"


@pytest.mark.parametrize("fail_in", ["check_config", "activate"])
@pytest.mark.parametrize("raised", ["OSError", "RuntimeError"])
def test_plugin_raising_after_the_switch_rolls_back(world: AgentWorld, registry: Registry,
                                                    smtp: tuple[Mailbox, int], fail_in: str,
                                                    raised: str) -> None:
    """A plugin's OSError or bug once the new files are in place: rolled back like any other
    failure, and the alert says so (it used to say "NOT installed, no file was changed" with the new files in place
    and the journal left "switched", which every later run finished instead of undoing)."""
    before = installed_then_newer(world, registry)
    world.write_config(world.entry(NAME, service="flaky",
                                   options={"fail_in": fail_in, "raise": raised}))

    result = run(world, registry)[NAME]

    words = "/dev/flaky0: Input/output error" if raised == "OSError" else \
        "unexpected error RuntimeError: flaky plugin bug (service flaky)"
    assert words in result.message
    if fail_in == "check_config":
        assert result.status == "rolled-back", result
        assert "Rolled back: the previous files were put back." in result.message
    else:  # activating the previous files fails the same way: said, and the files are back anyway
        assert result.status == "rollback-failed", result
        assert "the previous files were put back, but: " + words in result.message
    assert tree(world.ssl) == before
    assert not journal(world).exists() and not temp_files(world.ssl)
    assert any(f"{NAME}: install failed" in s for s in smtp[0].subjects())


@pytest.mark.parametrize("raised", ["OSError", "RuntimeError"])
def test_plugin_raising_before_anything_is_touched(world: AgentWorld, registry: Registry,
                                                   smtp: tuple[Mailbox, int], raised: str) -> None:
    """The plugin fails to give an installer: that entry fails, nothing written; the next entry
    is still installed."""
    world.add(NAME)
    world.issue(NAME)
    world.add(OTHER)
    world.issue(OTHER)
    world.write_config(world.entry(NAME, service="flaky",
                                   options={"fail_in": "installer", "raise": raised}),
                       world.entry(OTHER))

    results = run(world, registry)

    assert results[NAME].status == "failed"
    assert ("/dev/flaky0: Input/output error" if raised == "OSError" else
            "unexpected error RuntimeError") in results[NAME].message
    assert results[OTHER].status == "installed"
    assert not list((world.ssl / "certs").glob(f"{NAME}.*"))
    assert any(f"{NAME}: NOT installed" in s for s in smtp[0].subjects())


def test_entry_without_a_row(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """A name the database does not hold (a typo, or removed centrally): that entry fails with
    what to do, nothing is written, exit 1; the other entry is installed."""
    world.add(OTHER)
    world.issue(OTHER)
    world.write_config(world.entry(NAME), world.entry(OTHER))

    out = world.run("run")

    assert out.exit_code == 1
    assert out.by_name(NAME)["status"] == "failed"
    assert f"no certificate named {NAME} in the database; add it on the central host " \
           f"(lecentral add) or fix the name in {world.config_path}" == out.by_name(NAME)["message"]
    assert out.by_name(OTHER)["status"] == "installed"
    assert not list((world.ssl / "certs").glob(f"{NAME}.*"))
    assert any(f"{NAME}: NOT installed" in s for s in smtp[0].subjects())


def start_s_server(files: list[Path], port: int) -> subprocess.Popen[bytes]:
    """A real TLS daemon that reads its certificate once at start and never again (a ``reload``
    that does not reload): openssl s_server."""
    import socket
    import time

    proc = subprocess.Popen(["openssl", "s_server", "-www", "-accept", f"{LOOPBACK}:{port}",
                             "-cert", str(files[0]), "-key", str(files[1])],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.terminate()
    raise AssertionError("openssl s_server did not start")


def test_verify_error_rolls_back_to_what_is_served(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """VerifyError during verification: the daemon keeps presenting the previous certificate;
    rolled back, and the rollback is verified against that same daemon."""
    world.add(NAME)
    old = world.issue(NAME, days=30)
    entry = world.entry(NAME)
    world.write_config(entry)
    assert world.run("run").by_name(NAME)["status"] == "installed"
    port = free_port()
    daemon = start_s_server([Path(entry["fullchain"]), world.key_path(NAME)], port)
    try:
        world.issue(NAME, days=60)
        before = tree(world.ssl)
        world.write_config(world.entry(NAME, reload="true", verify=f"tls://{LOOPBACK}:{port}",
                                       verify_timeout=2))
        out = world.run("run")
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)

    result = out.by_name(NAME)
    assert out.exit_code == 1 and result["status"] == "rolled-back", result
    assert f"verification failed after 2s: tls://{LOOPBACK}:{port} presents certificate sha256 " \
           f"{old.fingerprint[:16]}" in result["message"]
    assert "it serves the previous certificate again" in result["message"]
    assert tree(world.ssl) == before
    assert any("rolled back" in s for s in smtp[0].subjects())


def test_alerts_that_cannot_be_sent(world: AgentWorld) -> None:
    """The relay is down: an install still exits 0 (its alert is only information), a failure
    still exits 1 with its reason on stdout; both say on stderr that the mail did not go."""
    world.notify["smtp"] = f"{LOOPBACK}:{free_port()}"
    world.notify["syslog"] = False
    world.add(NAME)
    world.issue(NAME)
    world.write_config(world.entry(NAME))

    out = world.run("run")

    assert out.exit_code == 0 and out.by_name(NAME)["status"] == "installed"
    assert "could not send the alert" in out.stderr and "Connection refused" in out.stderr

    world.issue(NAME, days=120)
    world.write_config(world.entry(NAME, check="false"))
    out = world.run("run")

    assert out.exit_code == 1 and out.by_name(NAME)["status"] == "rolled-back"
    assert "could not send the alert" in out.stderr


def test_failing_reboot_command_fails_the_entries(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """The files are in place but the reboot that would use them failed: the entries are
    failed (exit 1), not "installed; the host will reboot", and the alert says reboot by hand."""
    world.agent["reboot_command"] = "sh -c 'echo reboot refused >&2; exit 5'"
    world.add(NAME)
    leaf = world.issue(NAME)
    world.add(OTHER)
    world.issue(OTHER)
    world.write_config(world.entry(NAME, action="reboot"), world.entry(OTHER))

    out = world.run("run")

    assert out.exit_code == 1, out.stdout + out.stderr
    result = out.by_name(NAME)
    assert result["status"] == "failed" and result["fingerprint"] == leaf.fingerprint
    assert result["message"] == ("first install; the files are in place, but reboot: \"sh -c "
                                 "'echo reboot refused >&2; exit 5'\" exited with status 5: reboot "
                                 "refused; reboot by hand to use the new certificate")
    assert out.by_name(OTHER)["status"] == "installed"
    assert any("reboot of" in s and "failed" in s for s in smtp[0].subjects())


def test_dry_run_over_an_unfinished_journal(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """A run killed (SIGKILL) between two renames; then --dry-run says it would finish it, and
    changes nothing: the mixed set, the temp file and the journal stay for the real run."""
    world.add(NAME)
    world.issue(NAME, days=30)
    world.write_config(world.entry(NAME))
    assert world.run("run").by_name(NAME)["status"] == "installed"
    new = world.issue(NAME, days=60)
    certs = world.ssl / "certs"
    killed = subprocess.run([sys.executable, "-c", KILLER, str(certs), "--config",
                             str(world.config_path), "run"], capture_output=True, text=True, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    mixed = tree(world.ssl)
    smtp[0].messages.clear()

    out = world.run("run", "--dry-run")

    assert out.exit_code == 0, out.stdout + out.stderr
    result = out.by_name(NAME)
    assert result["status"] == "would-install"
    assert result["message"] == "would finish an interrupted run (journal state prepared)"
    assert tree(world.ssl) == mixed and temp_files(certs)
    assert journal(world, "files").exists()
    assert not smtp[0].messages

    out = world.run("run")
    assert out.by_name(NAME)["status"] == "installed"
    assert Certificate.load((certs / f"{NAME}.full").read_bytes()).fingerprint == new.fingerprint


def test_journal_that_cannot_be_cleared_after_a_good_install(world: AgentWorld) -> None:
    """The reload leaves the state directory read-only (a real read-only bind mount), so the
    finished install's journal cannot be removed: the result is "installed" with a warning (it
    said "NOT installed, no file was changed" with the new files in place), and the next run
    finishes the journal (config test, reload, verify again)."""
    reloads = world.workdir / "reloads"
    world.add(NAME)
    world.issue(NAME, days=30)
    world.write_config(world.entry(NAME, reload=f"sh -c 'echo reload >> {reloads}'"))
    assert world.run("run").by_name(NAME)["status"] == "installed"
    new = world.issue(NAME, days=60)
    entry_dir = world.state_dir / "entries" / f"files-{NAME}"
    subprocess.run(["mount", "--bind", str(entry_dir), str(entry_dir)], check=True)
    try:
        world.write_config(world.entry(NAME, reload=f"sh -c 'echo reload >> {reloads}; "
                                                    f"mount -o remount,ro,bind {entry_dir}'"))
        out = world.run("run")
    finally:
        subprocess.run(["umount", str(entry_dir)], check=True)

    result = out.by_name(NAME)
    assert out.exit_code == 0 and result["status"] == "installed", result
    assert "installed, but its journal could not be cleared" in out.stderr
    assert Certificate.load((world.ssl / "certs" / f"{NAME}.crt").read_bytes()).fingerprint == \
        new.fingerprint
    world.write_config(world.entry(NAME, reload=f"sh -c 'echo reload >> {reloads}'"))

    out = world.run("run")

    assert out.by_name(NAME)["status"] == "installed"
    assert "finishing an interrupted install" in out.by_name(NAME)["message"]
    assert not journal(world, "files").exists()
    assert reloads.read_text().count("reload") == 3
    assert world.run("run").by_name(NAME)["status"] == "up-to-date"


KILL_WHILE_RESTORING = """
import os, signal, sys
sys.path.insert(0, sys.argv[2])
from test_agent_errors import FlakyPlugin
import lecentral.install.fileset as fs
def die(self, journal):
    os.kill(os.getpid(), signal.SIGKILL)  # the power cut, with the journal at "restoring"
fs.LocalFiles._restore_files = die
from lecentral.install.config import load_install
from lecentral.install.engine import Agent
from lecentral.plugins import get_plugin_manager
from lecentral.registry import Registry
loaded = get_plugin_manager(entrypoints=False)
loaded.pm.register(FlakyPlugin(), name="flaky")
registry = Registry(loaded)
Agent(load_install(sys.argv[1], registry), registry).run()
"""


def test_killed_while_rolling_back_then_the_plugin_raises(world: AgentWorld, registry: Registry,
                                                          smtp: tuple[Mailbox, int]) -> None:
    """SIGKILL in the middle of a rollback (journal "restoring"); the next run puts the previous
    files back, and the plugin's activation raises: "rollback-failed" with the plugin's error,
    not a crash nor "NOT installed, no file was changed"."""
    before = installed_then_newer(world, registry)
    world.write_config(world.entry(NAME, service="flaky", check="false"))
    killed = subprocess.run([sys.executable, "-c", KILL_WHILE_RESTORING, str(world.config_path),
                             str(Path(__file__).parent)], capture_output=True, text=True, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert tree(world.ssl) != before  # the new files are still in place
    world.write_config(world.entry(NAME, service="flaky",
                                   options={"fail_in": "activate", "raise": "OSError"}))

    result = run(world, registry)[NAME]

    assert result.status == "rollback-failed", result
    assert result.message == ("a previous run was interrupted while rolling back; the previous "
                              "files are back but: /dev/flaky0: Input/output error")
    assert tree(world.ssl) == before
    assert not journal(world).exists() and not temp_files(world.ssl)
    assert any("ROLLBACK FAILED" in s for s in smtp[0].subjects())
