"""``lecentral account import`` / ``show``: an account of certbot, acme.sh or a bare key, reused.

Real Pebble (the renew world's, and one requiring External Account Binding), real certbot (from
the test extra) registering its account in its own layout, and an acme.sh layout written as acme.sh
writes it from an account made through the acme library. The imported account then issues with
``lecentral renew`` without any registration (at the EAB Pebble, a registration would need the EAB
credentials the configuration does not have).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import josepy
import pytest
from acme import client as acme_client
from acme import messages
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lecentral_testing.pebble import PebbleServer
from lecentral_testing.ports import LOOPBACK, free_port
from renew_world import (
    World,
    add_row,
    assert_issued,
    make_config,
    new_zone,
    renew_cli,
    write_toml,
)

from lecentral.acme.account import load_existing, read_record, record_for, thumbprint
from lecentral.acme.client import AcmeClient
from lecentral.cli.central import main
from lecentral.config import CentralConfig
from lecentral.errors import ConfigError
from lecentral.store.sql import SqlStore


@pytest.fixture(scope="module")
def eab_pebble(dns_world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PebbleServer]:
    """A CA that requires External Account Binding, resolving through the renew world's BIND."""
    with PebbleServer(tmp_path_factory.mktemp("eab-pebble"), eab_required=True,
                      dns_server=(LOOPBACK, dns_world.resolver.port)) as pebble:
        yield pebble


def certbot_register(pebble: PebbleServer, config_dir: Path, *, eab: bool = False) -> Path:
    """``certbot register`` against ``pebble``; returns certbot's account directory."""
    argv = [shutil.which("certbot") or "certbot", "register", "--non-interactive", "--agree-tos",
            "--no-eff-email", "-m", "certbot@example.test", "--server", pebble.directory_url,
            "--config-dir", str(config_dir), "--work-dir", str(config_dir.parent / "work"),
            "--logs-dir", str(config_dir.parent / "logs")]
    if eab:
        kid, hmac_key = next(iter(pebble.eab_keys.items()))
        # "=": a base64url key may begin with "-", which argparse would take for an option
        argv += [f"--eab-kid={kid}", f"--eab-hmac-key={hmac_key}"]
    env = {**os.environ, "REQUESTS_CA_BUNDLE": str(pebble.ca_bundle)}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    found = list((config_dir / "accounts").glob("*/*/*/private_key.json"))
    assert len(found) == 1, found
    return found[0].parent


def new_account(pebble: PebbleServer, key: Any, email: str = "acmesh@example.test") -> str:
    """A real account for ``key`` made through the acme library; returns its URL."""
    jwk = josepy.JWKEC(key=key) if isinstance(key, ec.EllipticCurvePrivateKey) else josepy.JWKRSA(key=key)
    alg = ({"secp256r1": josepy.ES256, "secp384r1": josepy.ES384}[key.curve.name]
           if isinstance(key, ec.EllipticCurvePrivateKey) else josepy.RS256)
    net = acme_client.ClientNetwork(jwk, alg=alg, verify_ssl=str(pebble.ca_bundle))
    directory = acme_client.ClientV2.get_directory(pebble.directory_url, net)
    regr = acme_client.ClientV2(directory, net).new_account(
        messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True))
    net.session.close()
    return str(regr.uri)


def pem(key: Any) -> bytes:
    return bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))


def acme_sh_home(pebble: PebbleServer, home: Path) -> tuple[str, Any]:
    """acme.sh's files for an account at ``pebble``: ``ca/<host>/<path>/`` with account.key,
    account.json (the CA's account object) and ca.conf (ACCOUNT_URL='...', as _savecaconf writes)."""
    key = ec.generate_private_key(ec.SECP256R1())
    url = new_account(pebble, key)
    ca_dir = home / "ca" / LOOPBACK / "dir"  # acme.sh drops the port of the host
    ca_dir.mkdir(parents=True)
    (ca_dir / "account.key").write_bytes(pem(key))
    (ca_dir / "account.json").write_text(json.dumps({"status": "valid",
                                                     "contact": ["mailto:acmesh@example.test"]}))
    (ca_dir / "ca.conf").write_text(f"CA_EMAIL='acmesh@example.test'\nACCOUNT_URL='{url}'\n"
                                    "CA_KEY_HASH='x'\n")
    return url, key


