"""``lecentral-install``: the agent that installs certificates from the central database on a server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from lecentral import __version__
from lecentral.cli.common import LazyGroup, exit_status_epilog, setup_logging
from lecentral.cli.startup import started

if TYPE_CHECKING:
    from lecentral.install.config import InstallConfig
    from lecentral.registry import Registry

#: sub-commands, imported only when used
COMMANDS = {
    "run": ("lecentral.cli.agent_commands:run", "Install the database's certificates (cron/timer)."),
    "status": ("lecentral.cli.agent_commands:status",
               "Installed vs database vs served, for each certificate."),
    "check": ("lecentral.cli.agent_commands:check",
              "Monitoring plugin (NRPE): this host's certificates, installed vs database vs served."),
    "csr": ("lecentral.cli.agent_commands:csr", "Make the private key here and a CSR for the central host."),
    "plugins": ("lecentral.cli.agent_commands:plugins", "Installed service plugins and verifiers."),
}


@dataclass
class AgentApp:
    """What the sub-commands share, built lazily: the plugin registry and install.toml."""

    config_path: str | None
    verbose: int = 0
    _registry: Registry | None = None
    _config: InstallConfig | None = None

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            from lecentral.config import disabled_plugins
            from lecentral.install.config import (
                DEFAULT_INSTALL_CONFIG,
                INSTALL_CONFIG_ENV,
            )
            from lecentral.registry import Registry

            disabled = disabled_plugins(self.config_path, INSTALL_CONFIG_ENV, DEFAULT_INSTALL_CONFIG)
            self._registry = Registry.load(disabled=disabled)
        return self._registry

    @property
    def config(self) -> InstallConfig:
        if self._config is None:
            from lecentral.install.config import load_install

            self._config = load_install(self.config_path, self.registry)
            started()
        return self._config


@click.group("lecentral-install", cls=LazyGroup, lazy=COMMANDS, epilog=exit_status_epilog(),
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", envvar="LECENTRAL_INSTALL_CONFIG",
              help="Configuration file [default: /etc/lecentral/install.toml, or "
                   "$LECENTRAL_INSTALL_CONFIG].")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.version_option(__version__, prog_name="lecentral-install")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: int, quiet: bool) -> None:
    """Install certificates from the central lecentral database on this server.

    Run hourly or daily from a systemd timer or cron. For each [[cert]] of install.toml it
    installs the certificate in the database if it is enabled, not expired and not the installed
    one (never an older one): checks it against the local private key first, switches the files as a set,
    reloads the service, verifies the new certificate is served, and rolls back and alerts if
    anything fails. The private key never leaves this server.

    \b
    Typical use:
      lecentral-install csr www.example.com --key /etc/ssl/private/www.key --out www.csr
      lecentral-install run --dry-run     what would be done
      lecentral-install run               do it (exit status 1 if any certificate failed)
      lecentral-install status            installed vs database vs served
    """
    setup_logging(verbose, quiet, "lecentral-install")
    ctx.obj = AgentApp(config_path, verbose)
