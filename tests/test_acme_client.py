"""The ACME client: the account key, registration against a real Pebble, problem documents, ARI ids."""

from __future__ import annotations

import datetime as dt
import stat
import threading
from pathlib import Path

import pytest
from acme import messages
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from lecentral_testing.pki import make_key
from renew_world import World

from lecentral.acme.account import load_or_create
from lecentral.acme.client import AcmeClient, ari_cert_id
from lecentral.acme.problems import parse_retry_after, problem_error
from lecentral.config import AcmeConfig
from lecentral.errors import ConfigError


def test_account_key_created_0600_once_even_when_raced(tmp_path: Path) -> None:
    path = tmp_path / "acme" / "account.key"
    path.parent.mkdir()
    results = []

    def create() -> None:
        results.append(load_or_create(str(path)))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    thumbprints = {r.jwk.thumbprint() for r in results}
    assert len(thumbprints) == 1  # every racer ended up with the one key on disk
    assert sum(r.created for r in results) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["account.key"]  # no temp files left
    assert load_or_create(str(path)).jwk.thumbprint() in thumbprints


def test_unusable_account_key_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "account.key"
    path.write_text("not a key")
    with pytest.raises(ConfigError, match=f"ACME account key {path} is not an unencrypted PEM"):
        load_or_create(str(path))


def test_registration_is_found_again_with_the_same_key(dns_world: World, tmp_path: Path) -> None:
    config = AcmeConfig(directory=dns_world.pebble.directory_url, email="ops@example.test",
                        account_key=str(tmp_path / "account.key"),
                        ca_bundle=str(dns_world.pebble.ca_bundle))
    first = AcmeClient(config)
    second = AcmeClient(config)
    assert first.account_uri == second.account_uri
    assert not first.offers_ari  # Debian's Pebble 2.4 has no renewalInfo
    first.close()
    second.close()


def test_half_configured_eab_is_refused_without_echoing_the_secret(dns_world: World,
                                                                   tmp_path: Path) -> None:
    secret = "c2VjcmV0LWhtYWMta2V5LXRoYXQtbXVzdC1uZXZlci1zaG93"
    config = AcmeConfig(directory=dns_world.pebble.directory_url, account_key=str(tmp_path / "k"),
                        ca_bundle=str(dns_world.pebble.ca_bundle), eab_hmac_key=secret)
    with pytest.raises(ConfigError, match="eab_kid and eab_hmac_key go together") as info:
        AcmeClient(config)
    assert secret not in str(info.value)


def test_untrusted_ca_tls_names_ca_bundle(dns_world: World, tmp_path: Path) -> None:
    from lecentral.errors import IssueError

    config = AcmeConfig(directory=dns_world.pebble.directory_url, account_key=str(tmp_path / "k"))
    with pytest.raises(IssueError, match="set \\[acme\\] ca_bundle"):
        AcmeClient(config)


def test_problem_document_with_subproblems_and_retry_time() -> None:
    problem = messages.Error.from_json({
        "type": "urn:ietf:params:acme:error:rateLimited",
        "detail": "too many new orders recently",
        "subproblems": [{"type": "urn:ietf:params:acme:error:caa", "detail": "CAA forbids",
                         "identifier": {"type": "dns", "value": "www.example.test"}}],
    })
    problem.retry_after = "Wed, 21 Oct 2026 07:28:00 GMT"
    error = problem_error(problem, "creating the order for www.example.test")
    text = str(error)
    assert text.startswith("creating the order for www.example.test: the CA answered rateLimited: "
                           "too many new orders recently")
    assert "[www.example.test: caa: CAA forbids]" in text
    assert "retry after 2026-10-21 07:28:00 UTC" in text
    assert error.code == "rateLimited" and error.retry_at is not None


def test_retry_after_in_seconds_and_garbage() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert parse_retry_after("120", now) == now + dt.timedelta(seconds=120)
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_ari_certificate_id_matches_rfc_9773_example() -> None:
    """RFC 9773 §4.1: AKI 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:DE:01:C8:D4 and serial
    0x87654321 give aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE."""
    from cryptography.hazmat.primitives import serialization

    key = make_key("ec256")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ari.example.test")])
    now = dt.datetime.now(dt.UTC)
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(0x87654321)
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.AuthorityKeyIdentifier(aki, None, None), critical=False)
            .sign(key, hashes.SHA256()))
    assert ari_cert_id(cert.public_bytes(serialization.Encoding.PEM)) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_account_jws_is_the_librarys_jws(kind: str) -> None:
    """The JWS SafeNetwork puts together for an account's request verifies with the account's
    key and carries the same protected header and payload as the acme library's own."""
    import json

    import josepy
    from acme import jws
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from lecentral.acme.account import key_type
    from lecentral.acme.network import SafeNetwork

    if kind == "ec":
        jwk: josepy.JWK = josepy.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        alg: josepy.JWASignature = josepy.ES256
    else:
        jwk = josepy.JWKRSA(key=rsa.generate_private_key(65537, 2048))
        alg = josepy.RS256
    assert key_type(jwk)
    network = SafeNetwork(jwk, alg=alg, verify=True, user_agent="test")
    nonce = jws.Header._fields["nonce"].decode("3W2-X9iLDCnXZ4GZbdbB6C8V5XdEwP2jYw0Nl8ux12o")
    url, kid = "https://ca.test/acme/order/1", "https://ca.test/acme/acct/7"
    network.account = messages.RegistrationResource(body=messages.Registration(), uri=kid)
    body = messages.NewOrder(identifiers=(messages.Identifier(typ=messages.IDENTIFIER_FQDN,
                                                              value="a.test"),))
    for obj in (body, None):  # a POST and a POST-as-GET (empty payload)
        ours = jws.JWS.json_loads(network._wrap_in_jws(obj, nonce, url))  # type: ignore[arg-type]
        theirs = jws.JWS.sign(obj.json_dumps().encode() if obj else b"", key=jwk, alg=alg,
                              nonce=nonce, url=url, kid=kid)
        assert ours.verify(jwk.public_key())
        assert ours.payload == theirs.payload
        assert json.loads(ours.signature.protected) == json.loads(theirs.signature.protected)
        assert not ours.signature.header.not_omitted()  # nothing outside the protected header
    # before the account is known (its registration), the library's JWS with the key itself
    network.account = None
    registration = jws.JWS.json_loads(network._wrap_in_jws(body, nonce, url))
    assert registration.signature.combined.jwk == jwk.public_key()
    assert registration.signature.combined.kid is None
    network.session.close()
