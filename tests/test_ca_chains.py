"""Chains the CA changes under us: a CA restarted with new roots, longer chains, alternate chains.

The central side is the real ``lecentral renew`` (in-process, ``--json``) against a Pebble of
this module resolving through the session's BIND (``dns_world``); the server side is the real
agent (``lecentral-install run``) in an :class:`AgentWorld` that shares the central SQLite
database. Chains are verified as a TLS client would: cryptography's path builder from the leaf,
through the stored ``ca`` column, to Pebble's root as the only trust anchor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lecentral_testing.agent import AgentWorld, RunOutcome
from lecentral_testing.pebble import PebbleServer
from lecentral_testing.ports import LOOPBACK
from renew_world import CliRenew, World, make_config, new_zone, renew_cli, write_toml

from lecentral.acme.client import AcmeClient
from lecentral.certificates import Certificate
from lecentral.store.rows import CertRow


def start_pebble(dns_world: World, workdir: Path, **options: Any) -> PebbleServer:
    """A Pebble of this module, resolving through the session's resolver (which asks its BIND)."""
    return PebbleServer(workdir, dns_server=(LOOPBACK, dns_world.resolver.port), **options).start()


def verify_to_root(crt: bytes, ca: bytes, root_pem: str, name: str) -> int:
    """Build the path leaf -> ``ca`` -> root as a TLS client does (only ``root_pem`` trusted,
    server name ``name``); return its length (leaf and root included). Raises if it fails."""
    from cryptography import x509
    from cryptography.x509.verification import PolicyBuilder, Store

    root = x509.load_pem_x509_certificate(root_pem.encode())
    verifier = PolicyBuilder().store(Store([root])).build_server_verifier(x509.DNSName(name))
    path = verifier.verify(x509.load_pem_x509_certificate(crt), x509.load_pem_x509_certificates(ca))
    return len(path)


def does_not_verify(crt: bytes, ca: bytes, root_pem: str, name: str) -> bool:
    from cryptography.x509.verification import VerificationError

    try:
        verify_to_root(crt, ca, root_pem, name)
    except VerificationError:
        return True
    return False


def server_world(workdir: Path, db_url: str, name: str) -> AgentWorld:
    """The server of ``name``: its key made there, its row added to the central database, its
    install.toml with the usual cert/chain/fullchain files."""
    world = AgentWorld(workdir, db_url=db_url)
    world.add(name)
    world.write_config(world.entry(name))
    return world


def assert_installed(world: AgentWorld, out: RunOutcome, name: str, row: CertRow) -> None:
    """The agent run installed exactly the row's certificate and chain."""
    assert out.exit_code == 0, out.stderr
    result = out.by_name(name)
    assert result["status"] == "installed", result
    certs = world.ssl / "certs"
    assert row.crt and row.ca
    assert (certs / f"{name}.crt").read_bytes() == row.crt
    assert (certs / f"{name}.ca").read_bytes() == row.ca
    assert (certs / f"{name}.full").read_bytes() == row.crt + row.ca


# --- Pebble killed mid-order, restarted with new roots ---------------------------------------


@dataclass
class Restarted:
    """What happened around the crash, for the tests below to check."""

    name: str
    world: AgentWorld
    pebble: PebbleServer
    old_root: str
    new_root: str
    first: CertRow
    first_install: RunOutcome
    crashed: CliRenew
    after_crash: CertRow
    reissued: CliRenew


@pytest.fixture(scope="module")
def restarted(dns_world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restarted]:
    """Issue and install a certificate; then, during a forced renewal, SIGKILL Pebble right after
    the challenge is answered (a patched ``AcmeClient.answer`` pulls the trigger: the kill is
    real, the order is left open at a CA that no longer exists); start Pebble again on the same
    ports, with its new root and intermediate, and run ``lecentral renew --force`` once more."""
    tmp = tmp_path_factory.mktemp("restart")
    name = new_zone(dns_world, "restart")
    pebble = start_pebble(dns_world, tmp / "pebble")
    config = make_config(dns_world, tmp, pebble=pebble)
    world = server_world(tmp / "server", config.database.url, name)
    toml = write_toml(config, tmp / "lecentral.toml")
    try:
        assert renew_cli(toml, "--once").outcome(name)["status"] == "issued"
        first = world.store.get(name)
        first_install = world.run("run")
        old_root = pebble.root_pem()

        real_answer = AcmeClient.answer

        def answer_then_crash(self: AcmeClient, challenge: Any) -> None:
            real_answer(self, challenge)
            pebble.kill()

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(AcmeClient, "answer", answer_then_crash)
            crashed = renew_cli(toml, "--once", "--force")
        # (the run did not reach the challenge's answer: what it said instead)
        assert not pebble.running, (crashed.exit_code, crashed.data, crashed.stderr[-3000:])
        after_crash = world.store.get(name)
        pebble.start()
        new_root = pebble.root_pem()
        reissued = renew_cli(toml, "--once", "--force")
        assert first is not None and after_crash is not None
        yield Restarted(name, world, pebble, old_root, new_root, first, first_install, crashed,
                        after_crash, reissued)
    finally:
        world.close()
        pebble.close()


