"""The seed's Perl agents keep working on the rows lecentral writes.

``tests/data/perl/install_cert_reader.pl`` is the database side of install_cert.pl as the seed
describes it, with the seed's own modules (DBI, DBD::mysql, Digest::MD5; Debian's libdbi-perl
and libdbd-mysql-perl), connected with the read-only account of contrib/sql/grants-mysql.sql: it
checks ``enable``, ``ts_expire`` (newer than the installed one by an hour or more), writes ``crt``,
and ``ca`` when ``md5_ca`` changed. The rows are written by lecentral itself (``lecentral add``
as populate.pl, ``save_issued`` with a test CA, then a real renewal through Pebble).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from lecentral_testing.agent import AgentWorld, PebbleOrders
from lecentral_testing.mariadb import MariaDBServer
from sqlalchemy.engine import make_url
from test_agent_grants import mariadb_accounts

from lecentral.certificates import Certificate, md5_ca

READER = Path(__file__).parent / "data" / "perl" / "install_cert_reader.pl"
NAME = "www.example.test"


def test_perl_install_cert_reads_what_lecentral_wrote(tmp_path: Path, mariadb_server: MariaDBServer,
                                                      mariadb_url: str,
                                                      agent_pebble: PebbleOrders) -> None:
    world: list[AgentWorld] = []

    def init(central_url: str) -> None:
        world.append(AgentWorld(tmp_path / "central", db_url=central_url))  # runs init

    _, users, password = mariadb_accounts(mariadb_server, mariadb_url, [], init)
    central = world[0]
    url = make_url(mariadb_url)
    out = tmp_path / "installed"
    out.mkdir()

    def perl(installed_expire: int, installed_md5_ca: str) -> str:
        done = subprocess.run(
            ["perl", str(READER), str(url.host), str(url.port), str(url.database), users["reader"],
             NAME, str(installed_expire), installed_md5_ca, str(out)],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "DBI_PASS": password})
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    central.add(NAME, enable=False)  # lecentral add: populate.pl's row, disabled
    assert perl(0, "") == "skip: disabled"
    central.store.set_enable(NAME, True)
    assert perl(0, "") == "skip: expired"  # ts_expire 1, as populate.pl leaves it

    first = central.issue(NAME, days=30)
    line = perl(0, "")
    assert line == f"install ts_expire={first.not_after} ca_changed=1 md5_ca_matches=yes"
    assert Certificate.load((out / "crt.pem").read_bytes()).fingerprint == first.fingerprint
    assert md5_ca((out / "ca.pem").read_bytes()) == md5_ca(central.ca.pem)
    installed_ca = md5_ca((out / "ca.pem").read_bytes())
    assert perl(first.not_after, installed_ca) == "skip: not newer"

    renewed = agent_pebble.issue(central, NAME)  # a real renewal, from another CA (Pebble's)
    line = perl(first.not_after, installed_ca)
    assert line == f"install ts_expire={renewed.not_after} ca_changed=1 md5_ca_matches=yes"
    assert Certificate.load((out / "crt.pem").read_bytes()).fingerprint == renewed.fingerprint
    central.close()
