"""One TCP connection to the service being verified: a deadline, plaintext lines, the TLS handshake.

Every failure becomes a :class:`~lecentral.errors.VerifyError` that names ``host:port``, what we were
doing (connecting, reading the greeting, the TLS handshake...) and a hint for the next step.

The TLS handshake deliberately does **not** validate the chain or the host name: the agent compares
the SHA-256 fingerprint of the presented leaf with the certificate it just installed, which is a
stronger check than chain validation (it must be exactly that certificate), and it must also work
while the service still presents an expired or self-signed one. For the same reason the handshake
accepts old protocol versions and ciphers: nothing secret is sent over this connection.
"""

from __future__ import annotations

import socket
import time
from types import TracebackType
from typing import TYPE_CHECKING, Self

from lecentral.errors import VerifyError

if TYPE_CHECKING:
    import ssl

    from lecentral.verify.url import VerifyTarget

MAX_LINE = 8192  # longest protocol line we accept; a service sending more is not speaking the protocol


def printable(data: bytes | str, limit: int = 120) -> str:
    """Server text made safe for a log line: printable ASCII, cut to ``limit`` characters."""
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    clean = "".join(ch if 32 <= ord(ch) < 127 else "." for ch in text.rstrip("\r\n"))
    return clean if len(clean) <= limit else clean[:limit] + "..."


class Channel:
    """A connection with an overall deadline: every read and write gets the time that is left."""

    def __init__(self, target: VerifyTarget, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self._deadline = time.monotonic() + timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    # ------------------------------------------------------------------ errors

    def error(self, what: str, hint: str = "") -> VerifyError:
        """A VerifyError naming the service; ``hint`` says what to check next."""
        url = self.target.url
        message = f"verify {url}: {self.target.where}: {what}"
        return VerifyError(f"{message}; {hint}" if hint else message)

    def _os_error(self, exc: OSError, stage: str) -> VerifyError:
        import ssl

        where = self.target.where
        if isinstance(exc, ConnectionRefusedError):
            return self.error("connection refused",
                              f"is the service running and listening on {where}?")
        if isinstance(exc, (socket.timeout, TimeoutError)):
            hint = "check the port, a firewall, or that the service is not hanging"
            if "greeting" in stage:  # silent server: most likely waiting for our TLS ClientHello
                hint = ("a port that waits silently may expect TLS from the first byte: try tls:// "
                        "(or smtps://, imaps://, pop3s://)")
            return self.error(f"timed out after {self.timeout:g}s while {stage}", hint)
        if isinstance(exc, socket.gaierror):
            return self.error(f"cannot resolve host name {self.target.host!r} ({exc.strerror})",
                              "check the host in the verify URL")
        if isinstance(exc, ssl.SSLError):
            reason = exc.reason or exc.strerror or str(exc)
            if self.target.scheme.starttls:  # the dialogue went well: the TLS part failed
                hint = ("the service agreed to STARTTLS but its TLS failed: check its certificate "
                        "and key files and its TLS log")
            else:
                hint = ("is this port speaking TLS from the first byte? a port that needs STARTTLS "
                        "takes smtp+starttls://, imap+starttls://, pop3+starttls:// (or, with "
                        "lecentral-openldap, ldap+starttls://)")
            return self.error(f"TLS handshake failed ({reason})", hint)
        if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return self.error(f"connection reset by the service while {stage}",
                              "check the service's log")
        return self.error(f"{stage} failed: {exc.strerror or exc}")

    def _remaining(self, stage: str) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise self.error(f"timed out after {self.timeout:g}s while {stage}",
                             "check the port, a firewall, or that the service is not hanging")
        return left

    # --------------------------------------------------------------- plaintext

    def connect(self) -> None:
        """Open the TCP connection."""
        stage = "connecting"
        try:
            self._sock = socket.create_connection((self.target.host, self.target.port),
                                                  timeout=self._remaining(stage))
        except OSError as exc:
            raise self._os_error(exc, stage) from None

    @property
    def sock(self) -> socket.socket:
        """The connected socket (only after :meth:`connect`)."""
        if self._sock is None:
            raise RuntimeError("Channel.connect() was not called")
        return self._sock

    def send(self, data: bytes, stage: str) -> None:
        """Send ``data`` whole."""
        try:
            self.sock.settimeout(self._remaining(stage))
            self.sock.sendall(data)
        except OSError as exc:
            raise self._os_error(exc, stage) from None

    def _fill(self, stage: str) -> None:
        try:
            self.sock.settimeout(self._remaining(stage))
            chunk = self.sock.recv(4096)
        except OSError as exc:
            raise self._os_error(exc, stage) from None
        if not chunk:
            raise self.error(f"the service closed the connection while {stage}",
                             "check that the URL's scheme matches the protocol on this port, "
                             "and the service's log")
        self._buffer += chunk

    def readline(self, stage: str) -> str:
        """One CRLF (or LF) terminated line, without its end, decoded as Latin-1."""
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_LINE:
                raise self.error(f"line longer than {MAX_LINE} bytes while {stage}",
                                 "is this the right protocol for this port?")
            self._fill(stage)
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.rstrip(b"\r").decode("latin-1")

    # --------------------------------------------------------------------- TLS

    def handshake(self) -> bytes:
        """Run the TLS handshake on the connection and return the DER of the presented leaf."""
        stage = "in the TLS handshake"
        if self._buffer:
            # Plaintext that arrived after the service's "go ahead" is not part of any handshake;
            # it means a confused service or an injected response (the STARTTLS injection bugs).
            raise self.error(f"the service sent data after agreeing to STARTTLS: "
                             f"{printable(self._buffer)!r}", "is this the right protocol?")
        context = _client_context()
        try:
            self.sock.settimeout(self._remaining(stage))
            tls = context.wrap_socket(self.sock, server_hostname=self.target.sni,
                                      do_handshake_on_connect=False)
            self._sock = tls
            tls.do_handshake()
            der = tls.getpeercert(binary_form=True)
        except OSError as exc:  # ssl.SSLError is an OSError
            raise self._os_error(exc, stage) from None
        if not der:
            raise self.error("the service completed the TLS handshake without a certificate",
                             "check the service's TLS configuration")
        return der

    def close(self, goodbye: bytes = b"") -> None:
        """Say ``goodbye`` (QUIT, LOGOUT...) if there is time, then close; never raises."""
        if self._sock is None:
            return
        try:
            if goodbye and self._deadline > time.monotonic():
                self._sock.settimeout(min(1.0, self._deadline - time.monotonic()))
                self._sock.sendall(goodbye)
        except OSError:
            pass
        finally:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _client_context() -> ssl.SSLContext:
    """A client context that accepts any certificate and any protocol version the library still has."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):  # a library built without the old suites: keep its defaults
        pass
    return context
