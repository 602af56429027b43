"""The agent against a real nginx on 127.0.0.1: installed, reloaded, verified, or rolled back.

nginx reads the full chain and the key the agent manages; the agent runs nginx's own config test
and reload (``nginx -t``, ``nginx -s reload``) and verifies with the real TLS verifier. Each test
checks what nginx presents afterwards with its own TLS connection.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agent_world import Mailbox, PebbleOrders, placeholder_nginx, tree
from lecentral_testing.agent import AgentWorld
from lecentral_testing.daemons.nginx import NginxServer

NAME = "www.example.test"


@pytest.fixture
def nginx(world: AgentWorld) -> Iterator[NginxServer]:
    """nginx serving a placeholder (self-signed, same key) from the paths the agent manages."""
    with placeholder_nginx(world, NAME) as server:
        yield server


def nginx_entry(nginx: NginxServer, world: AgentWorld, **keys: object) -> dict[str, object]:
    base = {"check": nginx.check_command, "reload": nginx.reload_command,
            "verify": nginx.verify_urls["https"], "verify_timeout": 15.0}
    return world.entry(NAME, **{**base, **keys})


def test_first_install_then_renewal_are_served(world: AgentWorld, nginx: NginxServer,
                                               agent_pebble: PebbleOrders) -> None:
    """The certificate in the database replaces the placeholder; then the central host renews it
    through Pebble and the next run has nginx present the renewed one."""
    first = world.issue(NAME, days=30)
    world.write_config(nginx_entry(nginx, world))

    out = world.run("run")

    assert out.by_name(NAME)["status"] == "installed", out.stderr
    assert "verified" in out.by_name(NAME)["message"]
    nginx.wait_presented(first.fingerprint, timeout=10)  # old workers may linger a moment

    renewed = agent_pebble.issue(world, NAME)
    out = world.run("run")

    assert out.by_name(NAME)["status"] == "installed", out.stderr
    nginx.wait_presented(renewed.fingerprint, timeout=10)
    status = world.run("status", "--json")
    assert status.exit_code == 0, status.stderr
    assert '"is_installed": true' in status.stdout and renewed.fingerprint in status.stdout


def test_service_that_fails_with_the_new_files_is_rolled_back(
        world: AgentWorld, nginx: NginxServer, smtp: tuple[Mailbox, int]) -> None:
    """The admin made a new key and CSR, but nginx.conf still names the old key: the reload
    (config test + signal, as ``systemctl reload`` does) fails with the new certificate. The old
    files come back, nginx is reloaded with them, and it serves the old certificate; alert."""
    first = world.issue(NAME, days=30)
    reload = f"sh -c '{nginx.check_command} && {nginx.reload_command}'"
    world.write_config(nginx_entry(nginx, world, reload=reload, check=""))
    assert world.run("run").by_name(NAME)["status"] == "installed"
    new_key = world.ssl / "private" / "new.key"
    csr_file = world.workdir / "new.csr"
    made = world.run("csr", NAME, "--key", str(new_key), "--out", str(csr_file))
    assert made.exit_code == 0, made.stderr
    from lecentral.certificates import Csr

    csr = Csr.load(csr_file.read_bytes())
    world.store.set_csr(NAME, csr.pem, csr.md5_modulus)  # lecentral set-csr on the central host
    world.issue(NAME, days=60)
    world.write_config(nginx_entry(nginx, world, reload=reload, check="", key=str(new_key)))
    before = tree(world.ssl / "certs")

    out = world.run("run")

    assert out.exit_code == 1
    result = out.by_name(NAME)
    assert result["status"] == "rolled-back", result
    assert "key values mismatch" in result["message"] or "SSL_CTX_use_PrivateKey" in result["message"]
    assert "serves the previous certificate again" in result["message"]
    assert tree(world.ssl / "certs") == before
    assert nginx.presented_fingerprint("https") == first.fingerprint
    assert any("rolled back" in s for s in smtp[0].subjects())


def test_broken_config_is_rolled_back_before_reloading(world: AgentWorld, nginx: NginxServer) -> None:
    """nginx's config broke since the last install: ``nginx -t`` fails with the new files in
    place, so they are taken back before anything is reloaded."""
    first = world.issue(NAME, days=30)
    reloads = world.workdir / "reloads"
    reload = f"sh -c 'echo reload >> {reloads} && {nginx.reload_command}'"
    world.write_config(nginx_entry(nginx, world, reload=reload))
    assert world.run("run").by_name(NAME)["status"] == "installed"
    world.issue(NAME, days=60)
    with nginx.conf.open("a") as conf:
        conf.write("this_is_not_a_directive;\n")
    before = tree(world.ssl / "certs")

    out = world.run("run")

    result = out.by_name(NAME)
    assert result["status"] == "rolled-back", result
    assert "this_is_not_a_directive" in result["message"]  # nginx -t's own words
    assert reloads.read_text().count("reload") == 1  # only the first install's
    assert tree(world.ssl / "certs") == before
    assert nginx.presented_fingerprint("https") == first.fingerprint


def test_verify_failure_is_rolled_back(world: AgentWorld, nginx: NginxServer,
                                       smtp: tuple[Mailbox, int]) -> None:
    """The reload command does not reload this nginx (wrong unit name): it still presents the old
    certificate, verification fails, the old files come back and are verified as served."""
    first = world.issue(NAME, days=30)
    world.write_config(nginx_entry(nginx, world))
    assert world.run("run").by_name(NAME)["status"] == "installed"
    world.issue(NAME, days=60)
    world.write_config(nginx_entry(nginx, world, reload="true", verify_timeout=2.0))
    before = tree(world.ssl / "certs")

    out = world.run("run")

    result = out.by_name(NAME)
    assert result["status"] == "rolled-back", result
    assert "verification failed" in result["message"] and nginx.verify_urls["https"] in result["message"]
    assert "serves the previous certificate again" in result["message"]
    assert tree(world.ssl / "certs") == before
    assert nginx.presented_fingerprint("https") == first.fingerprint
    assert any("rolled back" in s for s in smtp[0].subjects())
