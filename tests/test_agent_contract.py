"""The service contract (lecentral_testing.service_contract) run for the built-in ``files``
service against a real nginx, as every service plugin runs it against its own daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lecentral_testing.daemons.nginx import NginxServer
from lecentral_testing.service_contract import (
    ContractFiles,
    ServiceContract,
    ServiceHarness,
)


class NginxFilesHarness(ServiceHarness):
    """nginx reading the full chain and key; driven through the ``files`` service's commands."""

    service = "files"
    server: NginxServer

    def start(self, files: ContractFiles) -> None:
        self.server = NginxServer(self.workdir, cert=files.fullchain, key=files.key).start()

    def stop(self) -> None:
        self.server.close()

    def entry(self, files: ContractFiles) -> dict[str, Any]:
        return {"check": self.server.check_command, "reload": self.server.reload_command,
                "verify": self.server.verify_urls["https"]}

    def break_config(self) -> None:
        with self.server.conf.open("a") as conf:
            conf.write("not_a_directive;\n")


class TestFilesServiceWithNginx(ServiceContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> ServiceHarness:
        return NginxFilesHarness(tmp_path / "nginx")


class TestFilesServiceWithNginxEcdsa(TestFilesServiceWithNginx):
    key_kind = "ec256"
