"""``action = "mail"``: the request to restart by hand is delivered, or the entry fails until it is.

The relays are real SMTP servers (aiosmtpd on 127.0.0.1): the shared catcher, one that answers
each RCPT slowly, one that refuses a recipient; "SMTP down" is a port nothing listens on.
"""

from __future__ import annotations

import asyncio
import json
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from agent_world import Mailbox, SyslogSocket

from lecentral.certificates import Certificate
from lecentral.testing.agent import AgentWorld
from lecentral.testing.ports import LOOPBACK, free_port

NAME = "www.example.test"


def request_file(world: AgentWorld) -> Any:
    return world.state_dir / "entries" / f"files-{NAME}" / "restart-request.json"


def mail_entry(world: AgentWorld, smtp_port: int) -> None:
    world.notify["smtp"] = f"{LOOPBACK}:{smtp_port}"
    world.write_config(world.entry(NAME, action="mail"))


def served(world: AgentWorld) -> str:
    return Certificate.load((world.ssl / "certs" / f"{NAME}.crt").read_bytes()).fingerprint


def test_unsent_request_fails_and_is_sent_by_a_later_run(world: AgentWorld, smtp: tuple[Mailbox, int],
                                                         syslog: SyslogSocket) -> None:
    """SMTP down: the files are installed, but the entry FAILS (exit 1) instead of "installed",
    the request is kept (0600) and every run sends it again, failing, until the relay is back."""
    world.add(NAME)
    leaf = world.issue(NAME)
    mail_entry(world, free_port())  # nothing listens: the relay is down

    out = world.run("run")

    assert out.exit_code == 1, out.stdout + out.stderr
    result = out.by_name(NAME)
    assert result["status"] == "failed", result
    assert "the new files are in place, but the request to restart files by hand (mail) could " \
           "NOT be sent" in result["message"] and "Connection refused" in result["message"]
    assert str(request_file(world)) in result["message"]
    assert served(world) == leaf.fingerprint == result["fingerprint"]
    assert stat.S_IMODE(request_file(world).stat().st_mode) == 0o600
    assert any("restart files on" in line for line in syslog.lines())  # syslog had it once

    status = json.loads(world.run("status", "--json").stdout)["certs"][0]
    assert f"the request to restart by hand is NOT sent yet ({request_file(world)})" in status["state"]

    mail_entry(world, smtp[1])
    dry = world.run("run", "--dry-run")  # says so, sends nothing
    assert dry.exit_code == 0 and not smtp[0].messages
    assert f"would send again the unsent request in {request_file(world)}" in \
        dry.by_name(NAME)["message"]
    mail_entry(world, free_port())

    again = world.run("run")  # still down: still a failure, not "up-to-date"
    assert again.exit_code == 1
    assert again.by_name(NAME)["status"] == "failed"
    assert "from an earlier run is still not sent" in again.by_name(NAME)["message"]
    assert not smtp[0].messages

    mail_entry(world, smtp[1])  # the relay is back
    sent = world.run("run")

    assert sent.exit_code == 0, sent.stdout + sent.stderr
    assert sent.by_name(NAME)["status"] == "up-to-date"
    assert "was sent now" in sent.by_name(NAME)["message"]
    assert [s for s in smtp[0].subjects() if "by hand" in s] == [
        f"[lecentral] WARNING: {NAME}: restart files on {world_host()} by hand"]
    assert "Sent again" in smtp[0].bodies() and leaf.fingerprint in smtp[0].bodies()
    assert not request_file(world).exists()

    smtp[0].messages.clear()
    assert world.run("run").exit_code == 0
    assert not smtp[0].messages  # sent once, not on every run


def world_host() -> str:
    import socket

    return socket.getfqdn()


