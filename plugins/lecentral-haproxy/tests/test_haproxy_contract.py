"""The service contract against Debian's real haproxy, laid out as in production.

``bind ... ssl crt DIR/`` loads the whole directory, which holds the combined file alone; the leaf
the agent compares with the database is beside it, where HAProxy never looks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lecentral_testing.daemons.haproxy import HaproxyServer
from lecentral_testing.service_contract import (
    ContractFiles,
    ServiceContract,
    ServiceHarness,
)


class HaproxyHarness(ServiceHarness):
    service = "haproxy"
    server: HaproxyServer

    def start(self, files: ContractFiles) -> None:
        crt_dir = files.combined.parent  # the contract's combined_dir: combined.pem alone
        self.server = HaproxyServer(self.workdir, combined=files.combined, crt=crt_dir).start()

    def stop(self) -> None:
        self.server.close()

    def entry(self, files: ContractFiles) -> dict[str, Any]:
        # The test daemon's file, commands and port instead of the production defaults;
        # "" leaves out the contract's chain and fullchain files, which HAProxy does not read.
        sni = ServiceContract.contract_name
        return {"combined": str(files.combined), "chain": "", "fullchain": "",
                "check": self.server.check_command, "reload": self.server.reload_command,
                "verify": f"{self.server.verify_urls['https']}?sni={sni}"}

    def break_config(self) -> None:
        with self.server.conf.open("a") as conf:
            conf.write("not_a_haproxy_keyword\n")


class TestHaproxyContract(ServiceContract):
    combined_dir = "crt"

    @pytest.fixture
    def harness(self, tmp_path: Path) -> ServiceHarness:
        return HaproxyHarness(tmp_path / "haproxy")


class TestHaproxyContractEcdsa(TestHaproxyContract):
    key_kind = "ec256"
