"""``lecentral``: the command line of the central host."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from lecentral import __version__
from lecentral.cli.common import LazyGroup, exit_status_epilog, setup_logging
from lecentral.cli.startup import started

if TYPE_CHECKING:
    from lecentral.config import CentralConfig
    from lecentral.interfaces import Store
    from lecentral.registry import Registry

#: more sub-commands from installed distributions (``lecentral demo`` comes with lecentral-testing)
COMMANDS_GROUP = "lecentral.commands"

#: sub-commands, imported only when used
COMMANDS = {
    "init": ("lecentral.cli.admin:init", "Create the tables (safe on an existing database)."),
    "doctor": ("lecentral.cli.doctor:doctor", "What in an existing (seed) database would stop lecentral or the Perl agents."),
    "upgrade": ("lecentral.cli.admin:upgrade", "Run the pending schema migrations of lecentral's tables."),
    "agent": ("lecentral.cli.agent_accounts:agent",
              "Which database user may report for which host (reporting agents)."),
    "add": ("lecentral.cli.admin:add", "Add a name from its CSR (the seed's populate.pl)."),
    "set-csr": ("lecentral.cli.admin:set_csr", "Replace the CSR of a name."),
    "set": ("lecentral.cli.admin:set_", "Per-certificate settings (the ACME profile)."),
    "enable": ("lecentral.cli.admin:enable", "Let the renew job and the agents manage a name."),
    "disable": ("lecentral.cli.admin:disable", "Stop renewing and installing a name."),
    "remove": ("lecentral.cli.admin:remove", "Delete a name and its certificate."),
    "list": ("lecentral.cli.listing:list_", "Every certificate, soonest expiry first."),
    "show": ("lecentral.cli.admin:show", "One certificate in full, with its history."),
    "plugins": ("lecentral.cli.admin:plugins", "Installed plugins and what they register."),
    "plugin": ("lecentral.cli.plugin:plugin", "Write a plugin: 'plugin new NAME' makes a package."),
    "account": ("lecentral.cli.account:account",
                "The ACME account: import certbot's/acme.sh's, show the one in use."),
    "config": ("lecentral.cli.admin:config", "Show the effective configuration, secrets masked."),
    "renew": ("lecentral.cli.renew:renew", "Issue or renew what is due (the seed's download_cert.pl)."),
    "dns": ("lecentral.cli.dns:dns", "Set up and check the per-name DNS sub-zones."),
    "fleet": ("lecentral.cli.fleet:fleet", "What every host and endpoint really installs and serves."),
    "probe": ("lecentral.cli.fleet_probe:probe", "Dial every endpoint of the certificates; record what each serves."),
    "endpoint": ("lecentral.cli.fleet_probe:endpoint", "Endpoints to probe beside the agents' verify URLs."),
    "check": ("lecentral.cli.monitor:check", "Monitoring plugin (Nagios/Icinga/NRPE) for the fleet."),
    "metrics": ("lecentral.cli.monitor:metrics", "The fleet as Prometheus metrics (textfile)."),
}


@dataclass
class App:
    """What the sub-commands share, built lazily: config, plugin registry, store."""

    config_path: str | None
    #: ``lecentral -q``: commands run by timers print nothing on stdout when all is well
    quiet: bool = False
    _config: CentralConfig | None = None
    #: a monitoring check: the database is retried for a few seconds only (for_a_check)
    checking: bool = False
    _registry: Registry | None = None
    _store: Store | None = field(default=None)

    @property
    def config(self) -> CentralConfig:
        if self._config is None:
            from lecentral.config import load_central

            self._config = load_central(self.config_path)
        return self._config

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            from lecentral.registry import Registry

            self._registry = Registry.load(disabled=self.config.plugins.disable)
        return self._registry

    def store(self, *, check: bool = True) -> Store:
        """The store of ``[database] url``; with ``check``, fail clearly if init was not run."""
        if self._store is None:
            from lecentral.config import for_a_check
            from lecentral.store import open_store

            settings = for_a_check(self.config.database) if self.checking else self.config.database
            self._store = open_store(self.config.database.url, self.registry, settings)
            if check:
                self._store.check_schema()
            started()
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


@click.group("lecentral", cls=LazyGroup, lazy=COMMANDS, entry_point_group=COMMANDS_GROUP,
             epilog=exit_status_epilog(),
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", metavar="PATH", envvar="LECENTRAL_CONFIG",
              help="Configuration file [default: /etc/lecentral/lecentral.toml, or $LECENTRAL_CONFIG].")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True,
              help="Only errors on stderr; renew and probe print nothing on stdout unless "
                   "something failed or changed (for timers and cron, which mail any output).")
@click.version_option(__version__, prog_name="lecentral")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: int, quiet: bool) -> None:
    """Central ACME certificate management: CSRs in, certificates out.

    The central host keeps every certificate in one SQL table (the seed's `certs`), renews them
    from their CSRs by DNS-01 into per-name BIND sub-zones or HTTP-01 through a webroot, and the
    `lecentral-install` agent on each server installs them. Private keys never leave the servers.

    \b
    Typical first steps:
      lecentral init                      create the tables (safe on an existing database)
      lecentral add www.example.com       add a name from /etc/lecentral/csr/NAME.csr
      lecentral enable www.example.com    let the renew job manage it
      lecentral renew                     issue or renew what is due
      lecentral list                      see everything, soonest expiry first
    """
    setup_logging(verbose, quiet, "lecentral")
    app = App(config_path, quiet=quiet)
    ctx.obj = app
    ctx.call_on_close(app.close)
