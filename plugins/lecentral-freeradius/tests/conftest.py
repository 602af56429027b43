"""The FreeRADIUS daemon these tests run against (its launcher lives here: only this plugin uses it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lecentral_testing.daemons.fixtures import CertFilesFactory
from radius_launcher import FreeradiusServer


@pytest.fixture(scope="session")
def freeradius_server(tmp_path_factory: pytest.TempPathFactory,
                      cert_files_factory: CertFilesFactory) -> Iterator[FreeradiusServer]:
    """FreeRADIUS on 127.0.0.1 (UDP ``auth_port``), client ``secret``, test ``user``/``password``,
    EAP on its cert/key/chain files; ``restart_command`` restarts it the way the agent would."""
    files = cert_files_factory(["radius.example.test"])
    with FreeradiusServer(tmp_path_factory.mktemp("freeradius"), cert=files.cert, key=files.key,
                          chain=files.chain) as server:
        yield server
