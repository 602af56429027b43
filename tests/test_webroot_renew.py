"""HTTP-01 and DNS-01 rows in one renew pass, and the whole path through the command line.

Real BIND (DNS-01 TXT updates and the names' A records), nginx (the sites' webroots at Pebble's
httpPort), Pebble and certbot; see webroot_world.py.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from lecentral_testing.pki import make_csr
from renew_world import assert_issued, run
from webroot_world import (
    DNS_NAMES,
    ISSUERS,
    SITES,
    WebWorld,
    add_row,
    leftovers,
    make_config,
)

from lecentral.cli.central import main
from lecentral.store.sql import SqlStore


@pytest.mark.parametrize("issuer", ISSUERS)
def test_mixed_run_with_dns01_and_http01_rows(web_world: WebWorld, store: SqlStore,
                                              tmp_path: Path, issuer: str) -> None:
    """Two DNS-01 rows and two HTTP-01 rows (one with two names) in one pass, one ACME account."""
    keys = {}
    for name in DNS_NAMES:
        keys[name] = add_row(store, [name], certbot=False)[1]
    keys["mix1.web.test"] = add_row(store, SITES["mix1"], webroot=web_world.webroot("mix1"))[1]
    keys["mix2a.web.test"] = add_row(store, SITES["mix2"], webroot=web_world.webroot("mix2"))[1]
    keys["one.web.test"] = add_row(store, SITES["one"], webroot=web_world.webroot("one"))[1]
    config = make_config(web_world, tmp_path, http01_issuer=issuer)
    if issuer == "certbot-webroot":  # [certbot] command as a full path works as well as PATH
        certbot = shutil.which("certbot")
        assert certbot is not None
        config = dataclasses.replace(config, certbot=dataclasses.replace(config.certbot,
                                                                         command=certbot))
    report = run(config, store)
    assert report.rounds == 1 and not report.failed
    assert [(o.name, o.status, o.issuer) for o in report.final] == [
        ("dns1.web.test", "issued", "dns-subzone"), ("dns2.web.test", "issued", "dns-subzone"),
        ("mix1.web.test", "issued", issuer), ("mix2a.web.test", "issued", issuer),
        ("one.web.test", "issued", issuer)]
    for name in DNS_NAMES:
        assert_issued(store, name, [name], keys[name])
        assert web_world.bind.txt_values(f"_acme-challenge.{name}") == []
    assert_issued(store, "mix1.web.test", SITES["mix1"], keys["mix1.web.test"])
    assert_issued(store, "mix2a.web.test", SITES["mix2"], keys["mix2a.web.test"])
    assert_issued(store, "one.web.test", SITES["one"], keys["one.web.test"])
    for site in ("mix1", "mix2", "one"):
        assert leftovers(web_world.webroot(site)) == []
    if issuer == "certbot-webroot":
        # certbot ran in several state directories at once, all with the one account it registered
        state = tmp_path / "certbot"
        accounts = {p.parent.name for p in state.rglob("accounts/**/regr.json")}
        assert len(accounts) == 1 and (state / "slots").is_dir()


def test_add_list_and_renew_from_the_command_line(web_world: WebWorld, tmp_path: Path) -> None:
    """`lecentral add --certbot --webroot`, `list` showing the method, `renew` issuing by HTTP-01."""
    config = make_config(web_world, tmp_path)
    toml = tmp_path / "lecentral.toml"
    toml.write_text(
        f'[database]\nurl = "{config.database.url}"\n'
        f'[acme]\ndirectory = "{config.acme.directory}"\nemail = "{config.acme.email}"\n'
        f'account_key = "{config.acme.account_key}"\nca_bundle = "{config.acme.ca_bundle}"\n'
        f'[renew]\ncsr_dir = "{tmp_path}"\nhttp01_issuer = "webroot"\n'
        f'state_dir = "{tmp_path}/state"\n'
        f'[dns]\nserver = "{config.dns.server}"\nport = {config.dns.port}\n'
        f'[http01]\nport = {web_world.web.port}\n')
    names = SITES["san"]
    csr_pem, key = make_csr(names)
    (tmp_path / f"{names[0]}.csr").write_bytes(csr_pem)
    webroot = web_world.webroot("san")

    def cli(*args: str) -> tuple[int, str]:
        """Exit code and stdout (stderr may carry warnings about other installed plugins)."""
        result = CliRunner().invoke(main, ["--config", str(toml), *args])
        return result.exit_code, result.stdout if result.exit_code == 0 else result.output

    assert cli("init")[0] == 0
    code, out = cli("add", names[0], "--certbot", "--webroot", str(tmp_path / "nope"), "--enable")
    assert code != 0 and f"webroot {tmp_path / 'nope'} is not an existing directory" in out
    code, out = cli("add", names[0], "--certbot", "--webroot", str(webroot), "--enable")
    assert code == 0, out
    code, out = cli("list", "--json")
    assert code == 0, out
    (item,) = json.loads(out)
    assert item["method"] == "certbot" and item["webroot_path"] == str(webroot)
    code, out = cli("list")
    assert code == 0 and "certbot" in out
    code, out = cli("renew", "--once", "--json")
    assert code == 0, out
    result = json.loads(out)
    assert result["ok"] and result["certificates"][0]["issuer"] == "webroot"
    db = SqlStore(config.database.url)
    try:
        assert_issued(db, names[0], names, key)
    finally:
        db.close()
    assert leftovers(webroot) == []
