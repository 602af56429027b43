"""The contract every service plugin must pass, against its real daemon (certbot's dns_test_common idea).

A plugin's test module subclasses :class:`ServiceContract` and provides a ``harness`` fixture
returning a :class:`ServiceHarness` for its daemon; it then inherits four tests that drive the real
``lecentral-install run`` against that daemon:

* first install: the certificate in the database replaces a placeholder and is served;
* renewal: a newer one is installed and served, and a second run changes nothing;
* broken config: the daemon's config test fails, the previous files come back, nothing reloads;
* verify failure: activation leaves the old certificate served, the previous files come back.

A complete example is ``plugins/lecentral-haproxy/tests/test_haproxy_contract.py`` (shown in full in
docs/plugin-authors.md); in short::

    from lecentral_testing.service_contract import ContractFiles, ServiceContract, ServiceHarness

    class NginxHarness(ServiceHarness):
        service = "nginx"
        def start(self, files): self.server = NginxServer(self.workdir, cert=files.fullchain,
                                                          key=files.key).start()
        def stop(self): self.server.close()
        def entry(self, files): return {"check": self.server.check_command, ...}
        def break_config(self): self.server.conf.write_text("broken")

    class TestNginxContract(ServiceContract):
        @pytest.fixture
        def harness(self, tmp_path): return NginxHarness(tmp_path / "nginx")
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lecentral.certificates import Certificate
from lecentral_testing.agent import AgentWorld, RunOutcome


@dataclass(frozen=True)
class ContractFiles:
    """The files the agent writes and the daemon reads, all in one directory."""

    key: Path
    cert: Path
    chain: Path
    fullchain: Path
    combined: Path

    @classmethod
    def under(cls, directory: Path, key: Path, combined_dir: str = "") -> ContractFiles:
        """The files in ``directory``; ``combined.pem`` in its subdirectory ``combined_dir`` if given."""
        return cls(key=key, cert=directory / "cert.pem", chain=directory / "chain.pem",
                   fullchain=directory / "fullchain.pem",
                   combined=directory / combined_dir / "combined.pem")


class ServiceHarness(ABC):
    """The plugin side of the contract: start its daemon on the files, and say how to break it."""

    #: the service plugin under test (the ``service`` key of the entry)
    service: str = "files"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    @abstractmethod
    def start(self, files: ContractFiles) -> None:
        """Start the daemon reading ``files`` (each holds a valid placeholder already)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the daemon and clean up."""

    @abstractmethod
    def entry(self, files: ContractFiles) -> dict[str, Any]:
        """The ``[[cert]]`` keys for this daemon: ``check``, ``reload``, ``verify``, file paths
        (``cert``/``chain``/``fullchain`` default to ``files``; set one to "" to leave it out)."""

    @abstractmethod
    def break_config(self) -> None:
        """Break the daemon's configuration so that its config test (``check``) fails from now on."""

    def presented(self) -> str:
        """SHA-256 hex of the leaf the daemon presents now, for a daemon that no verify URL reaches
        (FreeRADIUS presents it inside EAP); raise VerifyError while it cannot be read. Not
        overridden: the contract reads the entry's verify URLs instead."""
        raise NotImplementedError

    def noop_activation(self) -> dict[str, Any]:
        """Entry keys whose activation leaves the daemon untouched (a wrong unit name).

        The default suits services whose activation is the ``reload`` command.
        """
        return {"reload": "true"}


@dataclass
class Contract:
    """One contract run: the world, the harness, the files."""

    world: AgentWorld
    harness: ServiceHarness
    files: ContractFiles
    name: str

    def write_config(self, **overrides: Any) -> None:
        base = {"name": self.name, "service": self.harness.service, "key": str(self.files.key),
                "cert": str(self.files.cert), "chain": str(self.files.chain),
                "fullchain": str(self.files.fullchain), "verify_timeout": 20.0}
        entry = {**base, **self.harness.entry(self.files), **overrides}
        self.world.write_config({k: v for k, v in entry.items() if v != ""})

    def run(self) -> dict[str, Any]:
        out: RunOutcome = self.world.run("run")
        return out.by_name(self.name)

    def verify_urls(self) -> list[str]:
        urls = self.harness.entry(self.files).get("verify", [])
        return [urls] if isinstance(urls, str) else list(urls)

    def wait_presented(self, fingerprint: str, timeout: float = 20.0) -> None:
        """Wait until every verify URL presents ``fingerprint`` (reloads are asynchronous)."""
        from lecentral.errors import VerifyError
        from lecentral.verify import presented_fingerprint

        def through(url: str) -> Callable[[], str]:
            return lambda: presented_fingerprint(self.world.registry, url, 5.0)

        if type(self.harness).presented is not ServiceHarness.presented:
            readers = {self.harness.service: self.harness.presented}
        else:
            readers = {url: through(url) for url in self.verify_urls()}
            assert readers, "the harness entry must give verify URLs for the contract to check"
        deadline = time.monotonic() + timeout
        for where, read in readers.items():
            seen = ""
            while seen != fingerprint:
                try:
                    seen = read()
                except VerifyError as exc:
                    seen = str(exc)
                assert time.monotonic() < deadline, f"{where} presents {seen}, not {fingerprint}"
                if seen != fingerprint:
                    time.sleep(0.1)

    def snapshot(self) -> dict[str, bytes]:
        """Relative path -> bytes of every file under the contract's files directory."""
        top = self.files.cert.parent
        return {str(p.relative_to(top)): p.read_bytes() for p in sorted(top.rglob("*")) if p.is_file()}


