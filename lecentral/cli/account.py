"""``lecentral account``: reuse an existing ACME account, and show the one in use.

Neither command ever registers an account or prints the key: ``import`` checks the account at the
CA with onlyReturnExisting before writing anything, ``show`` prints the key's type and RFC 7638
thumbprint only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from lecentral.cli.central import App
from lecentral.cli.common import fail, guarded, print_json
from lecentral.errors import ConfigError, IssueError

if TYPE_CHECKING:
    from lecentral.config import AcmeConfig

pass_app = click.make_pass_decorator(App)

ca_option = click.option(
    "--ca", "ca_name", metavar="NAME",
    help="Which CA of [[acme.ca]] (its name): its directory and account_key. Default: the first "
         "(the one CA of [acme] without [[acme.ca]]).")


def chosen_ca(app: App, ca_name: str | None) -> AcmeConfig:
    """The one-CA configuration of ``--ca NAME`` (the first CA without it); ConfigError listing
    the names for a name that is not configured."""
    cas = app.config.acme.authorities()
    if ca_name is None:
        return cas[0][1]
    for name, acme in cas:
        if name == ca_name:
            return acme
    raise ConfigError(f"--ca {ca_name}: no such CA in [[acme.ca]] (configured: "
                      f"{', '.join(name for name, _ in cas)})")


@click.group()
def account() -> None:
    """The ACME account lecentral uses ([acme] account_key).

    \b
    Without an account, lecentral renew registers one for the key at [acme] account_key (and
    creates the key). To keep the account certbot or acme.sh already has (its EAB binding, its
    history at the CA), import it once:
      lecentral account import --certbot /etc/letsencrypt
      lecentral account import --acme-sh /root/.acme.sh
      lecentral account import --key /path/to/account.pem
    """


@account.command("import")
@click.option("--certbot", "certbot_dir", metavar="DIR", type=click.Path(path_type=Path),
              help="certbot's config directory (/etc/letsencrypt): its account for [acme] directory.")
@click.option("--acme-sh", "acme_sh_dir", metavar="DIR", type=click.Path(path_type=Path),
              help="acme.sh's home directory (~/.acme.sh): its account for [acme] directory.")
@click.option("--key", "key_file", metavar="FILE", type=click.Path(path_type=Path),
              help="An account's PEM private key; the CA tells its account URL.")
@click.option("--account-id", metavar="ID",
              help="Which certbot account, when certbot has several for this CA.")
@click.option("--force", is_flag=True,
              help="Replace a different key at [acme] account_key (a copy of it is kept beside).")
@click.option("--json", "json_out", is_flag=True, help="Print the result as JSON.")
@ca_option
@pass_app
@guarded
def import_(app: App, certbot_dir: Path | None, acme_sh_dir: Path | None, key_file: Path | None,
            account_id: str | None, force: bool, json_out: bool, ca_name: str | None) -> None:
    """Use an existing ACME account instead of registering a new one.

    The account must exist and be valid at [acme] directory: the CA is asked (newAccount with
    onlyReturnExisting, RFC 8555 7.3.1) before anything is written. Then its key goes to
    [acme] account_key (PEM, mode 0600) and its URL to <account_key>.json; lecentral renew uses
    that account from then on without registering, so an account bound by External Account
    Binding needs no [acme] eab_kid / eab_hmac_key. Exit 2: wrong source or a different key
    already there; 6: the CA does not know the account or cannot be reached.
    """
    from lecentral.acme import imports

    given = [s for s in (certbot_dir, acme_sh_dir, key_file) if s is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of --certbot DIR, --acme-sh DIR, --key FILE")
    if account_id is not None and certbot_dir is None:
        raise click.UsageError("--account-id chooses among certbot's accounts; use it with --certbot")
    acme = chosen_ca(app, ca_name)
    if certbot_dir is not None:
        found = imports.from_certbot(certbot_dir, acme.directory, account_id)
    elif acme_sh_dir is not None:
        found = imports.from_acme_sh(acme_sh_dir, acme.directory)
    else:
        assert key_file is not None
        found = imports.from_key_file(key_file)
    done = imports.install(acme, found, force=force)
    if json_out:
        print_json({"url": done.record.url, "directory": done.record.directory,
                    "status": done.status, "contact": done.contact, "key_file": str(done.key_path),
                    "key_type": done.key_type, "thumbprint": done.record.thumbprint,
                    "source": done.source, "key_unchanged": done.unchanged_key,
                    "backup": str(done.backup) if done.backup else None})
        return
    click.echo(f"imported {done.source}: account {done.record.url} ({done.status})")
    if done.unchanged_key:
        click.echo(f"{done.key_path} already held this key; its account record was written")
    else:
        click.echo(f"key {done.key_type}, thumbprint {done.record.thumbprint}, written to "
                   f"{done.key_path}")
    if done.backup:
        click.echo(f"the key it replaced was kept as {done.backup}")


@account.command("show")
@click.option("--json", "json_out", is_flag=True, help="Print the account as JSON.")
@ca_option
@pass_app
@guarded
def show(app: App, json_out: bool, ca_name: str | None) -> None:
    """The account in use: URL, contact, status, key type, JWK thumbprint; never the key.

    The account object is read from the CA (POST-as-GET to the account URL; without an account
    record, the URL is looked up with onlyReturnExisting: nothing is registered). If the CA
    cannot be reached or does not know the key, what is known locally is shown and the exit
    status is 6.
    """
    from lecentral.acme.account import key_type, load_existing, record_for, thumbprint
    from lecentral.acme.lookup import AccountLookup

    acme = chosen_ca(app, ca_name)
    key = load_existing(acme.account_key)
    record = record_for(key, acme.directory)
    info: dict[str, Any] = {
        "url": record.url if record else None, "directory": acme.directory, "status": None,
        "contact": None, "key_file": str(key.path), "key_type": key_type(key.jwk),
        "thumbprint": thumbprint(key.jwk), "recorded": record is not None, "error": None}
    problem: IssueError | None = None
    try:
        lookup = AccountLookup(acme, key.jwk, key.alg)
        try:
            info["url"] = info["url"] or lookup.find()
            body = lookup.fetch(info["url"])
        finally:
            lookup.close()
        info["status"] = str(body.get("status") or "") or None
        info["contact"] = [str(c) for c in body.get("contact") or [] if isinstance(c, str)]
    except IssueError as exc:
        problem = exc
        info["error"] = str(exc)
    if json_out:
        print_json(info)
    else:
        rows = [("account URL", info["url"] or "unknown"), ("directory", info["directory"]),
                ("status", info["status"] or "unknown (not read from the CA)"),
                ("contact", (", ".join(info["contact"]) or "none") if info["contact"] is not None
                 else "unknown (not read from the CA)"),
                ("key", f"{info['key_file']} ({info['key_type']})"),
                ("thumbprint", info["thumbprint"])]
        for label, value in rows:
            click.echo(f"{label + ':':<13}{value}")
    if problem is not None:
        raise fail(IssueError(f"{problem}; shown is what is known locally"))
