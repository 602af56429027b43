"""Fixtures the agent tests share (registered by conftest.py): Pebble issuing, an SMTP catcher,
a syslog socket, the world; and the helpers they import (:class:`Mailbox`, :func:`tree`, ...).

* ``agent_pebble``: :class:`~lecentral_testing.agent.PebbleOrders` (the ``pebble_orders``
  fixture of lecentral_testing): real certificates from Pebble, stored with ``save_issued``.
* ``smtp``: aiosmtpd in-process on 127.0.0.1, collecting the mails sent during one test
  (the agent's, and the renew job's alerts).
* ``syslog``: a UNIX datagram socket the syslog notifier writes to.
* ``world``: an :class:`~lecentral_testing.agent.AgentWorld` in tmp_path, mail and syslog wired.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from lecentral_testing.agent import AgentWorld, PebbleOrders
from lecentral_testing.daemons.nginx import NginxServer
from lecentral_testing.pki import make_self_signed
from lecentral_testing.ports import LOOPBACK, free_port


@pytest.fixture(scope="session")
def agent_pebble(pebble_orders: PebbleOrders) -> PebbleOrders:
    """The agent tests' name for lecentral_testing's ``pebble_orders``."""
    return pebble_orders


class Mailbox:
    """aiosmtpd's handler: every message received, parsed."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def subjects(self) -> list[str]:
        return [" ".join(str(m["Subject"]).split()) for m in self.messages]  # unfolded

    def bodies(self) -> str:
        return "\n".join(str(m.get_payload()) for m in self.messages)


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    from aiosmtpd.controller import Controller

    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname=LOOPBACK, port=port)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


@pytest.fixture
def smtp(smtp_server: tuple[Mailbox, int]) -> tuple[Mailbox, int]:
    smtp_server[0].messages.clear()
    return smtp_server


class SyslogSocket:
    """A UNIX datagram socket standing in for /dev/log."""

    def __init__(self) -> None:
        # short path: the limit for a UNIX socket path is 107 bytes, pytest's tmp paths are long
        self.dir = tempfile.mkdtemp(prefix="lcsys")
        self.path = f"{self.dir}/log"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)

    def lines(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(65536).decode(errors="replace"))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def syslog() -> Iterator[SyslogSocket]:
    sock = SyslogSocket()
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
def world(tmp_path: Path, smtp: tuple[Mailbox, int], syslog: SyslogSocket) -> Iterator[AgentWorld]:
    w = AgentWorld(tmp_path)
    w.notify = {"mail_to": ["ops@example.test"], "mail_from": "agent@www.example.test",
                "smtp": f"{LOOPBACK}:{smtp[1]}", "smtp_timeout": 10.0, "syslog": True,
                "syslog_address": syslog.path}
    try:
        yield w
    finally:
        w.close()


@contextmanager
def placeholder_nginx(world: AgentWorld, name: str, key: str = "rsa2048") -> Iterator[NginxServer]:
    """The row of ``name`` added (its key made on "the server"), and nginx serving a placeholder
    (self-signed, the same key) from the paths the agent manages, until the block ends."""
    from lecentral.install.csr import load_key

    key_path = world.add(name, key=key)
    full = Path(world.entry(name)["fullchain"])
    placeholder, _ = make_self_signed([name], load_key(key_path), days=2)  # type: ignore[arg-type]
    full.write_bytes(placeholder)
    with NginxServer(world.workdir / "nginx", cert=full, key=key_path, server_name=name) as server:
        yield server


def tree(root: Path) -> dict[str, tuple[bytes, int, int, int]]:
    """Every file under ``root``: content, mode, uid, gid (to prove nothing changed)."""
    import os
    import stat

    out = {}
    for path in sorted(root.rglob("*")):
        st = os.lstat(path)
        if stat.S_ISREG(st.st_mode):
            out[str(path.relative_to(root))] = (path.read_bytes(), stat.S_IMODE(st.st_mode),
                                                st.st_uid, st.st_gid)
    return out


def temp_files(root: Path) -> list[str]:
    """Leftover agent temp files under ``root``."""
    return [str(p) for p in root.rglob("*.lecentral-*")]
