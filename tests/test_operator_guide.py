"""docs/operator-guide.md is executable: its shell blocks run, in order, on a machine booted with
systemd (tests/nspawn.py: this host's root under ``systemd-nspawn``, its own loopback, writes
thrown away), with the distro's own named, MariaDB and nginx as systemd services and the shipped
units of contrib/systemd installed as the guide says.

Each ``sh`` block follows an HTML comment naming where it runs: ``central`` (the central host; the
block runs in the checkout, the guide's "source tree") or ``server`` (www.example.com; in /root).
``seed too`` marks the install blocks that the migration walk also runs, ``exit N`` a block whose
last command exits N. Two walks, each on a fresh machine:

* the newcomer's, sections 1-7: an empty MariaDB, a BIND primary with the hand-written parent
  zone ``example.com``, nginx; it ends with the certificate issued through the renew unit and
  installed by the agent's unit, served by nginx on 127.0.0.1:443;
* the seed's takeover, the section "Moving from the seed's Perl scripts" (after the two install
  blocks of section 1): the seed's MariaDB ``certs`` table (sql/mysql/certs.sql) with rows as
  populate.pl/download_cert.pl left them (``openssl md5`` digests, NULLs), the sub-zone
  www.example.com with the seed's 12-hour SOA minimum and its ``dnssec-keygen`` ``K*.private``
  key, an account registered with the real certbot in /etc/letsencrypt, the Perl jobs in
  /etc/cron.d/seed-certs, and nginx serving the certificate install_cert.pl installed; the Perl
  agent's reader (tests/data/perl/install_cert_reader.pl) then reads what lecentral wrote.

Pebble plays the CA, started on the machine (127.0.0.1:14000) and resolving through its named.

What the test substitutes in the blocks, nothing else:

1. ``pip install lecentral lecentral-nginx`` -> the same two from this checkout (``pip install -e``
   of its paths), offline: their dependencies come from this checkout's virtualenv (a ``.pth``
   adds its site-packages). ``python3 -m venv /opt/lecentral`` runs as written (Debian's python3:
   the units' ``ProtectHome=true`` hides a python under /root, such as a pyenv one);
2. the CA: Let's Encrypt's directory URL -> Pebble's, plus ``ca_bundle`` (Pebble's TLS trust) after it;
3. both roles share one machine: ``scp FILE central.example.com:DIR`` -> ``cp FILE DIR``, the
   database host ``central.example.com`` -> ``localhost``, and the agent account's MariaDB host
   ``'www.example.com'`` -> ``'localhost'``.

Every shell block of the guide runs, the systemctl ones under the real systemd. Not run: the
seed's own Perl scripts, which exist here only as the cron lines of /etc/cron.d/seed-certs (no
cron daemon runs; the test checks the guide comments them out and restores them); the Perl
agent's side of "both agents side by side" is its database reader, run by the test.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from lecentral_testing.agent import TestCA
from lecentral_testing.pebble import write_tls_files
from lecentral_testing.pki import key_pem, make_csr, make_key
from nspawn import Machine

from lecentral.certificates import Certificate, Csr

CHECKOUT = Path(__file__).resolve().parents[1]
GUIDE = CHECKOUT / "docs" / "operator-guide.md"
VENV = Path(sys.prefix)
WORLD = "/srv/lecentral-guide"  # where the test's files appear on the machine
PEBBLE_URL = "https://127.0.0.1:14000/dir"
LE_URL = "https://acme-v02.api.letsencrypt.org/directory"
SITE = sysconfig.get_paths()["purelib"]
#: the checkout and this virtualenv's packages as the machine's units see them: a path below
#: /tmp (a CI clone) would be hidden from them by the units' PrivateTmp=
SRC = "/srv/lecentral-src"
DEPS = "/srv/lecentral-deps"
#: the guide's ``pip install lecentral lecentral-nginx``, from this checkout and offline
INSTALL = (f"echo \"import site; site.addsitedir('{DEPS}')\" > "
           f"$(/opt/lecentral/bin/python3 -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])')"
           "/lecentral-dependencies.pth\n"
           "/opt/lecentral/bin/pip install -q --no-index --no-deps --no-build-isolation "
           f"-e {SRC} -e {SRC}/plugins/lecentral-nginx")
MIGRATION = "## Moving from the seed's Perl scripts"
NAME = "www.example.com"
SECRET_KEYFILE = "Kwww.example.com.+165+40781"

#: a block: its comment, then the fence (maybe indented in a list item)
BLOCK = re.compile(r"^( *)<!-- (central|server)((?:, [a-z0-9 ]+)*) -->\n\n?\1```sh\n(.*?)^\1```$",
                   re.MULTILINE | re.DOTALL)


@dataclass
class Block:
    role: str
    options: tuple[str, ...]
    text: str
    migration: bool
    line: int

    @property
    def exit(self) -> int:
        codes = [int(o.removeprefix("exit ")) for o in self.options if o.startswith("exit ")]
        return codes[0] if codes else 0


def guide_blocks(text: str) -> list[Block]:
    blocks = []
    migration_at = text.index(MIGRATION)
    for m in BLOCK.finditer(text):
        indent = m.group(1)
        body = "".join(line.removeprefix(indent) for line in m.group(4).splitlines(keepends=True))
        options = tuple(o.strip() for o in m.group(3).split(",") if o.strip())
        blocks.append(Block(m.group(2), options, body, m.start() > migration_at,
                            text.count("\n", 0, m.start()) + 1))
    return blocks


def substitute(block: str) -> str:
    """The substitutions the docstring lists, and only those."""
    block = re.sub(r"^/opt/lecentral/bin/pip install lecentral lecentral-nginx$", INSTALL, block,
                   flags=re.MULTILINE)
    block = block.replace(f'directory = "{LE_URL}"',
                          f'directory = "{PEBBLE_URL}"\nca_bundle = "{WORLD}/pebble-ca.pem"')
    block = re.sub(r"^scp (\S+) central\.example\.com:(\S+)$", r"cp \1 \2", block, flags=re.MULTILINE)
    block = block.replace("@central.example.com/", "@localhost/")
    return block.replace("@'www.example.com'", "@'localhost'")


def test_every_shell_block_of_the_guide_is_marked() -> None:
    """A ``sh`` block without its comment would silently not run."""
    text = GUIDE.read_text()
    assert text.count("```sh\n") == len(guide_blocks(text)) > 10
    assert not re.search(r"```(bash|shell|console)\n", text)


def test_blocks_are_read_with_their_host_options_and_indentation() -> None:
    doc = ("intro\n\n<!-- central -->\n```sh\necho one\n```\n\n" + MIGRATION + "\n\n"
           "1. **Step**:\n\n   <!-- server, exit 1 -->\n   ```sh\n   cat <<'EOF'\n     x\n"
           "   EOF\n   false\n   ```\n\n```sh\nunmarked\n```\n")
    first, second = guide_blocks(doc)
    assert (first.role, first.options, first.text, first.migration, first.exit) == (
        "central", (), "echo one\n", False, 0)
    assert (second.role, second.options, second.migration, second.exit) == (
        "server", ("exit 1",), True, 1)
    assert second.text == "cat <<'EOF'\n  x\nEOF\nfalse\n"  # the list's indentation removed
    assert second.line == doc.count("\n", 0, doc.index("   <!-- server")) + 1


def test_substitutions_are_only_those_listed() -> None:
    lines = [line for b in guide_blocks(GUIDE.read_text()) for line in b.text.splitlines()]
    changed = [line for line in lines if substitute(line) != line]
    assert changed
    for before in changed:
        assert ("pip install lecentral" in before or LE_URL in before or before.startswith("scp ")
                or "@central.example.com/" in before or "@'www.example.com'" in before), before


# -- the worlds ------------------------------------------------------------------------------------

PARENT_ZONE = """$TTL 3600
; example.com: the hand-written parent zone (its comments must survive)
@        IN SOA  ns1.example.com. hostmaster.example.com. ( 1 3600 900 604800 300 )
@        IN NS   ns1.example.com.
ns1      IN A    127.0.0.1
central  IN A    127.0.0.1
{www}
"""

PARENT_STANZA = """
zone "example.com" {
	type primary;
	file "/etc/bind/db.example.com";
	allow-transfer { 127.0.0.1; };
};
"""

PEBBLE_ENV = ("--setenv=PEBBLE_VA_NOSLEEP=1 --setenv=PEBBLE_AUTHZREUSE=0 "
              "--setenv=PEBBLE_WFE_NONCEREJECT=0")


def write_pebble(world: Path) -> None:
    ca, cert, key = write_tls_files(world)
    ca.rename(world / "pebble-ca.pem")
    key.chmod(0o644)  # the throwaway TLS key of the test CA; the machine's pebble runs as root
    (world / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
        "certificate": f"{WORLD}/{cert.name}", "privateKey": f"{WORLD}/{key.name}",
        "httpPort": 5002, "tlsPort": 5001, "ocspResponderURL": "",
        "externalAccountBindingRequired": False}}))


def start_services(machine: Machine) -> None:
    """What runs on the central host before the guide: named, MariaDB, nginx (distro units), and
    the CA (Pebble, as a transient unit)."""
    machine.run("systemctl start named mariadb nginx")
    machine.run(f"systemd-run --unit=pebble {PEBBLE_ENV} /usr/bin/pebble -config {WORLD}/pebble.json"
                " -dnsserver 127.0.0.1:53")
    machine.run(f"for i in $(seq 100); do {VENV}/bin/python -c \"import urllib.request, ssl; "
                f"urllib.request.urlopen('{PEBBLE_URL}', context=ssl.create_default_context("
                f"cafile='{WORLD}/pebble-ca.pem'))\" 2>/dev/null && exit 0; sleep 0.2; done; "
                "journalctl -u pebble --no-pager; exit 1")


def newcomer_world(world: Path) -> str:
    """The newcomer's machine: the parent zone with www's A record, an empty MariaDB."""
    (world / "db.example.com").write_text(PARENT_ZONE.format(www="www      IN A    127.0.0.1"))
    (world / "named.conf.local").write_text(PARENT_STANZA)
    return f"""
