"""A real web server for HTTP-01 tests, the demo and the benchmark: Debian's nginx, plain HTTP.

:class:`WebrootSites` reuses the nginx launcher of :mod:`lecentral_testing.daemons.nginx` (ports,
start, stop, reload) with one plain-HTTP listener on 127.0.0.1 and one ``server`` block per site,
its ``root`` the site's webroot, as a web host's DocumentRoot. Any other Host gets the default
server, which serves an empty directory (404 for every challenge). Start it first, then give its
port to Pebble as ``httpPort``: Pebble's validation authority connects there for every name.

Example::

    with WebrootSites(tmp, {"www": (["www.web.test", "web.web.test"], tmp / "htdocs")}) as web:
        pebble = PebbleServer(dns_server=(LOOPBACK, bind.port), http_port=web.port)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from lecentral_testing.daemons.certs import write_cert_files
from lecentral_testing.daemons.nginx import NginxServer


class WebrootSites(NginxServer):
    """nginx serving each site's names from its webroot over plain HTTP on 127.0.0.1:<port>.

    ``sites``: site label -> (names, webroot). The webroots are created if missing.
    ``redirects``: name -> another name; every request for the first is redirected (301) to the
    same path on the second, as a site that moved would be.
    """

    kind = "nginx-http"

    def __init__(self, workdir: Path | str,
                 sites: Mapping[str, tuple[Sequence[str], Path | str]],
                 redirects: Mapping[str, str] | None = None) -> None:
        # the launcher wants a certificate; plain HTTP never presents it
        unused = write_cert_files(Path(workdir) / "unused-tls", ["localhost"])
        super().__init__(workdir, cert=unused.cert, key=unused.key)
        self.sites = {label: ([n.lower() for n in names], Path(root).resolve())
                      for label, (names, root) in sites.items()}
        for _, root in self.sites.values():
            root.mkdir(parents=True, exist_ok=True)
        self.redirects = {k.lower(): v.lower() for k, v in (redirects or {}).items()}
        self.default_root = self.dir / "default-root"
        self.default_root.mkdir(exist_ok=True)

    @property
    def port(self) -> int:
        """The HTTP port (Pebble's ``httpPort``)."""
        return self.ports["http"]

    def webroot(self, label: str) -> Path:
        """The webroot of site ``label``."""
        return self.sites[label][1]

    def listeners(self) -> dict[str, str]:
        return {"http": "http"}

    def write_config(self) -> None:
        temp = self.dir / "temp"
        temp.mkdir(exist_ok=True)
        temps = "".join(f"    {kind}_temp_path {temp}/{kind};\n"
                        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        listen = f"{self.address}:{self.port}"
        servers = [(f"    server {{\n        listen {listen} default_server;\n        server_name _;\n"
                    f"        root {self.default_root};\n    }}\n")]
        for names, root in self.sites.values():
            servers.append(f"    server {{\n        listen {listen};\n"
                           f"        server_name {' '.join(names)};\n        root {root};\n    }}\n")
        for name, target in self.redirects.items():
            servers.append(f"    server {{\n        listen {listen};\n        server_name {name};\n"
                           f"        return 301 http://{target}:$server_port$request_uri;\n    }}\n")
        # user root: pytest's temp dirs are 0700 root, and the workers only read the webroots
        self.conf.write_text(
            f"pid {self.pid_file};\nerror_log {self.error_log} info;\nuser root;\n"
            "worker_processes 1;\nevents { worker_connections 256; }\n"
            f"http {{\n    access_log {self.dir}/access.log;\n    default_type text/plain;\n"
            f"{temps}" + "".join(servers) + "}\n")

