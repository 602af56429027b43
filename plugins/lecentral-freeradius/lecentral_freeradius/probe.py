"""Ask a running FreeRADIUS whether it answers (pyrad) and which certificate EAP presents (eapol_test).

:func:`access_request` sends one Access-Request, signed with a Message-Authenticator (servers
hardened against BlastRADIUS drop requests without one), and returns the reply's code: any
answer means the server is up. :func:`eap_certificate` runs wpa_supplicant's ``eapol_test``
against the server and returns the certificate chain the server sent in the EAP-TLS (or
PEAP/TTLS) handshake, written by ``eapol_test -o``. The chain is not validated (no ``ca_cert``):
the caller compares fingerprints, a stronger check.

The shared secret and the password never appear in an error: messages name the server and the
step, and eapol_test's output is quoted with both masked. eapol_test only takes the secret on its
command line (``-s``), where other local users can read it for the second it runs (see README).
"""

from __future__ import annotations

import datetime as dt
import io
import math
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lecentral.api import VerifyError

#: the attributes the check sends and reads (pyrad needs a dictionary; FreeRADIUS's own has
#: syntax pyrad does not parse)
DICTIONARY = """\
ATTRIBUTE	User-Name	1	string
ATTRIBUTE	User-Password	2	string
ATTRIBUTE	NAS-IP-Address	4	ipaddr
ATTRIBUTE	Reply-Message	18	string
ATTRIBUTE	State	24	octets
ATTRIBUTE	NAS-Identifier	32	string
ATTRIBUTE	EAP-Message	79	octets
ATTRIBUTE	Message-Authenticator	80	octets
"""
REPLIES = {2: "Access-Accept", 3: "Access-Reject", 11: "Access-Challenge"}
NAS_IDENTIFIER = "lecentral-install"


@dataclass(frozen=True)
class RadiusTarget:
    """Where and as whom the checks talk to the server. ``repr`` hides the secrets."""

    host: str
    port: int
    secret: str
    user: str
    password: str

    def __repr__(self) -> str:
        return f"RadiusTarget({self.where}, user={self.user!r})"

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def scrub(self, text: str) -> str:
        """``text`` with the shared secret and the password masked."""
        for secret in sorted({self.secret, self.password} - {""}, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


def access_request(target: RadiusTarget, timeout: float) -> str:
    """Send one Access-Request; return the reply's name (``Access-Reject``...), or VerifyError."""
    from pyrad import packet
    from pyrad.client import Client, Timeout
    from pyrad.dictionary import Dictionary

    client = Client(server=target.host, authport=target.port, secret=target.secret.encode(),
                    dict=Dictionary(io.StringIO(DICTIONARY)))
    client.timeout, client.retries = max(timeout, 0.5), 1
    request = client.CreateAuthPacket(code=packet.AccessRequest, User_Name=target.user)
    request["User-Password"] = request.PwCrypt(target.password)
    request["NAS-Identifier"] = NAS_IDENTIFIER
    request.add_message_authenticator()
    try:
        reply = client.SendPacket(request)
    except Timeout:
        raise VerifyError(f"RADIUS {target.where}: no answer to an Access-Request within "
                          f"{timeout:.0f}s (FreeRADIUS not running, this host not a client in "
                          "clients.conf, or options.secret not its shared secret)") from None
    except OSError as exc:
        raise VerifyError(f"RADIUS {target.where}: {exc.strerror or exc}") from None
    finally:
        close = getattr(client, "_CloseSocket", None)
        if close is not None:
            close()
    return REPLIES.get(reply.code, f"code {reply.code}")


def eap_certificate(target: RadiusTarget, method: str, timeout: float, eapol_test: str,
                    client_cert: str = "", client_key: str = "") -> bytes:
    """The DER of the leaf the server presents in an EAP-``method`` handshake."""
    with tempfile.TemporaryDirectory(prefix="lecentral-eap-") as tmp:  # 0700: holds the password
        work = Path(tmp)
        if method == "TLS" and not client_cert:
            client_cert, client_key = _throwaway_client(work)
        conf = work / "eapol.conf"
        conf.write_text(_network_block(target, method, client_cert, client_key))
        conf.chmod(0o600)
        out = work / "server-chain.pem"
        seconds = max(math.ceil(timeout), 1)
        argv = [eapol_test, "-c", str(conf), "-a", target.host, "-p", str(target.port),
                "-s", target.secret, "-o", str(out), "-t", str(seconds), "-r", "0"]
        try:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, timeout=seconds + 10, check=False)
            output = result.stdout.decode(errors="replace")
        except subprocess.TimeoutExpired:
            output = "(eapol_test did not finish)"
        except OSError as exc:
            raise VerifyError(f"EAP-{method} check of {target.where}: cannot run {eapol_test}: "
                              f"{exc.strerror}") from None
        chain = out.read_bytes() if out.exists() else b""
    if b"-----BEGIN CERTIFICATE-----" not in chain:
        raise VerifyError(f"EAP-{method} on RADIUS {target.where}: the server presented no "
                          f"certificate; eapol_test said: {_summary(target, output)}")
    try:
        return leaf_of(chain)
    except ValueError as exc:
        raise VerifyError(f"EAP-{method} on RADIUS {target.where}: unreadable certificate: {exc}") from None


def leaf_of(chain: bytes) -> bytes:
    """The DER of the end-entity certificate in a PEM ``chain`` in any order.

    eapol_test writes the chain as OpenSSL verified it, from the top down: the leaf comes last,
    and a server may send extra certificates, so it is found by name, not by position: the one
    that issued none of the others.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    certs = x509.load_pem_x509_certificates(chain)
    issuers = {c.issuer for c in certs if c.issuer != c.subject}
    leaves = [c for c in certs if c.subject not in issuers] or certs
    return leaves[-1].public_bytes(Encoding.DER)


def _network_block(target: RadiusTarget, method: str, client_cert: str, client_key: str) -> str:
    lines = ["network={", "\tkey_mgmt=IEEE8021X", f"\teap={method}", f'\tidentity="{target.user}"']
    if method == "TLS":
        lines += [f'\tclient_cert="{client_cert}"', f'\tprivate_key="{client_key}"']
    else:
        inner = "MSCHAPV2" if method == "PEAP" else "PAP"
        lines += [f'\tpassword="{target.password}"', f'\tphase2="auth={inner}"']
    return "\n".join([*lines, "}", ""])


def _summary(target: RadiusTarget, output: str) -> str:
    """The lines of eapol_test's debug output that say what went wrong, secrets masked."""
    marks = ("FAILURE", "timeout", "Timeout", "TLS:", "EAP-", "Access-Reject", "No response")
    lines = [line.strip() for line in output.splitlines() if any(m in line for m in marks)]
    return target.scrub(" | ".join(lines[-6:]) or output.strip()[-400:] or "nothing")


def _throwaway_client(directory: Path) -> tuple[str, str]:
    """A self-signed client certificate for EAP-TLS: the server presents its own certificate
    before it checks the client's, then rejects this one, which is all the check needs."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lecentral-install EAP check")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "client.pem", directory / "client.key"
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(cert_path), str(key_path)