install -m 0644 -o root -g bind {WORLD}/db.example.com /etc/bind/db.example.com
cat {WORLD}/named.conf.local >> /etc/bind/named.conf.local
"""


@dataclass
class Seed:
    old_cert: bytes
    old_ca: bytes


def seed_world(world: Path) -> tuple[str, Seed]:
    """The seed's machine, as its Perl scripts, acme tools and admins left it."""
    secret = __import__("base64").b64encode(hashlib.sha512(world.name.encode()).digest()).decode()
    (world / "db.example.com").write_text(PARENT_ZONE.format(
        www="www.example.com. IN NS ns1.example.com."))
    (world / "db.www.example.com").write_text(
        "$TTL 3600\n@ IN SOA ns1.example.com. hostmaster.example.com. "
        "( 2019010101 3600 900 604800 43200 )\n@ IN NS ns1.example.com.\n@ IN A 127.0.0.1\n")
    (world / "named.conf.local").write_text(PARENT_STANZA + f"""
key "www.example.com." {{ algorithm hmac-sha512; secret "{secret}"; }};
zone "www.example.com" {{
	type primary;
	file "/var/lib/bind/db.www.example.com";
	update-policy {{ grant www.example.com. name _acme-challenge.www.example.com. TXT; }};
}};
""")
    (world / f"{SECRET_KEYFILE}.private").write_text(
        f"Private-key-format: v1.3\nAlgorithm: 165 (HMAC_SHA512)\nKey: {secret}\nBits: AAA=\n"
        "Created: 20190101000000\nPublish: 20190101000000\nActivate: 20190101000000\n")
    (world / f"{SECRET_KEYFILE}.key").write_text(f"www.example.com. IN KEY 512 3 165 {secret}\n")

    ca = TestCA("the seed's old CA")
    key = make_key()
    csr, _ = make_csr([NAME], key)
    old_csr, _ = make_csr(["old.example.com"])
    now = dt.datetime.now(dt.UTC)
    crt = ca.sign(csr, days=90, start=now - dt.timedelta(days=80))  # due: 10 days left of 90
    (world / "www.key").write_bytes(key_pem(key))
    (world / "www.csr").write_bytes(csr)
    (world / "old.csr").write_bytes(old_csr)
    (world / "www.full").write_bytes(crt + ca.pem)
    (world / "www.crt").write_bytes(crt)

    def q(data: bytes | str | None) -> str:
        if data is None:
            return "NULL"
        raw = data.decode() if isinstance(data, bytes) else data
        return "'" + raw.replace("\\", "\\\\").replace("'", "\\'") + "'"

    rows = [  # as populate.pl and download_cert.pl wrote them
        (NAME, "'Y'", q(csr), q(ca.pem), q(crt), q(f"(stdin)= {Csr.load(csr).md5_modulus}"),
         q("MD5(stdin)= " + hashlib.md5(ca.pem).hexdigest().upper()),
         str(Certificate.load(crt).not_after), "NULL", "NULL"),
        ("old.example.com", "NULL", q(old_csr), "NULL", "NULL",
         q(f"(stdin)= {Csr.load(old_csr).md5_modulus}"), "NULL", "1", "1", "0"),
    ]
    values = ",\n".join(f"('{n}', {e}, 'N', {c}, {a}, {t}, {m}, {mc}, {x}, {u}, {f})"
                        for n, e, c, a, t, m, mc, x, u, f in rows)
    (world / "seed.sql").write_text(
        "CREATE DATABASE certs;\nUSE certs;\n" + (CHECKOUT / "sql/mysql/certs.sql").read_text()
        + ";\nINSERT INTO certs (name, enable, certbot, csr, ca, crt, md5_modulus, md5_ca, "
        f"ts_expire, ts_last_update, count_fail_update) VALUES\n{values};\n"
        "CREATE USER 'reader'@'localhost' IDENTIFIED BY 'CHANGE-ME-TOO';\n"
        "GRANT SELECT ON certs.certs TO 'reader'@'localhost';\n")
    (world / "seed-certs").write_text(
        "# the seed's certificate jobs\n"
        "30 */4 * * * root /usr/local/sbin/download_cert.pl\n"
        "15 * * * * root /usr/local/sbin/install_cert.pl\n")
    (world / "nginx-site").write_text(
        "server {\n    listen 443 ssl;\n    server_name www.example.com;\n"
        "    ssl_certificate     /etc/ssl/certs/www.example.com.full;\n"
        "    ssl_certificate_key /etc/ssl/private/www.example.com.key;\n"
        "    root /var/www/html;\n}\n")
    script = f"""
install -m 0644 -o root -g bind {WORLD}/db.example.com /etc/bind/db.example.com
install -m 0644 -o bind -g bind {WORLD}/db.www.example.com /var/lib/bind/db.www.example.com
cat {WORLD}/named.conf.local >> /etc/bind/named.conf.local
install -m 0600 -o root -g bind {WORLD}/{SECRET_KEYFILE}.private {WORLD}/{SECRET_KEYFILE}.key /etc/bind/
install -m 0600 {WORLD}/www.key /etc/ssl/private/www.example.com.key
install -m 0644 {WORLD}/www.crt /etc/ssl/certs/www.example.com.crt
install -m 0644 {WORLD}/www.full /etc/ssl/certs/www.example.com.full
install -m 0644 {WORLD}/nginx-site /etc/nginx/sites-enabled/www.example.com
install -m 0644 {WORLD}/seed-certs /etc/cron.d/seed-certs
mkdir -p /root/csr
cp {WORLD}/www.csr /root/csr/www.example.com.csr
cp {WORLD}/old.csr /root/csr/old.example.com.csr
"""
    return script, Seed(crt, ca.pem)