def cli(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), "account", *args])


def setup(world: World, tmp_path: Path, pebble: PebbleServer | None = None
          ) -> tuple[CentralConfig, Path]:
    config = make_config(world, tmp_path, pebble=pebble)
    return config, write_toml(config, tmp_path / "lecentral.toml")


def assert_nothing_written(config: CentralConfig) -> None:
    key = Path(config.acme.account_key)
    assert not key.parent.exists() or sorted(os.listdir(key.parent)) == []


def assert_private(path: Path) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- certbot ---------------------------------------------------------------------------------------


def test_certbot_eab_account_imported_and_renewed_with(dns_world: World, eab_pebble: PebbleServer,
                                                       store: SqlStore, tmp_path: Path) -> None:
    """certbot's EAB-bound account issues for lecentral, with no EAB in lecentral's config."""
    account_dir = certbot_register(eab_pebble, tmp_path / "letsencrypt", eab=True)
    certbot_url = json.loads((account_dir / "regr.json").read_text())["uri"]
    config, toml = setup(dns_world, tmp_path, eab_pebble)
    with pytest.raises(ConfigError, match="requires External Account Binding"):
        AcmeClient(config.acme)  # without the import: a registration, which needs EAB
    Path(config.acme.account_key).unlink()  # the key that attempt created

    result = cli(toml, "import", "--certbot", str(tmp_path / "letsencrypt"), "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["url"] == certbot_url and shown["status"] == "valid"
    assert shown["contact"] == ["mailto:certbot@example.test"]
    assert shown["source"] == f"certbot account {account_dir.name} in {tmp_path / 'letsencrypt'}"
    key = load_existing(config.acme.account_key)
    jwk = josepy.JWK.json_loads((account_dir / "private_key.json").read_bytes())
    assert thumbprint(key.jwk) == thumbprint(jwk) == shown["thumbprint"]
    assert_private(key.path)
    assert_private(Path(f"{key.path}.json"))
    assert read_record(key.path) is not None
    _assert_no_key_material(result.output, jwk)

    name = new_zone(dns_world, "acct")
    _, server_key = add_row(store, [name])
    run = renew_cli(toml)
    assert run.exit_code == 0, run.stderr
    assert run.outcome(name)["status"] == "issued"
    assert_issued(store, name, [name], server_key)
    client = AcmeClient(config.acme)
    assert client.account_uri == certbot_url  # the same account: nothing was registered
    client.close()


def test_several_certbot_accounts_need_an_account_id(dns_world: World, tmp_path: Path) -> None:
    account_dir = certbot_register(dns_world.pebble, tmp_path / "le")
    # a second account, written as certbot writes one (private_key.json, regr.json, meta.json)
    key = rsa.generate_private_key(65537, 2048)
    url = new_account(dns_world.pebble, key)
    second = account_dir.parent / "0123456789abcdef0123456789abcdef"
    second.mkdir(mode=0o700)
    (second / "private_key.json").write_text(josepy.JWKRSA(key=key).json_dumps())
    (second / "regr.json").write_text(json.dumps({"body": {}, "uri": url}))
    (second / "meta.json").write_text(json.dumps({"creation_dt": "2026-01-01T00:00:00Z",
                                                  "creation_host": "old.example.test"}))
    config, toml = setup(dns_world, tmp_path)

    result = cli(toml, "import", "--certbot", str(tmp_path / "le"))
    assert result.exit_code == 2
    assert "certbot has 2 accounts for" in result.stderr and "choose one with --account-id" \
        in result.stderr
    assert second.name in result.stderr and url in result.stderr
    assert_nothing_written(config)

    result = cli(toml, "import", "--certbot", str(tmp_path / "le"), "--account-id", "nope")
    assert result.exit_code == 2 and "certbot has no account nope" in result.stderr
    assert_nothing_written(config)

    result = cli(toml, "import", "--certbot", str(tmp_path / "le"), "--account-id", second.name)
    assert result.exit_code == 0, result.output
    assert f"account {url} (valid)" in result.stdout and "RSA 2048" in result.stdout
    assert AcmeClient(config.acme).account_uri == url


def test_certbot_errors_write_nothing(dns_world: World, tmp_path: Path) -> None:
    config, toml = setup(dns_world, tmp_path)
    missing = tmp_path / "nowhere"
    result = cli(toml, "import", "--certbot", str(missing))
    assert result.exit_code == 2 and f"{missing} does not exist" in result.stderr

    # an account for another CA only
    other = tmp_path / "le" / "accounts" / "acme-v02.api.letsencrypt.org" / "directory" / "abc"
    other.mkdir(parents=True)
    key = ec.generate_private_key(ec.SECP256R1())
    (other / "private_key.json").write_text(josepy.JWKEC(key=key).json_dumps())
    result = cli(toml, "import", "--certbot", str(tmp_path / "le"))
    assert result.exit_code == 2
    assert f"has no account for {dns_world.pebble.directory_url}" in result.stderr
    assert "it has accounts for acme-v02.api.letsencrypt.org/directory" in result.stderr

    # a corrupt JWK where this CA's account is
    mine = tmp_path / "le" / "accounts" / f"{LOOPBACK}:{dns_world.pebble.port}" / "dir" / "def"
    mine.mkdir(parents=True)
    jwk_text = josepy.JWKEC(key=key).json_dumps()
    (mine / "private_key.json").write_text(jwk_text[: len(jwk_text) // 2])
    result = cli(toml, "import", "--certbot", str(tmp_path / "le"))
    assert result.exit_code == 2
    assert f"{mine / 'private_key.json'} is not a JWK private key" in result.stderr
    _assert_no_key_material(result.output, josepy.JWKEC(key=key))

    # a valid JWK the CA has never seen: accountDoesNotExist
    (mine / "private_key.json").write_text(jwk_text)
    result = cli(toml, "import", "--certbot", str(tmp_path / "le"))
    assert result.exit_code == 6
    assert "has no account for this key (accountDoesNotExist)" in result.stderr
    assert "nothing was imported" in result.stderr
    _assert_no_key_material(result.output, josepy.JWKEC(key=key))
    assert_nothing_written(config)


# -- acme.sh ---------------------------------------------------------------------------------------


def test_acme_sh_account_imported_and_shown(dns_world: World, tmp_path: Path) -> None:
    url, key = acme_sh_home(dns_world.pebble, tmp_path / ".acme.sh")
    config, toml = setup(dns_world, tmp_path)
    result = cli(toml, "import", "--acme-sh", str(tmp_path / ".acme.sh"))
    assert result.exit_code == 0, result.output
    assert f"account {url} (valid)" in result.stdout
    assert Path(config.acme.account_key).read_bytes() == pem(key)
    assert_private(Path(config.acme.account_key))

    result = cli(toml, "show", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown == {"url": url, "directory": dns_world.pebble.directory_url, "status": "valid",
                     "contact": ["mailto:acmesh@example.test"], "key_file": config.acme.account_key,
                     "key_type": "EC P-256", "thumbprint": thumbprint(josepy.JWKEC(key=key)),
                     "recorded": True, "error": None}
    text = cli(toml, "show")
    assert text.exit_code == 0
    assert f"account URL: {url}" in text.stdout and "status:      valid" in text.stdout
    assert f"({config.acme.account_key}" not in text.stdout  # the path, then the type
    assert f"{config.acme.account_key} (EC P-256)" in text.stdout
    _assert_no_key_material(result.output + text.output, josepy.JWKEC(key=key))
    client = AcmeClient(config.acme)
    assert client.account_uri == url
    client.close()


def test_acme_sh_without_this_ca(dns_world: World, tmp_path: Path) -> None:
    home = tmp_path / ".acme.sh"
    (home / "ca" / "acme.zerossl.com" / "v2" / "DV90").mkdir(parents=True)
    (home / "ca" / "acme.zerossl.com" / "v2" / "DV90" / "account.key").write_bytes(
        pem(ec.generate_private_key(ec.SECP256R1())))
    config, toml = setup(dns_world, tmp_path)
    result = cli(toml, "import", "--acme-sh", str(home))
    assert result.exit_code == 2
    assert "has no account for" in result.stderr
    assert "it has accounts for acme.zerossl.com/v2/DV90" in result.stderr
    assert_nothing_written(config)


# -- a key; replacing a key ------------------------------------------------------------------------


def test_key_import_finds_the_url_and_never_replaces_silently(dns_world: World,
                                                              tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    url = new_account(dns_world.pebble, key)
    key_file = tmp_path / "old.pem"
    key_file.write_bytes(pem(key))
    config, toml = setup(dns_world, tmp_path)
    first = AcmeClient(config.acme)  # lecentral's own account, registered with its own key
    own_url, own_key = first.account_uri, Path(config.acme.account_key).read_bytes()
    first.close()

    result = cli(toml, "import", "--key", str(key_file))
    assert result.exit_code == 2
    assert "already holds another key (thumbprint" in result.stderr and "--force" in result.stderr
    assert Path(config.acme.account_key).read_bytes() == own_key
    assert sorted(os.listdir(Path(config.acme.account_key).parent)) == ["account.key"]

    result = cli(toml, "import", "--key", str(key_file), "--force", "--json")
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    assert done["url"] == url and done["key_type"] == "EC P-384" and done["backup"]
    assert Path(done["backup"]).read_bytes() == own_key
    assert_private(Path(done["backup"]))
    assert Path(config.acme.account_key).read_bytes() == pem(key)
    client = AcmeClient(config.acme)
    assert client.account_uri == url != own_url
    client.close()

    again = cli(toml, "import", "--key", str(key_file))  # the same key: only the record
    assert again.exit_code == 0 and "already held this key" in again.stdout


def test_key_unknown_to_the_ca(dns_world: World, tmp_path: Path) -> None:
    key_file = tmp_path / "stray.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    key_file.write_bytes(pem(key))
    config, toml = setup(dns_world, tmp_path)
    result = cli(toml, "import", "--key", str(key_file))
    assert result.exit_code == 6
    assert "accountDoesNotExist" in result.stderr and f"key {key_file} is not an account" \
        in result.stderr
    assert_nothing_written(config)
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    result = cli(toml, "import", "--key", str(bad))
    assert result.exit_code == 2 and f"{bad} is not an unencrypted PEM private key" in result.stderr
    assert_nothing_written(config)


# -- show without the CA ---------------------------------------------------------------------------


def test_show_when_the_ca_is_unreachable(dns_world: World, tmp_path: Path) -> None:
    url, key = acme_sh_home(dns_world.pebble, tmp_path / ".acme.sh")
    config, toml = setup(dns_world, tmp_path)
    assert cli(toml, "import", "--acme-sh", str(tmp_path / ".acme.sh")).exit_code == 0
    record = json.loads(Path(f"{config.acme.account_key}.json").read_text())
    # the same account, the CA gone: the record is moved to a directory where nothing listens
    gone = f"https://{LOOPBACK}:{free_port()}/dir"
    record["directory"] = gone
    Path(f"{config.acme.account_key}.json").write_text(json.dumps(record))
    offline = dataclasses.replace(config, acme=dataclasses.replace(config.acme, directory=gone))
    toml = write_toml(offline, tmp_path / "offline.toml")
    result = cli(toml, "show")
    assert result.exit_code == 6
    assert f"account URL: {url}" in result.stdout
    assert "status:      unknown (not read from the CA)" in result.stdout
    assert f"cannot reach the ACME server {gone}" in result.stderr
    assert "shown is what is known locally" in result.stderr
    _assert_no_key_material(result.output, josepy.JWKEC(key=key))


def test_show_without_a_key_creates_none(dns_world: World, tmp_path: Path) -> None:
    config, toml = setup(dns_world, tmp_path)
    result = cli(toml, "show")
    assert result.exit_code == 2
    assert f"there is no ACME account key at {config.acme.account_key}" in result.stderr
    assert_nothing_written(config)


def _assert_no_key_material(output: str, jwk: josepy.JWK) -> None:
    private = json.loads(jwk.json_dumps())
    for field in ("d", "p", "q", "dp", "dq", "qi"):
        if field in private:
            assert private[field] not in output
    assert "PRIVATE KEY" not in output


def test_deactivated_or_unusable_accounts_are_not_imported(dns_world: World, tmp_path: Path) -> None:
    config, toml = setup(dns_world, tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    new_account(dns_world.pebble, key)
    jwk = josepy.JWKEC(key=key)
    net = acme_client.ClientNetwork(jwk, alg=josepy.ES256, verify_ssl=str(dns_world.pebble.ca_bundle))
    acme = acme_client.ClientV2(acme_client.ClientV2.get_directory(dns_world.pebble.directory_url,
                                                                   net), net)
    acme.deactivate_registration(acme.query_registration(
        messages.RegistrationResource(body=messages.Registration())))
    net.session.close()
    key_file = tmp_path / "retired.pem"
    key_file.write_bytes(pem(key))
    result = cli(toml, "import", "--key", str(key_file))
    assert result.exit_code == 6, result.output
    assert "key exists but is deactivated" in result.stderr
    assert "nothing was imported" in result.stderr
    assert_nothing_written(config)

    from cryptography.hazmat.primitives.asymmetric import ed25519

    odd = tmp_path / "ed25519.pem"
    odd.write_bytes(pem(ed25519.Ed25519PrivateKey.generate()))
    result = cli(toml, "import", "--key", str(odd))
    assert result.exit_code == 2
    assert f"key {odd}: the key is a" in result.stderr and "RSA or ECDSA" in result.stderr
    assert_nothing_written(config)


def test_a_record_of_another_key_or_a_corrupt_one(dns_world: World, tmp_path: Path) -> None:
    url, _ = acme_sh_home(dns_world.pebble, tmp_path / ".acme.sh")
    config, toml = setup(dns_world, tmp_path)
    assert cli(toml, "import", "--acme-sh", str(tmp_path / ".acme.sh")).exit_code == 0
    key_path = Path(config.acme.account_key)
    key_path.write_bytes(pem(ec.generate_private_key(ec.SECP256R1())))  # replaced by hand
    client = AcmeClient(config.acme)  # the record is not this key's: found or registered anew
    assert client.account_uri != url
    client.close()
    assert record_for(load_existing(str(key_path)), config.acme.directory) is None

    Path(f"{key_path}.json").write_text('{"url": "file:///etc/passwd", "directory": "x", '
                                        '"thumbprint": "y"}')
    with pytest.raises(ConfigError, match=f"ACME account record {key_path}.json: url is not an "
                                          "http\\(s\\) URL"):
        AcmeClient(config.acme)
    Path(f"{key_path}.json").write_text("{")
    result = cli(toml, "show")
    assert result.exit_code == 2 and f"ACME account record {key_path}.json is not JSON" \
        in result.stderr