def test_delivered_request_leaves_nothing_pending(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    world.add(NAME)
    world.issue(NAME)
    mail_entry(world, smtp[1])

    out = world.run("run")

    assert out.exit_code == 0 and out.by_name(NAME)["status"] == "installed"
    assert "an operator was asked to restart" in out.by_name(NAME)["message"]
    assert any("by hand" in s for s in smtp[0].subjects())
    assert not request_file(world).exists()


KILL_WHILE_SENDING = """
import os, signal, sys
import lecentral.install.request as request
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)  # the power cut, between keeping the request and sending it
request.deliver = die
from lecentral.cli.agent import main
sys.argv = ["lecentral-install", *sys.argv[1:]]
main()
"""


def test_run_killed_before_sending_leaves_the_request_to_the_next(world: AgentWorld,
                                                                  smtp: tuple[Mailbox, int]) -> None:
    """SIGKILL after the files were switched and the request kept, before it was sent: the next
    run sees the certificate up to date AND sends the request."""
    world.add(NAME)
    leaf = world.issue(NAME)
    mail_entry(world, smtp[1])

    killed = subprocess.run([sys.executable, "-c", KILL_WHILE_SENDING, "--config",
                             str(world.config_path), "run"], capture_output=True, text=True, check=False)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert request_file(world).exists() and served(world) == leaf.fingerprint
    assert not smtp[0].messages

    out = world.run("run")

    assert out.exit_code == 0, out.stdout + out.stderr
    assert "was sent now" in out.by_name(NAME)["message"]
    assert any("by hand" in s for s in smtp[0].subjects())
    assert not request_file(world).exists()


class SlowRelay(Mailbox):
    """Takes ``pause`` seconds to answer each RCPT (a tarpit, or an overloaded relay)."""

    def __init__(self, pause: float) -> None:
        super().__init__()
        self.pause = pause

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        await asyncio.sleep(self.pause)
        envelope.rcpt_tos.append(address)
        return "250 OK"


class PickyRelay(Mailbox):
    """Refuses mail for nobody@..., accepts the rest."""

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def relay(handler: Mailbox) -> Iterator[tuple[Mailbox, int]]:
    from aiosmtpd.controller import Controller

    port = free_port()
    controller = Controller(handler, hostname=LOOPBACK, port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def slow_relay() -> Iterator[tuple[Mailbox, int]]:
    yield from relay(SlowRelay(pause=0.5))


@pytest.fixture
def picky_relay() -> Iterator[tuple[Mailbox, int]]:
    yield from relay(PickyRelay())


def test_smtp_timeout_is_one_deadline_for_every_recipient(world: AgentWorld,
                                                          slow_relay: tuple[Mailbox, int]) -> None:
    """Four recipients, each RCPT answered after 0.5 s, smtp_timeout 1.2 s: each step is within
    the timeout (smtplib alone would wait 4 x 0.5 s and deliver), the whole is not: failed."""
    world.add(NAME)
    world.issue(NAME)
    world.notify["mail_to"] = [f"ops{i}@example.test" for i in range(4)]
    world.notify["smtp_timeout"] = 1.2
    mail_entry(world, slow_relay[1])

    out = world.run("run")

    result = out.by_name(NAME)
    assert out.exit_code == 1 and result["status"] == "failed", result
    assert "not finished within smtp_timeout = 1.2s" in result["message"]
    assert not slow_relay[0].messages
    assert request_file(world).exists()


def test_a_refused_recipient_is_an_error(world: AgentWorld, picky_relay: tuple[Mailbox, int]) -> None:
    """smtplib only raises when every recipient is refused; one refused out of two is reported."""
    world.add(NAME)
    world.issue(NAME)
    world.notify["mail_to"] = ["ops@example.test", "nobody@example.test"]
    mail_entry(world, picky_relay[1])

    out = world.run("run")

    result = out.by_name(NAME)
    assert out.exit_code == 1 and result["status"] == "failed", result
    assert "the relay refused nobody@example.test (nobody@example.test: 550 5.1.1 no such user " \
           "here); the others got it" in result["message"]
    assert len(picky_relay[0].messages) == 1  # ops@ has it
    assert request_file(world).exists()


def test_action_syslog_when_syslog_is_down(world: AgentWorld, smtp: tuple[Mailbox, int],
                                           syslog: SyslogSocket) -> None:
    """``action = "syslog"``: the syslog line is the request. With nothing at the syslog socket it
    is not sent (the syslog notifier used to return as if it had been: logging swallows errors),
    so the entry fails and the next run logs it once syslog is back."""
    world.add(NAME)
    world.issue(NAME)
    live = world.notify["syslog_address"]
    world.notify["syslog_address"] = live + ".gone"
    world.write_config(world.entry(NAME, action="syslog"))

    out = world.run("run")

    result = out.by_name(NAME)
    assert out.exit_code == 1 and result["status"] == "failed", result
    assert f"by hand (syslog) could NOT be sent: syslog to {live}.gone failed: No such file or " \
           "directory" in result["message"]
    assert any("new certificate installed" in s for s in smtp[0].subjects())  # not the channel

    world.notify["syslog_address"] = live
    world.write_config(world.entry(NAME, action="syslog"))
    out = world.run("run")

    assert out.exit_code == 0 and "was sent now" in out.by_name(NAME)["message"]
    assert any(f"{NAME}: new certificate installed on" in line and "Sent again" in line
               for line in syslog.lines())
    assert not request_file(world).exists()
