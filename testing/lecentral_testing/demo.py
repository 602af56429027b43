"""``lecentral demo``: the whole central flow in a throwaway local ACME world, in seconds.

Starts a real BIND (one updatable sub-zone per name, each with its own TSIG key where it matters),
a resolver and Pebble as the CA, an SQLite database in a temp dir; makes three servers' keys and
CSRs (the keys stay in the temp dir, as they would stay on the servers); then runs the real
commands: ``init``, ``add --enable`` x3, ``renew --once``, ``list``, and prints each issued
chain's subjects. Nothing listens beyond 127.0.0.1; everything is removed at the end.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from lecentral_testing.bind import BindServer
    from lecentral_testing.pebble import PebbleServer

PARENT = "example.test"
#: (row name, every name of its CSR): the third has SANs living in two sub-zones, two keys
DEMO_CERTS = [
    ("www.example.test", ["www.example.test"]),
    ("ldap.example.test", ["ldap.example.test"]),
    ("mail.example.test", ["mail.example.test", "smtp.example.test"]),
]
#: sub-zone -> TSIG key name (every other sub-zone uses the default key)
OWN_KEYS = {"mail.example.test": "mail-key", "smtp.example.test": "smtp-key"}


def _write_config(workdir: Path, bind: BindServer, pebble: PebbleServer) -> Path:
    """The lecentral.toml an operator would write for this world."""
    from lecentral_testing.central import central_tables
    from lecentral_testing.tomlfile import write_toml

    tables = central_tables(workdir, pebble, bind, email=f"hostmaster@{PARENT}", propagation_timeout=20.0)
    tables["renew"] = {"csr_dir": str(workdir / "csr"), "state_dir": str(workdir / "state")}
    tables["dns"]["zones"] = {zone: {"tsig_key_file": str(bind.key_file(key))} for zone, key in OWN_KEYS.items()}
    return write_toml(workdir / "lecentral.toml", tables)


def _make_csrs(workdir: Path) -> None:
    from lecentral_testing.pki import key_pem, make_csr, write_private

    (workdir / "csr").mkdir()
    (workdir / "servers").mkdir(mode=0o700)
    for name, names in DEMO_CERTS:
        csr, key = make_csr(names)
        (workdir / "csr" / f"{name}.csr").write_bytes(csr)
        # in real life this key is made on the server and never leaves it
        write_private(workdir / "servers" / f"{name}.key", key_pem(key))


def _run(args: list[str], toml: Path) -> int:
    from lecentral.cli.central import main

    click.secho(f"\n$ lecentral {' '.join(args)}", bold=True)
    try:
        main.main(["--config", str(toml), *args], prog_name="lecentral", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    return 0


def _print_chains(toml: Path) -> None:
    from lecentral.certificates import load_chain
    from lecentral.config import load_central
    from lecentral.store.sql import SqlStore

    click.secho("\nissued chains (leaf first):", bold=True)
    store = SqlStore(load_central(str(toml)).database.url)
    try:
        for row in store.list():
            if not row.crt:
                click.echo(f"  {row.name}: no certificate")
                continue
            click.echo(f"  {row.name}")
            for cert in load_chain(row.crt + (row.ca or b""), f"chain of {row.name}"):
                click.echo(f"    {cert.subject}   (issuer: {cert.issuer})")
    finally:
        store.close()


@click.command()
@click.option("--keep", "keep", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the world's files (config, database, keys, logs) in this new directory.")
def demo(keep: Path | None) -> None:
    """Issue three certificates in a throwaway local ACME world (Pebble + BIND + SQLite).

    \b
    Needs Debian's pebble and bind9 (apt-get install pebble bind9 bind9-utils). Runs the real
    commands against a real CA and real DNS on 127.0.0.1 only: www and ldap with one name each,
    mail with smtp as a second name living in another sub-zone with its own TSIG key.
    """
    from lecentral_testing.bind import BindServer
    from lecentral_testing.resolver import resolving_pebble

    if keep is not None:
        try:
            keep.mkdir(parents=True)
        except FileExistsError:
            raise click.UsageError(f"--keep {keep}: it exists already; name a new directory (the "
                                   "demo never writes into one that has something in it)") from None
        workdir = keep.resolve()
    else:
        workdir = Path(tempfile.mkdtemp(prefix="lecentral-demo-"))
    bind = BindServer(workdir / "dns", parent=PARENT)
    for _, names in DEMO_CERTS:
        for name in names:
            bind.add_subzone(name, key_name=OWN_KEYS.get(name, "acme-update"))
    click.echo(f"starting BIND, a resolver and Pebble in {workdir} ...")
    status = 1
    try:
        with bind, resolving_pebble(workdir, bind, probe_name=PARENT) as (_, pebble):
            _make_csrs(workdir)
            toml = _write_config(workdir, bind, pebble)
            status = _run(["init"], toml)
            for name, _ in DEMO_CERTS:
                status = status or _run(["add", name, "--enable"], toml)
            status = status or _run(["renew", "--once"], toml)
            _run(["list"], toml)
            _print_chains(toml)
    finally:
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if status:
        raise click.exceptions.Exit(status)
    click.secho("\ndemo done: 3 certificates issued by DNS-01 into per-name sub-zones", fg="green")