SEED_DATABASE_AND_ACCOUNT = f"""
mariadb < {WORLD}/seed.sql
REQUESTS_CA_BUNDLE={WORLD}/pebble-ca.pem {VENV}/bin/certbot register --non-interactive --agree-tos \\
  --no-eff-email -m hostmaster@example.com --server {PEBBLE_URL} --config-dir /etc/letsencrypt \\
  --work-dir /var/lib/letsencrypt --logs-dir /var/log/letsencrypt
"""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "world"
    directory.mkdir()
    tmp_path.chmod(0o755)
    directory.chmod(0o755)  # the pebble CA bundle is read by the renew unit's lecentral user
    yield directory


def boot(tmp_path: Path, world: Path) -> Machine:
    """The machine, with the world, the checkout and this virtualenv bound in: its root is this
    host's ``/`` under nspawn's own /tmp, so a checkout below /tmp (as CI's may be) would be
    missing; the checkout and the packages also at /srv paths, which the units (PrivateTmp=)
    see wherever the checkout is."""
    binds = {world: WORLD, CHECKOUT: SRC, Path(SITE): DEPS, VENV: str(VENV)}
    return Machine(tmp_path / "machine", binds=binds)


def run_blocks(machine: Machine, blocks: list[Block]) -> dict[int, str]:
    """Run each block as root in its role's directory; returns its output by guide line."""
    outputs = {}
    for block in blocks:
        cwd = SRC if block.role == "central" else "/root"
        done = machine.run(substitute(block.text), cwd=cwd, check=False, timeout=300)
        journal = ""
        if done.returncode != block.exit:
            journal = machine.run("journalctl --no-pager -n 60 -u 'lecentral-*' -u pebble "
                                  "-u nginx", check=False).stdout
        assert done.returncode == block.exit, (
            f"docs/operator-guide.md line {block.line} ({block.role}) exited {done.returncode}, "
            f"not {block.exit}:\n{block.text}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            f"\n--- journal\n{journal}")
        outputs[block.line] = done.stdout + done.stderr
    return outputs


def unit_succeeded(machine: Machine, unit: str) -> None:
    """``unit`` ran (systemd's own journal lines say so), and its last run exited 0."""
    shown = machine.run(f"systemctl show {unit} -p Result -p ExecMainStatus")
    assert "Result=success" in shown.stdout and "ExecMainStatus=0" in shown.stdout, shown.stdout
    journal = machine.run(f"journalctl -u {unit} --no-pager -o cat").stdout
    assert f"{unit}: Deactivated successfully." in journal, journal
    assert "Failed" not in journal, journal


def served(machine: Machine) -> Certificate:
    out = machine.run("openssl s_client -connect 127.0.0.1:443 -servername www.example.com "
                      "</dev/null 2>/dev/null | openssl x509").stdout
    return Certificate.load(out.encode())


def database_crt(machine: Machine) -> Certificate:
    out = machine.run("mariadb -N -B -r -e \"SELECT crt FROM certs.certs WHERE name = "
                      "'www.example.com'\"").stdout
    return Certificate.load(out.strip().encode())


def pebble_issued(cert: Certificate) -> bool:
    issuer = cert.cert.issuer.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return bool(issuer) and "Pebble" in str(issuer[0].value)


def test_a_newcomer_follows_the_guide_to_an_installed_certificate(tmp_path: Path,
                                                                 world: Path) -> None:
    setup = newcomer_world(world)
    write_pebble(world)
    blocks = [b for b in guide_blocks(GUIDE.read_text()) if not b.migration]
    with boot(tmp_path, world) as machine:
        machine.run(setup)
        start_services(machine)
        outputs = run_blocks(machine, blocks)

        unit_succeeded(machine, "lecentral-renew.service")
        unit_succeeded(machine, "lecentral-install.service")
        for timer in ("lecentral-renew.timer", "lecentral-install.timer"):
            assert machine.run(f"systemctl is-enabled {timer}; systemctl is-active {timer}"
                               ).stdout.split() == ["enabled", "active"]
        journal = machine.run("journalctl -u lecentral-renew.service --no-pager").stdout
        assert "www.example.com" in journal and "issued" in journal, journal
        issued = database_crt(machine)
        assert pebble_issued(issued)
        assert served(machine).fingerprint == issued.fingerprint  # nginx serves what was issued
        # the units' Documentation=man:lecentral(1) exists once the guide's install step ran
        assert machine.run("man -w lecentral lecentral-install").returncode == 0
        owner = machine.run("stat -c %U /var/lib/lecentral/account.key").stdout.strip()
        assert owner == "lecentral"  # made by the unit, usable by the next runs
        (dns,) = [outputs[b.line] for b in blocks if "lecentral dns check www" in b.text]
        assert "OK" in dns and "WARN" not in dns and "FAIL" not in dns, dns
        (fleet,) = [outputs[b.line] for b in blocks if b.text == "lecentral fleet\n"]
        (row,) = [line for line in fleet.splitlines() if line.startswith("  www.example.com")]
        assert "agent" in row and row.split()[-1] == "current", fleet  # the agent reported it


def test_a_seed_installation_is_taken_over_by_the_guide(tmp_path: Path, world: Path) -> None:
    setup, seed = seed_world(world)
    write_pebble(world)
    blocks = guide_blocks(GUIDE.read_text())
    walk = [b for b in blocks if b.migration or "seed too" in b.options]
    with boot(tmp_path, world) as machine:
        machine.run(setup)
        start_services(machine)
        machine.run(SEED_DATABASE_AND_ACCOUNT)
        assert served(machine).fingerprint == Certificate.load(seed.old_cert).fingerprint
        regr = machine.run("cat /etc/letsencrypt/accounts/*/*/*/regr.json").stdout
        certbot_url = json.loads(regr)["uri"]

        outputs = run_blocks(machine, walk)

        def output(command: str) -> str:
            (found,) = [outputs[b.line] for b in walk if command in b.text]
            return found

        assert "[fixed]" in output("lecentral doctor --fix --no-dns")  # the seed's NULLs
        assert "43200" in output("lecentral dns check --all               # WARN")
        assert "0 errors, 0 warnings" in output("rndc thaw")  # the doctor after the SOA change

        unit_succeeded(machine, "lecentral-renew.service")
        unit_succeeded(machine, "lecentral-install.service")
        issued = database_crt(machine)
        assert pebble_issued(issued) and served(machine).fingerprint == issued.fingerprint
        account = json.loads(machine.run("lecentral account show --json").stdout)
        assert account["url"] == certbot_url  # certbot's account, no new registration
        old_crt = machine.run("mariadb -N -B -r -e \"SELECT old_crt FROM certs.certs WHERE "
                              "name = 'www.example.com'\"").stdout.strip()
        assert Certificate.load(old_crt.encode()).fingerprint == \
            Certificate.load(seed.old_cert).fingerprint  # download_cert.pl's rollback column
        soa = machine.run("dig +short SOA www.example.com @127.0.0.1").stdout.split()
        assert soa[-1] == "300"
        # rolled back: the Perl jobs are back as they were, the lecentral timers stopped
        assert machine.run("cat /etc/cron.d/seed-certs").stdout == (world / "seed-certs").read_text()
        for timer in ("lecentral-renew.timer", "lecentral-install.timer"):
            state = machine.run(f"systemctl is-active {timer}", check=False).stdout.strip()
            assert state == "inactive"
        # the Perl agent sees lecentral's install as current, and would install the row as it is
        reader = f"{SRC}/tests/data/perl/install_cert_reader.pl"  # the checkout, on the machine
        machine.run("mkdir -p /root/perl-out")
        perl = (f"DBI_PASS=CHANGE-ME-TOO perl {reader} 127.0.0.1 3306 certs reader www.example.com")
        line = machine.run(f"{perl} {issued.not_after} x /root/perl-out").stdout.strip()
        assert line == "skip: not newer"
        line = machine.run(f"{perl} 0 x /root/perl-out").stdout.strip()
        assert line == f"install ts_expire={issued.not_after} ca_changed=1 md5_ca_matches=yes"
