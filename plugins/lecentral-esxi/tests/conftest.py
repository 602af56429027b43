"""The OpenSSH daemon these tests push to (its launcher lives here: only this plugin uses it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sshd_launcher import SshServer


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """OpenSSH's sshd on 127.0.0.1 (``port``), logging in ``user`` (root) with ``identity``, host key
    in ``known_hosts``; ``authorize(pub)`` accepts another key. Shared: never change its config."""
    with SshServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server
