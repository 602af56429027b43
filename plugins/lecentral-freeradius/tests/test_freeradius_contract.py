"""FreeRADIUS under the shared service contract (:mod:`lecentral_testing.service_contract`), like
every other service plugin: first install, renewal, broken configuration and failed verification
rolled back, each through a real ``lecentral-install run`` against Debian's real FreeRADIUS.

FreeRADIUS presents its certificate inside EAP, which no verify URL reaches: the harness reads it
with wpa_supplicant's real ``eapol_test`` (:meth:`RadiusHarness.presented`), as the plugin does.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from lecentral_freeradius.probe import RadiusTarget, eap_certificate
from lecentral_testing.service_contract import (
    ContractFiles,
    ServiceContract,
    ServiceHarness,
)
from radius_launcher import FreeradiusServer


class RadiusHarness(ServiceHarness):
    """FreeRADIUS whose EAP module reads the contract's cert, key and chain; ``reload`` restarts it."""

    service = "freeradius"
    server: FreeradiusServer

    def start(self, files: ContractFiles) -> None:
        self.server = FreeradiusServer(self.workdir, cert=files.cert, key=files.key, chain=files.chain).start()

    def stop(self) -> None:
        self.server.close()

    def entry(self, files: ContractFiles) -> dict[str, Any]:
        server = self.server
        return {"check": server.check_command, "reload": server.restart_command, "fullchain": "",
                "options": {"server": f"127.0.0.1:{server.auth_port}", "secret": server.secret,
                            "user": server.user, "password": server.password}}

    def break_config(self) -> None:
        with (self.server.confdir / "radiusd.conf").open("a") as conf:
            conf.write("\nlecentral_not_a_section {\n")

    def presented(self) -> str:
        server = self.server
        target = RadiusTarget("127.0.0.1", server.auth_port, server.secret, server.user, server.password)
        return hashlib.sha256(eap_certificate(target, "TLS", 10.0, "eapol_test")).hexdigest()


class TestFreeradiusContract(ServiceContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> RadiusHarness:
        return RadiusHarness(tmp_path / "freeradius")