class ServiceContract:
    """Inherit from this in a plugin's tests and define the ``harness`` fixture."""

    contract_name = "contract.example.test"
    key_kind = "rsa2048"
    #: a subdirectory of the files directory holding ``combined.pem`` alone, for daemons that load
    #: a whole directory (HAProxy's ``crt DIR/``); "" keeps it beside the other files
    combined_dir = ""

    @pytest.fixture
    def harness(self) -> ServiceHarness:
        raise NotImplementedError("define a `harness` fixture returning your ServiceHarness")

    @pytest.fixture
    def contract(self, tmp_path: Path, harness: ServiceHarness) -> Iterator[Contract]:
        from lecentral.install.csr import load_key
        from lecentral_testing.pki import make_self_signed

        world = AgentWorld(tmp_path / "world")
        key = world.add(self.contract_name, key=self.key_kind)
        directory = tmp_path / "files"
        directory.mkdir()
        files = ContractFiles.under(directory, key, self.combined_dir)
        files.combined.parent.mkdir(exist_ok=True)
        placeholder, _ = make_self_signed([self.contract_name], load_key(key), days=2)
        for path in (files.cert, files.chain, files.fullchain):
            path.write_bytes(placeholder)
        files.combined.write_bytes(key.read_bytes() + placeholder)
        files.combined.chmod(0o600)
        harness.start(files)
        try:
            yield Contract(world, harness, files, self.contract_name)
        finally:
            harness.stop()
            world.close()

    def first_install(self, contract: Contract) -> Certificate:
        """Store a certificate, run the agent: it is installed and presented; return its leaf."""
        leaf = contract.world.issue(contract.name, days=30)
        contract.write_config()
        result = contract.run()
        assert result["status"] == "installed", result
        contract.wait_presented(leaf.fingerprint)
        return leaf

    _first_install = first_install  # the name before 0.1 made it public; kept for this series

    def test_first_install(self, contract: Contract) -> None:
        self.first_install(contract)

    def test_renewal(self, contract: Contract) -> None:
        self.first_install(contract)
        renewed = contract.world.issue(contract.name, days=60)
        assert contract.run()["status"] == "installed"
        contract.wait_presented(renewed.fingerprint)
        before = contract.snapshot()
        assert contract.run()["status"] == "up-to-date"
        assert contract.snapshot() == before

    def test_broken_config_is_rolled_back(self, contract: Contract) -> None:
        first = self.first_install(contract)
        contract.world.issue(contract.name, days=60)
        before = contract.snapshot()
        contract.harness.break_config()
        result = contract.run()
        assert result["status"] == "rolled-back", result
        assert contract.snapshot() == before
        contract.wait_presented(first.fingerprint)

    def test_verify_failure_is_rolled_back(self, contract: Contract) -> None:
        first = self.first_install(contract)
        contract.world.issue(contract.name, days=60)
        before = contract.snapshot()
        contract.write_config(verify_timeout=2.0, **contract.harness.noop_activation())
        result = contract.run()
        assert result["status"] == "rolled-back", result
        assert "verification failed" in result["message"]
        assert contract.snapshot() == before
        contract.wait_presented(first.fingerprint)


def assert_bad_options_break_only_their_entry(workdir: Path, service: str, name: str,
                                              cases: list[tuple[dict[str, Any], str]],
                                              distribution: str | None = None) -> None:
    """For each ``(options, error)``: an entry of ``service`` with those ``[cert.options]`` fails
    the run with ``error`` in its message, and nothing is installed; and ``lecentral-install
    plugins`` lists the service with its ``distribution`` (default ``lecentral-<service>``)."""
    import re

    world = AgentWorld(workdir)
    try:
        world.add(name)
        world.issue(name, days=30)
        for options, error in cases:
            world.write_config(world.entry(name, service=service, options=options))
            out = world.run("run")
            assert out.exit_code != 0, out.stdout
            assert error in out.by_name(name)["message"]
        assert not (world.ssl / "certs" / f"{name}.crt").exists()
        listed = world.run("plugins").stdout
        dist = re.escape(distribution or f"lecentral-{service}")
        assert re.search(rf"^{re.escape(service)}\s+{dist} ", listed, re.MULTILINE), listed
    finally:
        world.close()
