"""Debian's HAProxy terminating TLS on 127.0.0.1, with its own config, pid file and log in a temp dir.

HAProxy reads one PEM per certificate holding the leaf, the chain and the key (``combined``), from
a file or from a directory that ``bind ... crt DIR/`` loads whole: every regular file there except
dot files and ``*.key``/``*.ocsp``/``*.issuer``/``*.sctl`` is a certificate, and one without its
key fails the config test (``No Private Key found in 'DIR/x.crt.key'``).

It runs in master-worker mode (``-W``, in the foreground), as Debian's unit does (``-Ws``). A
reload is what ``systemctl reload haproxy`` does: SIGUSR2 to the master, which re-reads the
configuration and the certificates and starts new workers; the old ones finish their connections
(at most ``hard-stop-after``). With a broken configuration the master keeps the old workers
serving. ``haproxy -c -f CONF`` is the config test.

Example::

    with HaproxyServer(combined=certs / "www.pem", crt=certs) as haproxy:   # bind ... crt certs/
        haproxy.verify_urls["https"]            # "tls://127.0.0.1:40123"
        haproxy.reload(expect=new_fingerprint)
"""

from __future__ import annotations

from pathlib import Path

from lecentral_testing.daemons.base import TlsServer
from lecentral_testing.daemons.certs import CertFiles, write_atomic
from lecentral_testing.process import Daemon, find_executable


class HaproxyServer(TlsServer):
    """HAProxy with one TLS ``bind`` on ``https`` (127.0.0.1, dynamic port) answering "ok".

    ``combined`` is the PEM file (leaf, chain, key) it presents; ``crt`` is what ``bind ... crt``
    names: ``combined`` itself by default, or a directory (HAProxy then loads every file in it).
    """

    kind = "haproxy"
    serving_processes = ("haproxy",)

    def __init__(self, workdir: Path | str | None = None, *, combined: Path | str,
                 crt: Path | str | None = None) -> None:
        super().__init__(workdir, cert=combined, key=combined)
        self.crt = Path(crt).resolve() if crt is not None else self.cert
        self._haproxy = find_executable("haproxy", package="haproxy")
        self.dir = self.state_dir("haproxy", None, max_len=4096)
        self.conf = self.dir / "haproxy.cfg"
        self.pid_file = self.dir / "haproxy.pid"
        self.log = self.dir / "haproxy.log"

    def listeners(self) -> dict[str, str]:
        return {"https": "tls"}

    def write_config(self) -> None:
        crt = f"{self.crt}/" if self.crt.is_dir() else str(self.crt)
        self.conf.write_text(
            "global\n    hard-stop-after 10s\n"
            "defaults\n    mode http\n    timeout connect 5s\n    timeout client 10s\n"
            "    timeout server 10s\n"
            f"frontend https\n    bind {self.address}:{self.ports['https']} ssl crt {crt}\n"
            '    http-request return status 200 content-type text/plain string "ok"\n')

    def daemon(self) -> Daemon:
        argv = [self._haproxy, "-W", "-db", "-f", str(self.conf), "-p", str(self.pid_file)]
        return Daemon("haproxy", argv, log_path=self.log, cwd=self.dir)

    @property
    def pid_path(self) -> Path:
        return self.pid_file

    @property
    def reload_argv(self) -> list[str]:
        # systemd's ExecReload for haproxy.service, on our master's pid
        return ["kill", "-USR2", str(self.pid)]

    @property
    def check_argv(self) -> list[str]:
        # no -q: its alerts are what the agent quotes when the config test fails
        return [self._haproxy, "-c", "-f", str(self.conf)]

    def put_certificate(self, new: CertFiles) -> str:
        """Write ``new`` as one combined PEM (leaf, chain, key, 0600) over :attr:`cert`."""
        data = new.cert.read_bytes() + new.chain.read_bytes() + new.key.read_bytes()
        write_atomic(self.cert, data, 0o600)
        return new.fingerprint()