def test_pebble_killed_mid_order_fails_loudly_then_the_next_renew_issues(
        restarted: Restarted, dns_world: World) -> None:
    """The crashed run fails (rc 1) naming the CA's address, keeps the stored certificate and
    removes its TXT; after the restart the account is registered again with the same key and
    the next renew issues under the new root (the old root does not verify it)."""
    r = restarted
    assert r.first_install.by_name(r.name)["status"] == "installed"
    assert r.new_root != r.old_root

    assert r.crashed.exit_code == 1
    outcome = r.crashed.outcome(r.name)
    assert outcome["status"] == "failed" and outcome["count_fail_update"] == 1
    assert f"cannot reach the ACME server {r.pebble.directory_url}" in outcome["message"]
    assert r.name in outcome["message"]
    assert r.after_crash.crt == r.first.crt and r.after_crash.ca == r.first.ca
    assert r.after_crash.ts_expire == r.first.ts_expire and r.after_crash.count_fail_update == 1
    assert dns_world.bind.txt_values(f"_acme-challenge.{r.name}") == []

    assert r.reissued.exit_code == 0, r.reissued.data
    assert r.reissued.outcome(r.name)["status"] == "issued"
    row = r.world.store.get(r.name)
    assert row is not None and row.crt and row.ca and r.first.crt and r.first.ca
    assert row.count_fail_update == 0 and row.old_crt == r.first.crt and row.old_ca == r.first.ca
    assert row.ca != r.first.ca
    assert verify_to_root(row.crt, row.ca, r.new_root, r.name) == 3
    assert does_not_verify(row.crt, row.ca, r.old_root, r.name)
    assert does_not_verify(r.first.crt, r.first.ca, r.new_root, r.name)


def test_agent_installs_the_chain_of_the_restarted_ca(restarted: Restarted) -> None:
    """The server holds the old CA's chain; the database now has a leaf and chain from the new
    root. The agent must install them even though the new leaf expires within an hour of the
    old one (both are Pebble's fixed validity from minutes apart): a same-expiry certificate
    under another chain is a new certificate, not "up to date"."""
    r = restarted
    row = r.world.store.get(r.name)
    assert row is not None and row.crt and row.ca
    new_leaf, old_leaf = Certificate.load(row.crt), Certificate.load(r.first.crt or b"")
    assert abs(new_leaf.not_after - old_leaf.not_after) < 3600  # the case this test is about

    out = r.world.run("run")

    assert_installed(r.world, out, r.name, row)
    certs = r.world.ssl / "certs"
    assert verify_to_root((certs / f"{r.name}.crt").read_bytes(),
                          (certs / f"{r.name}.ca").read_bytes(), r.new_root, r.name) == 3


# --- a longer chain ------------------------------------------------------------------------------


def test_chain_length_3_is_saved_whole_and_installed(dns_world: World, tmp_path: Path) -> None:
    """``PEBBLE_CHAIN_LENGTH=3``: Pebble issues from a chain of three intermediates under its root
    (root -> #2 -> #1 -> issuing intermediate). The ``ca`` column holds all three, in order, and
    verifies to the root; the agent installs them as chain and fullchain."""
    name = new_zone(dns_world, "chain3")
    with start_pebble(dns_world, tmp_path / "pebble", env={"PEBBLE_CHAIN_LENGTH": "3"}) as pebble:
        config = make_config(dns_world, tmp_path, pebble=pebble)
        world = server_world(tmp_path / "server", config.database.url, name)
        try:
            result = renew_cli(write_toml(config, tmp_path / "lecentral.toml"), "--once")
            assert result.exit_code == 0 and result.outcome(name)["status"] == "issued", result.data
            row = world.store.get(name)
            assert row is not None and row.crt and row.ca
            from cryptography import x509

            intermediates = x509.load_pem_x509_certificates(row.ca)
            assert len(intermediates) == 3
            assert verify_to_root(row.crt, row.ca, pebble.root_pem(), name) == 5

            out = world.run("run")

            assert_installed(world, out, name, row)
            full = (world.ssl / "certs" / f"{name}.full").read_bytes()
            leaf_end = full.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----\n")
            assert verify_to_root(full[:leaf_end], full[leaf_end:], pebble.root_pem(), name) == 5
        finally:
            world.close()


# --- alternate chains offered --------------------------------------------------------------------


def test_alternate_roots_the_default_chain_is_stored(dns_world: World, tmp_path: Path) -> None:
    """``PEBBLE_ALTERNATE_ROOTS=1``: Pebble offers a second chain (another root, its own
    intermediate) by a Link rel="alternate". lecentral stores the default chain: it is
    Pebble's intermediate 0, verifies to root 0, and does not verify to the alternate root."""
    name = new_zone(dns_world, "altroot")
    with start_pebble(dns_world, tmp_path / "pebble", env={"PEBBLE_ALTERNATE_ROOTS": "1"}) as pebble:
        config = make_config(dns_world, tmp_path, pebble=pebble)
        world = server_world(tmp_path / "server", config.database.url, name)
        try:
            result = renew_cli(write_toml(config, tmp_path / "lecentral.toml"), "--once")
            assert result.exit_code == 0 and result.outcome(name)["status"] == "issued", result.data
            row = world.store.get(name)
            assert row is not None and row.crt and row.ca
            default_root, alternate_root = pebble.root_pem(0), pebble.root_pem(1)
            assert default_root != alternate_root
            assert row.ca == pebble.intermediate_pem(0).encode()
            assert row.ca != pebble.intermediate_pem(1).encode()
            assert verify_to_root(row.crt, row.ca, default_root, name) == 3
            assert does_not_verify(row.crt, row.ca, alternate_root, name)

            assert_installed(world, world.run("run"), name, row)
        finally:
            world.close()
