"""Debian's nginx serving HTTPS on 127.0.0.1, with its own config, prefix and logs in a temp dir.

``ssl_certificate`` takes the leaf followed by the chain (pass a full-chain file as ``cert``).
Reload as an admin would: ``nginx -s reload`` with the same ``-c``/``-p``, which signals the master
(pid file in the workdir); nginx then starts new workers with the new certificate and lets the old
ones finish. ``nginx -t`` is the config test; a reload with a broken config keeps the old one.

Example::

    with NginxServer(cert=files.fullchain, key=files.key) as nginx:
        nginx.verify_urls["https"]          # "tls://127.0.0.1:40123"
        nginx.reload(expect=new_fingerprint)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lecentral_testing.daemons.base import TlsServer
from lecentral_testing.process import Daemon, find_executable


class NginxServer(TlsServer):
    """nginx with one ``server`` block on ``https`` (127.0.0.1, dynamic port)."""

    kind = "nginx"
    serving_processes = ("nginx",)
    cert_is_fullchain = True

    def __init__(self, workdir: Path | str | None = None, *, cert: Path | str, key: Path | str,
                 server_name: str = "localhost", extra_server: str = "",
                 vhosts: Mapping[str, tuple[Path | str, Path | str]] | None = None) -> None:
        super().__init__(workdir, cert=cert, key=key)
        self.server_name = server_name
        #: more name-based servers on the same port: server_name -> (cert, key), chosen by SNI
        self.vhosts = {name: (Path(c).resolve(), Path(k).resolve()) for name, (c, k) in (vhosts or {}).items()}
        self.extra_server = extra_server  # more directives for the server block (tests of bad configs)
        self._nginx = find_executable("nginx", package="nginx")
        self.dir = self.state_dir("nginx", None, max_len=4096)
        self.conf = self.dir / "nginx.conf"
        self.pid_file = self.dir / "nginx.pid"
        self.error_log = self.dir / "error.log"

    def listeners(self) -> dict[str, str]:
        return {"https": "tls"}

    def _common_args(self) -> list[str]:
        # -p: relative paths and temp dirs under our dir; -e: the error log used before the config
        # is read (else nginx -t writes to /var/log/nginx).
        return ["-p", f"{self.dir}/", "-c", str(self.conf), "-e", str(self.error_log)]

    def write_config(self) -> None:
        temp = self.dir / "temp"
        temp.mkdir(exist_ok=True)
        temps = "".join(f"    {kind}_temp_path {temp}/{kind};\n"
                        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        # user root: workers only serve "ok" and need nothing from disk; our dir may be 0700 root.
        self.conf.write_text(
            f"pid {self.pid_file};\nerror_log {self.error_log} info;\nuser root;\n"
            "worker_processes 1;\nevents { worker_connections 64; }\n"
            f"http {{\n    access_log off;\n{temps}"
            + self._server(self.server_name, self.cert, self.key, self.extra_server, default=True)
            + "".join(self._server(name, c, k, "") for name, (c, k) in self.vhosts.items())
            + "}\n"
        )

    def _server(self, name: str, cert: Path, key: Path, extra: str, default: bool = False) -> str:
        listen = f"{self.address}:{self.ports['https']} ssl{' default_server' if default else ''}"
        return (f"    server {{\n        listen {listen};\n        server_name {name};\n"
                f"        ssl_certificate {cert};\n        ssl_certificate_key {key};\n{extra}"
                '        location / { return 200 "ok\\n"; }\n    }\n')

    def daemon(self) -> Daemon:
        argv = [self._nginx, *self._common_args(), "-g", "daemon off;"]
        return Daemon("nginx", argv, log_path=self.error_log, cwd=self.dir)

    @property
    def pid_path(self) -> Path:
        return self.pid_file

    @property
    def reload_argv(self) -> list[str]:
        return [self._nginx, *self._common_args(), "-s", "reload"]

    @property
    def check_argv(self) -> list[str]:
        return [self._nginx, *self._common_args(), "-t", "-q"]
