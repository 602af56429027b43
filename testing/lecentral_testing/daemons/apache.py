"""Debian's Apache httpd (apache2) serving HTTPS on 127.0.0.1 with its own ServerRoot and config.

Nothing of /etc/apache2 is read: our httpd.conf loads the few modules it needs from
/usr/lib/apache2/modules. The parent runs in the foreground (``-DFOREGROUND``) as root and reads the
certificate; its children run as www-data (Apache refuses to serve as root).
Reload as an admin would: ``apache2 -k graceful -f CONF`` (SIGUSR1 to the pid in PidFile): the
parent re-reads config and certificates and replaces its children as they finish.
``apache2 -t -f CONF`` is the config test.

Example::

    with ApacheServer(cert=files.cert, key=files.key, chain=files.chain) as apache:
        apache.verify_urls["https"]      # "https://127.0.0.1:40123"
"""

from __future__ import annotations

from pathlib import Path

from lecentral_testing.daemons.base import TlsServer
from lecentral_testing.process import Daemon, daemon_user, find_executable

MODULES_DIR = Path("/usr/lib/apache2/modules")
_MODULES = ("mpm_event", "authz_core", "socache_shmcb", "ssl")


class ApacheServer(TlsServer):
    """apache2 with one ``<VirtualHost>`` on ``https`` (127.0.0.1, dynamic port).

    ``chain`` (optional) becomes ``SSLCertificateChainFile``; since Apache 2.4.8 a full-chain file
    as ``cert`` is the preferred alternative.
    """

    kind = "apache"
    serving_processes = ("apache2",)

    def __init__(self, workdir: Path | str | None = None, *, cert: Path | str, key: Path | str,
                 chain: Path | str | None = None, server_name: str = "localhost",
                 extra_vhost: str = "") -> None:
        super().__init__(workdir, cert=cert, key=key, chain=chain)
        self.server_name = server_name
        self.extra_vhost = extra_vhost
        self._apache = find_executable("apache2", package="apache2")
        self.user = daemon_user("www-data")
        self.dir = self.state_dir("apache", None, max_len=4096)
        self.conf = self.dir / "httpd.conf"
        self.pid_file = self.dir / "httpd.pid"
        self.error_log = self.dir / "error.log"

    def listeners(self) -> dict[str, str]:
        return {"https": "https"}

    def write_config(self) -> None:
        modules = "".join(f"LoadModule {m}_module {MODULES_DIR}/mod_{m}.so\n" for m in _MODULES)
        user = f"User {self.user}\nGroup {self.user}\n" if self.user else ""
        chain = f"    SSLCertificateChainFile {self.chain}\n" if self.chain else ""
        port = self.ports["https"]
        self.conf.write_text(
            f"ServerRoot {self.dir}\nServerName {self.server_name}\nPidFile {self.pid_file}\n"
            f"DefaultRuntimeDir {self.dir}\nErrorLog {self.error_log}\nLogLevel info\n{modules}{user}"
            # One small child: enough for verification, light on 2 cores.
            "StartServers 1\nServerLimit 1\nThreadsPerChild 4\nMinSpareThreads 1\n"
            "MaxSpareThreads 4\nMaxRequestWorkers 4\n"
            f"Listen {self.address}:{port} https\n"
            f"SSLSessionCache shmcb:{self.dir}/ssl_scache(512000)\n"
            f"<VirtualHost {self.address}:{port}>\n    ServerName {self.server_name}\n"
            f"    DocumentRoot {self.dir}\n    SSLEngine on\n"
            f"    SSLCertificateFile {self.cert}\n    SSLCertificateKeyFile {self.key}\n{chain}"
            f"{self.extra_vhost}</VirtualHost>\n"
        )

    def daemon(self) -> Daemon:
        argv = [self._apache, "-f", str(self.conf), "-DFOREGROUND"]
        return Daemon("apache2", argv, log_path=self.error_log, cwd=self.dir)

    @property
    def pid_path(self) -> Path:
        return self.pid_file

    @property
    def reload_argv(self) -> list[str]:
        return [self._apache, "-f", str(self.conf), "-k", "graceful"]

    @property
    def check_argv(self) -> list[str]:
        return [self._apache, "-f", str(self.conf), "-t"]
