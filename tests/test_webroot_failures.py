"""HTTP-01 failures a sysadmin meets: certbot missing, the CA's own error text, a CA that cannot
reach the site, and External Account Binding through certbot without leaking the MAC key.

Real nginx, BIND, Pebble and certbot (see webroot_world.py); a second and third Pebble are started
here where the CA itself must differ (its httpPort closed, or EAB required).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from lecentral_testing.pebble import PebbleServer
from lecentral_testing.ports import LOOPBACK, free_port
from renew_world import assert_issued, run
from webroot_world import (
    ISSUERS,
    SITES,
    WebWorld,
    add_row,
    assert_failed_untouched,
    leftovers,
    make_config,
)

from lecentral.store.sql import SqlStore


@pytest.fixture(scope="module")
def deaf_pebble(web_world: WebWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    """A CA whose validation connects to a port where nothing listens (a firewall, in effect)."""
    with PebbleServer(tmp_path_factory.mktemp("deaf-pebble"), dns_server=(LOOPBACK, web_world.bind.port),
                      http_port=free_port()) as pebble:
        yield pebble


@pytest.fixture(scope="module")
def eab_pebble(web_world: WebWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    with PebbleServer(tmp_path_factory.mktemp("eab-pebble"), dns_server=(LOOPBACK, web_world.bind.port),
                      http_port=web_world.web.port, eab_required=True) as pebble:
        yield pebble


def test_certbot_missing_from_path(web_world: WebWorld, store: SqlStore, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    name = SITES["one"][0]
    webroot = web_world.webroot("one")
    add_row(store, [name], webroot=webroot)
    report = run(make_config(web_world, tmp_path, http01_issuer="certbot-webroot"), store)
    assert_failed_untouched(store, report, name, "certbot is not installed", str(empty),
                            "pip install lecentral[certbot]", "[certbot] command",
                            'http01_issuer = "webroot"')
    assert leftovers(webroot) == [] and not (tmp_path / "certbot").exists()


def test_certbot_error_text_reaches_the_event_log(web_world: WebWorld, store: SqlStore,
                                                  tmp_path: Path) -> None:
    """Without the self-check, the CA finds the wrong webroot; certbot's report is the error."""
    name = SITES["wrong"][0]
    elsewhere = tmp_path / "htdocs"
    elsewhere.mkdir()
    add_row(store, [name], webroot=elsewhere)
    config = make_config(web_world, tmp_path, http01_issuer="certbot-webroot", self_check=False)
    report = run(config, store)
    message = assert_failed_untouched(store, report, name, "certbot failed for wrong.web.test",
                                      "unauthorized", "returned 404", "letsencrypt.log")
    # certbot's own words, without its chatter
    assert "Certbot failed to authenticate some domains" in message
    assert "Donating" not in message and "Saving debug log" not in message
    assert leftovers(elsewhere) == []
    assert os.listdir(tmp_path / "certbot" / "runs") == []


@pytest.mark.parametrize("issuer", ISSUERS)
def test_ca_that_cannot_reach_the_site(web_world: WebWorld, deaf_pebble: PebbleServer,
                                       store: SqlStore, tmp_path: Path, issuer: str) -> None:
    """Our own check passes (the site is served here) but the CA's connection is refused."""
    name = SITES["one"][0]
    webroot = web_world.webroot("one")
    add_row(store, [name], webroot=webroot)
    report = run(make_config(web_world, tmp_path, pebble=deaf_pebble, http01_issuer=issuer), store)
    words = (["the CA did not validate one.web.test", "connection refused",
              "public A/AAAA records, firewalls"] if issuer == "webroot"
             else ["certbot failed for one.web.test", "connection", "refused"])
    message = assert_failed_untouched(store, report, name, *words)
    assert "lecentral dns check" not in message  # the DNS-01 hint would mislead here
    assert leftovers(webroot) == []


def test_certbot_with_external_account_binding(web_world: WebWorld, eab_pebble: PebbleServer,
                                               store: SqlStore, tmp_path: Path) -> None:
    """EAB reaches certbot through a 0600 file that is removed; the MAC key is nowhere else."""
    names = SITES["san"]
    _, key = add_row(store, names, webroot=web_world.webroot("san"))
    kid, hmac_key = next(iter(eab_pebble.eab_keys.items()))
    config = make_config(web_world, tmp_path, pebble=eab_pebble, http01_issuer="certbot-webroot",
                         eab_kid=kid, eab_hmac_key=hmac_key)
    assert run(config, store).final[0].status == "issued"
    assert_issued(store, names[0], names, key)
    assert os.listdir(tmp_path / "certbot" / "runs") == []
    _assert_nowhere(hmac_key, tmp_path / "certbot", [e.message for e in store.events()])


def test_certbot_with_a_wrong_eab_key_fails_without_showing_it(
        web_world: WebWorld, eab_pebble: PebbleServer, store: SqlStore, tmp_path: Path) -> None:
    from lecentral_testing.pebble import new_eab_hmac_key

    name = SITES["one"][0]
    add_row(store, [name], webroot=web_world.webroot("one"))
    kid = next(iter(eab_pebble.eab_keys))
    wrong = new_eab_hmac_key()
    config = make_config(web_world, tmp_path, pebble=eab_pebble, http01_issuer="certbot-webroot",
                         eab_kid=kid, eab_hmac_key=wrong)
    report = run(config, store)
    message = assert_failed_untouched(store, report, name, "certbot failed for one.web.test")
    _assert_nowhere(wrong, tmp_path / "certbot", [message, *(e.message for e in store.events())])


def _assert_nowhere(secret: str, state_dir: Path, texts: list[str]) -> None:
    for text in texts:
        assert secret not in text
    for path in state_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), f"the EAB MAC key is in {path}"
