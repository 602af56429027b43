"""The central CLI's management commands on the embedded SQLite store, error paths included."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from ipaddress import ip_network
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from lecentral_testing.pki import make_csr, make_key, make_self_signed

from lecentral.certificates import Certificate, Csr, now_ts
from lecentral.cli.central import main
from lecentral.store.sql import SqlStore

NAME = "www.example.test"


class Env:
    """A config file, a CSR directory and an SQLite database in a temp dir."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.db = tmp / "var" / "lecentral.db"
        self.csr_dir = tmp / "csr"
        self.csr_dir.mkdir()
        self.config = tmp / "lecentral.toml"
        # var/renew: lecentral init may make var/, the state directory, for the database
        self.config.write_text(f'[database]\nurl = "sqlite:///{self.db}"\n'
                               f'[renew]\ncsr_dir = "{self.csr_dir}"\n'
                               f'state_dir = "{tmp / "var" / "renew"}"\n')
        self.url = f"sqlite:///{self.db}"

    def csr(self, names: list[str], file: str | None = None, key: object = None) -> Path:
        pem, _ = make_csr(names, key)  # type: ignore[arg-type]
        path = self.csr_dir / (file or f"{names[0]}.csr")
        path.write_bytes(pem)
        return path

    def run(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(main, ["--config", str(self.config), *args], input=input)

    def store(self) -> SqlStore:
        return SqlStore(self.url)

    def rows(self) -> list[dict[str, object]]:
        result = self.run("list", "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = Env(tmp_path)
    assert e.run("init").exit_code == 0
    return e


def test_init_is_idempotent(tmp_path: Path) -> None:
    e = Env(tmp_path)
    first = e.run("init")
    assert first.exit_code == 0 and "created tables certs, lecentral_events, lecentral_renew_lock, lecentral_leftovers" in first.output
    assert e.db.stat().st_mode & 0o777 == 0o600
    second = e.run("init")
    assert second.exit_code == 0 and "nothing changed" in second.output


def test_commands_before_init_say_to_run_init(tmp_path: Path) -> None:
    e = Env(tmp_path)
    result = e.run("list")
    assert result.exit_code == 4
    assert f"database file {e.db} does not exist; run lecentral init" in result.stderr
    assert not e.db.exists()
    e.db.parent.mkdir()
    e.db.touch()
    result = e.run("list")
    assert result.exit_code == 4
    assert "has no table certs, lecentral_events, lecentral_renew_lock, lecentral_leftovers, " \
        "lecentral_agents, " in result.stderr and "; run lecentral init" in result.stderr


def test_add_is_populate_pl(env: Env) -> None:
    csr_path = env.csr([NAME, "example.test"])
    result = env.run("add", NAME, "--comment", "the web site")
    assert result.exit_code == 0, result.output
    row = env.store().get(NAME)
    assert row is not None
    assert row.enable is False and row.certbot is False
    assert row.ts_expire == 1 and row.ts_last_update == 1 and row.count_fail_update == 0
    assert row.crt is None and row.ca is None and row.md5_ca is None and row.webroot_path is None
    assert row.md5_modulus == Csr.load(csr_path.read_bytes()).md5_modulus
    assert row.comment == "the web site"
    [item] = env.rows()
    assert item["names"] == [NAME, "example.test"] and item["method"] == "dns"


def test_add_with_explicit_csr_enable_and_certbot(env: Env, tmp_path: Path) -> None:
    csr_path = env.csr([NAME], file="elsewhere.csr")
    webroot = tmp_path / "htdocs"
    webroot.mkdir()
    result = env.run("add", NAME, "--csr", str(csr_path), "--enable", "--certbot",
                     "--webroot", str(webroot))
    assert result.exit_code == 0, result.output
    row = env.store().get(NAME)
    assert row is not None and row.enable and row.certbot and row.webroot_path == str(webroot)
    assert env.rows()[0]["method"] == "certbot"


def odd_csr(cn: str | None, sans: list[x509.GeneralName] | None) -> bytes:
    """A CSR with any CN and subjectAltNames (None: no such field), as a careless openssl makes."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else []))
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    csr = builder.sign(make_key(), hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


def odd_csr2(cns: list[str], sans: list[x509.GeneralName]) -> bytes:
    """A CSR with several CNs (openssl -subj /CN=a/CN=b makes one)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn) for cn in cns]))
    builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(make_key(), hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


ODD_CSRS: dict[str, tuple[Callable[[], bytes], str]] = {
    "ip-network": (lambda: odd_csr(NAME, [x509.DNSName(NAME),
                                          x509.IPAddress(ip_network("192.0.2.0/24"))]),
                   ("has the IP network 192.0.2.0/24 as a subjectAltName: a certificate names "
                    "single IP addresses only")),
    "cn-not-a-name": (lambda: odd_csr("Web Server", [x509.DNSName(NAME)]),
                      ("its CN 'Web Server' is not a DNS name nor an IP address, but the CN is one "
                       "of the certificate's names (certbot and Let's Encrypt order it with the "
                       "subjectAltNames)")),
    "two-cns": (lambda: odd_csr2([NAME, "example.test"], [x509.DNSName(NAME)]),
                (f"has 2 CNs ({NAME}, example.test): CAs read one only (certbot the first, "
                 "Let's Encrypt the last)")),
    "other": (lambda: make_csr(["other.example.test", "example.test"])[0],
              f"does not name {NAME} (it names other.example.test, example.test)"),
}


@pytest.mark.parametrize("setup, args, message", [
    (None, [NAME], f"CSR file {{csr_dir}}/{NAME}.csr does not exist"),
    ("garbage", [NAME], ("is text, but not a certificate request (CSR): there is no -----BEGIN "
     "CERTIFICATE REQUEST----- line")),
    *[(kind, [NAME], f"CSR file {{csr_dir}}/{NAME}.csr {text}" if kind != "cn-not-a-name"
       else f"CSR file {{csr_dir}}/{NAME}.csr: {text}") for kind, (_, text) in ODD_CSRS.items()],
    ("ip", [NAME], (f"{NAME}: the CSR asks for the IP address 192.0.2.7: IP addresses are "
                    "proved by HTTP-01 only (RFC 8738), never by DNS-01: add it with --certbot "
                    "--webroot PATH (the DocumentRoot the web server serves at http://192.0.2.7/")),
    ("ip-wildcard", ["*.example.test", "--certbot", "--webroot", "{tmp}"],
     ("*.example.test: the CSR asks for the IP address 192.0.2.7, which only HTTP-01 proves, and "
      "the wildcard *.example.test, which only DNS-01 proves: no one challenge type proves both; "
      "make two CSRs")),
    (None, ["fe80::1%eth0"], "'fe80::1%eth0' is an IPv6 address with a zone (%...)"),
    ("weak", [NAME], "RSA key of 1024 bits"),
    (None, ["not a name"], "'not a name' is not a valid DNS name"),
    ("ok", [NAME, "--certbot"], "--certbot and --webroot go together"),
    ("ok", [NAME, "--certbot", "--webroot", "/nonexistent/htdocs"],
     "webroot /nonexistent/htdocs is not an existing directory"),
])
def test_add_errors_write_nothing(env: Env, setup: str | None, args: list[str],
                                  message: str) -> None:
    path = env.csr_dir / f"{NAME}.csr"
    if setup == "garbage":
        path.write_text("not a CSR")
    elif setup in ODD_CSRS:
        path.write_bytes(ODD_CSRS[setup][0]())
    elif setup == "weak":
        path.write_bytes(make_csr([NAME], make_key("rsa1024"))[0])
    elif setup == "ok":
        env.csr([NAME])
    elif setup == "ip":
        env.csr([NAME, "192.0.2.7"])
    elif setup == "ip-wildcard":
        env.csr(["*.example.test", "192.0.2.7"])
    args = [a.format(tmp=env.tmp) for a in args]
    result = env.run("add", *args)
    assert result.exit_code != 0
    assert message.format(csr_dir=env.csr_dir) in result.stderr
    assert "Traceback" not in result.output
    assert env.rows() == []


def test_duplicate_add_is_refused_and_keeps_the_first(env: Env) -> None:
    env.csr([NAME])
    assert env.run("add", NAME).exit_code == 0
    before = env.store().get(NAME)
    env.csr([NAME])  # a new key: the second add must not replace the first CSR
    result = env.run("add", NAME)
    assert result.exit_code == 4
    assert f"{NAME} is already in the database; use lecentral set-csr" in result.stderr
    assert env.store().get(NAME) == before


def test_set_csr(env: Env) -> None:
    env.csr([NAME])
    env.run("add", NAME)
    new = env.csr([NAME], file="new.csr")
    result = env.run("set-csr", NAME, str(new))
    assert result.exit_code == 0, result.output
    row = env.store().get(NAME)
    assert row is not None and row.md5_modulus == Csr.load(new.read_bytes()).md5_modulus
    wrong = env.csr(["other.example.test"], file="wrong.csr")
    failed = env.run("set-csr", NAME, str(wrong))
    assert failed.exit_code == 5 and f"does not name {NAME}" in failed.stderr
    assert env.store().get(NAME) == row
    for kind, (make, message) in ODD_CSRS.items():
        bad = env.csr_dir / f"{kind}.csr"
        bad.write_bytes(make())
        refused = env.run("set-csr", NAME, str(bad))
        assert refused.exit_code == 5 and message in refused.stderr, (kind, refused.output)
        assert "Traceback" not in refused.output
        assert env.store().get(NAME) == row
    missing = env.run("set-csr", "nope.example.test", str(new))
    assert missing.exit_code != 0
    with_ip = env.csr([NAME, "192.0.2.7"], file="with-ip.csr")
    refused = env.run("set-csr", NAME, str(with_ip))
    assert refused.exit_code == 5, refused.output
    assert "IP addresses are proved by HTTP-01 only" in refused.stderr
    assert env.store().get(NAME) == row


@pytest.mark.parametrize("sans", [["bar.other.test"], None], ids=["cn-outside-sans", "cn-only"])
def test_seed_csrs_are_named_by_their_cn_and_sans(env: Env, sans: list[str] | None) -> None:
    """Issue 14: the seed's documented CSR (CN foo, subjectAltName bar only) and its older CN-only
    CSRs are added and set: their names are the CN then the SANs, as certbot and Let's Encrypt
    read them; stderr says what a CA reading the SANs only (Pebble) does with them."""
    path = env.csr_dir / f"{NAME}.csr"
    path.write_bytes(odd_csr(NAME, None if sans is None else [x509.DNSName(n) for n in sans]))
    expected = [NAME, *(sans or [])]
    result = env.run("add", NAME, "--enable")
    assert result.exit_code == 0, result.output
    assert f"added {NAME} ({', '.join(expected)}; " in result.stdout
    assert (f"note: the CSR's CN {NAME} is not among its subjectAltNames; it is ordered with them "
            "(as certbot does) and Let's Encrypt certifies every one, but a CA taking the names "
            "from the subjectAltNames only (Pebble) refuses this CSR") in result.stderr
    [item] = env.rows()
    assert item["names"] == expected and item["problems"] == [], item
    assert "INVALID" not in env.run("list").output
    shown = env.run("show", NAME)
    assert shown.exit_code == 0 and ", ".join(expected) in shown.output, shown.output
    again = env.csr_dir / "again.csr"
    again.write_bytes(odd_csr(NAME, None if sans is None else [x509.DNSName(n) for n in sans]))
    replaced = env.run("set-csr", NAME, str(again))
    assert replaced.exit_code == 0, replaced.output
    assert f"the CSR's CN {NAME} is not among its subjectAltNames" in replaced.stderr
    row = env.store().get(NAME)
    assert row is not None and row.csr == Csr.load(again.read_bytes()).pem


@pytest.mark.parametrize("typed, name, sans", [
    ("192.0.2.10", "192.0.2.10", ["192.0.2.10"]),
    ("2001:DB8:0::0:1", "2001:db8::1", ["2001:db8::1"]),
    ("192.0.2.10", "192.0.2.10", ["www.example.test", "192.0.2.10", "2001:db8::1"]),
])
def test_add_an_ip_certificate_for_http01(env: Env, tmp_path: Path, typed: str, name: str,
                                          sans: list[str]) -> None:
    """RFC 8738: a CSR with IP addresses (alone or with DNS names) is an HTTP-01 (--certbot) row;
    an IP-only one is named by its IP, written canonically (the CSR file is looked up by it)."""
    webroot = tmp_path / "htdocs"
    webroot.mkdir()
    csr_path = env.csr(sans, file=f"{name}.csr")
    result = env.run("add", typed, "--certbot", "--webroot", str(webroot), "--enable")
    assert result.exit_code == 0, result.output
    [item] = env.rows()
    assert item["name"] == name and item["method"] == "certbot" and item["problems"] == []
    assert item["names"] == Csr.load(csr_path.read_bytes()).names
    assert sorted(item["names"]) == sorted(sans)
    shown = env.run("show", typed)
    assert shown.exit_code == 0 and f"name              {name}" in shown.output
    refused = env.run("add", typed)  # the same name again, without --certbot
    assert refused.exit_code == 5 and "IP addresses are proved by HTTP-01 only" in refused.stderr
    # removed as typed too (remove looked an IPv6 address up as typed: 'no certificate named')
    removed = env.run("remove", typed, "--yes")
    assert removed.exit_code == 0 and removed.output == f"{name}: removed\n", removed.output
    assert env.rows() == []


def test_an_ip_dns01_row_written_past_add_is_invalid_in_list(env: Env) -> None:
    """A row another tool wrote (certbot='N' with an IP): list says INVALID and what to change."""
    from lecentral_testing.central import new_row

    pem, _ = make_csr(["192.0.2.10"])
    env.store().add(new_row(pem))
    [item] = env.rows()
    assert item["invalid"] and any("IP addresses are proved by HTTP-01 only" in p
                                   for p in item["problems"])


def test_enable_disable_remove(env: Env) -> None:
    env.csr([NAME])
    env.run("add", NAME)
    assert env.run("enable", NAME).exit_code == 0
    assert env.rows()[0]["enabled"] is True
    assert env.run("disable", NAME).exit_code == 0
    assert env.rows()[0]["enabled"] is False
    # an unknown name is the same refusal (exit 1) whichever command was typed
    for command in ("enable", "disable", "show", "remove"):
        unknown = env.run(command, "nope.example.test", "--yes") if command == "remove" else \
            env.run(command, "nope.example.test")
        assert unknown.exit_code == 1, (command, unknown.output)
        assert "no certificate named 'nope.example.test'" in unknown.stderr, command
    aborted = env.run("remove", NAME, input="n\n")
    assert aborted.exit_code == 1 and len(env.rows()) == 1
    assert env.run("remove", NAME, "--yes").exit_code == 0
    assert env.rows() == []
    gone = env.run("remove", NAME, "--yes")
    assert gone.exit_code == 1 and "no certificate named" in gone.stderr
    kinds = [e.kind for e in env.store().events(NAME)]
    assert kinds == ["removed", "enable", "enable", "added"]


def test_enable_twice_says_so_and_writes_nothing(env: Env) -> None:
    env.csr([NAME])
    env.run("add", NAME)
    first = env.run("enable", NAME)
    assert (first.exit_code, first.stdout) == (0, f"{NAME}: enabled\n")
    again = env.run("enable", NAME.upper())
    assert (again.exit_code, again.stdout) == (0, f"{NAME}: already enabled\n")
    assert env.run("disable", NAME).stdout == f"{NAME}: disabled\n"
    assert env.run("disable", NAME).stdout == f"{NAME}: already disabled\n"
    events = env.store().events(NAME)  # one per real change, the newest first
    assert [(e.kind, e.message) for e in events[:2]] == [("enable", "enable=N"), ("enable", "enable=Y")]
    assert [e.kind for e in events] == ["enable", "enable", "added"]


def test_renew_names_disabled_rows_and_how_to_enable_them(env: Env) -> None:
    """`lecentral add` makes a disabled row: renew says so (not "no certificates"), and a row
    asked for by name that is disabled is refused (exit 1) with the command enabling it. No CA
    is contacted: nothing is due."""
    empty = env.run("renew")
    assert (empty.exit_code, empty.stdout) == (0, "no certificates: lecentral add NAME\n")
    assert env.run("-q", "renew").stdout == ""  # truly nothing to say
    env.csr([NAME])
    env.run("add", NAME)
    result = env.run("renew")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"0 enabled (1 disabled, not renewed: lecentral enable {NAME})\n"
    quiet = env.run("-q", "renew")  # the timer renews nothing at all: worth the cron mail
    assert quiet.stdout == result.stdout
    data = json.loads(env.run("renew", "--json").stdout)
    assert data["disabled"] == [NAME] and data["certificates"] == [] and data["ok"] is True
    for args in (["--force"], ["--dry-run"], []):
        named = env.run("-q", "renew", *args, NAME)
        assert named.exit_code == 1, (args, named.output)
        assert named.stderr == (f"lecentral: error: {NAME}: disabled (enable = 'N'): not renewed; "
                                f"enable it with lecentral enable {NAME}\n"), args
        assert "SKIPPED" in named.stdout
    as_json = env.run("renew", "--force", "--json", NAME)
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["ok"] is False
    row = env.store().get(NAME)
    assert row is not None and not row.enable and row.count_fail_update == 0
    assert row.ts_last_update == 1 and [e.kind for e in env.store().events(NAME)] == ["added"]


def issue(env: Env, name: str, days: int) -> Certificate:
    """Store a self-signed certificate for ``name`` with the key of its CSR."""
    key = make_key()
    env.csr([name], key=key)
    assert env.run("add", name, "--enable").exit_code == 0
    leaf, _ = make_self_signed([name], key, days=days)
    ca, _ = make_self_signed(["Test CA"])
    cert = Certificate.load(leaf)
    env.store().save_issued(name, leaf, ca, cert.not_after, now_ts())
    return cert


def test_list_sorted_by_days_left_and_show(env: Env) -> None:
    issue(env, "late.example.test", 80)
    cert = issue(env, "soon.example.test", 10)
    env.csr(["new.example.test"])
    env.run("add", "new.example.test")
    rows = env.rows()
    assert [r["name"] for r in rows] == ["new.example.test", "soon.example.test",
                                         "late.example.test"]
    assert rows[1]["days_left"] in (9, 10) and rows[2]["days_left"] in (79, 80)
    table = env.run("list")
    assert table.exit_code == 0 and table.output.index("soon.") < table.output.index("late.")

    shown = env.run("show", "soon.example.test", "--json")
    info = json.loads(shown.stdout)
    assert info["certificate"]["sha256"] == cert.fingerprint
    assert info["chain"] == ["CN=Test CA"]
    assert [h["event"] for h in info["history"]] == ["issued", "added"]
    text = env.run("show", "soon.example.test")
    assert cert.fingerprint in text.output and "RSA 2048" in text.output
    assert env.run("show", "nope.example.test").exit_code == 1


def test_invalid_database_rows_are_shown_not_acted_on(env: Env) -> None:
    """A row written by hand with bad values is listed with its problems, never crashes list."""
    from sqlalchemy import create_engine, text

    engine = create_engine(env.url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO certs (name, enable, certbot, csr, md5_modulus) "
                          "VALUES ('bad name!', 'Y', 'N', :csr, 'zz')"), {"csr": b"junk"})
    [row] = env.rows()
    problems = " ".join(row["problems"])  # type: ignore[arg-type]
    assert "not a valid DNS name" in problems and "md5_modulus" in problems
    assert "is text, but not a certificate request (CSR)" in problems
    assert "INVALID" in env.run("list").output


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[database]\nurl = "mysql+pymysql://u:hunter2@127.0.0.1/certs"\n'
                      '[acme]\neab_hmac_key = "c2VjcmV0LWtleQ"\n')
    for args in (["config", "show"], ["config", "show", "--json"]):
        result = CliRunner().invoke(main, ["--config", str(config), *args])
        assert result.exit_code == 0
        assert "hunter2" not in result.output and "c2VjcmV0LWtleQ" not in result.output
        assert "********" in result.output


def test_config_show_prints_toml_for_every_documented_shape(tmp_path: Path) -> None:
    """Inline tables (dns.nameserver_addresses), tables of tables (dns.zones) and arrays of tables
    ([[acme.ca]]) are printed as TOML that loads again, to the same values; with [[acme.ca]], the
    one-CA [acme] keys (unused) are not shown as if they were in use."""
    import tomllib

    config = tmp_path / "c.toml"
    config.write_text(
        '[database]\nurl = "sqlite:////tmp/none.db"\n'
        '[dns]\nnameserver_addresses = { "ns1.example.test" = "127.0.0.1:5353" }\n'
        '[dns.zones."a.example.test"]\ntsig_key_file = "/etc/lecentral/a.key"\n'
        '[[acme.ca]]\nname = "one"\ndirectory = "https://one.test/dir"\naccount_key = "/k/one"\n'
        '[[acme.ca]]\nname = "two"\ndirectory = "https://two.test/dir"\naccount_key = "/k/two"\n')
    result = CliRunner().invoke(main, ["--config", str(config), "config", "show"])
    assert result.exit_code == 0, result.output
    shown = tomllib.loads(result.stdout)
    as_json = json.loads(CliRunner().invoke(main, ["--config", str(config), "config", "show",
                                                   "--json"]).stdout)
    assert shown["dns"]["nameserver_addresses"] == {"ns1.example.test": "127.0.0.1:5353"}
    assert shown["dns"]["zones"]["a.example.test"]["tsig_key_file"] == "/etc/lecentral/a.key"
    assert [ca["name"] for ca in shown["acme"]["ca"]] == ["one", "two"]
    assert shown["acme"]["ca"] == as_json["acme"]["ca"]
    assert "directory" not in shown["acme"] and "letsencrypt.org" not in result.stdout


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[renew]\nbefore_day = 3\n")
    result = CliRunner().invoke(main, ["--config", str(config), "list"])
    assert result.exit_code == 2
    assert f"{config}: unknown key 'renew.before_day'" in result.stderr


def test_console_scripts_run(env: Env) -> None:
    """The installed entry point, not just the click object."""
    out = subprocess.run(["lecentral", "--config", str(env.config), "list", "--json"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and json.loads(out.stdout) == []
    helped = subprocess.run([sys.executable, "-m", "lecentral.cli", "--help"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert helped.returncode == 0, helped.stderr
    assert "Commands:" in helped.stdout
    listed = helped.stdout.split("Commands:", 1)[1].split()  # the command names and their help
    assert {"add", "init", "list", "renew", "show"} <= set(listed), helped.stdout


@pytest.mark.parametrize("backend", ["mariadb", "postgres"])
def test_cli_on_server_databases(backend: str, request: pytest.FixtureRequest,
                                 tmp_path: Path) -> None:
    """init, add, list --json, enable and remove through the CLI on MariaDB and PostgreSQL."""
    url = request.getfixturevalue(f"{backend}_url")
    e = Env(tmp_path)
    e.config.write_text(f'[database]\nurl = "{url}"\n[renew]\ncsr_dir = "{e.csr_dir}"\n')
    assert e.run("init").exit_code == 0
    e.csr([NAME, "example.test"])
    assert e.run("add", NAME).exit_code == 0
    assert e.run("enable", NAME).exit_code == 0
    [row] = e.rows()
    assert row["names"] == [NAME, "example.test"] and row["enabled"] is True
    duplicate = e.run("add", NAME)
    assert duplicate.exit_code == 4 and "already in the database" in duplicate.stderr
    shown = e.run("config", "show")
    assert url.split("@")[0].split(":")[-1] not in shown.output  # the password is masked
    assert e.run("remove", NAME, "--yes").exit_code == 0
    assert e.rows() == []


def _sql(url: str, statement: str, **params: object) -> list[tuple[object, ...]]:
    """Run SQL as the seed's scripts or an admin at the mysql prompt would."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        result = conn.execute(text(statement), params)
        rows = [tuple(r) for r in result] if result.returns_rows else []
    engine.dispose()
    return rows


def _renew_dry(env: Env, *names: str) -> dict[str, object]:
    """``lecentral renew --dry-run --json``: the due decision, contacting no CA ([renew] ari off)."""
    if "ari = false" not in env.config.read_text():
        env.config.write_text(env.config.read_text().replace("[renew]\n", "[renew]\nari = false\n"))
    result = env.run("renew", "--dry-run", "--json", *names)
    assert result.exit_code in (0, 1), result.output
    [outcome] = json.loads(result.stdout)["certificates"]
    return outcome  # type: ignore[no-any-return]


def _corrupt(env: Env, kind: str, cert: Certificate) -> tuple[str, object]:
    """Spoil the stored certificate of NAME one way; (SQL SET clause, its value)."""
    if kind == "garbage":
        return "crt = :v", b"garbage"
    if kind == "other-key":
        return "crt = :v", make_self_signed([NAME], days=80)[0]
    if kind == "other-names":  # the right key, but not the CSR's name
        key = make_key()
        env.csr([NAME], key=key)
        assert env.run("set-csr", NAME, str(env.csr_dir / f"{NAME}.csr")).exit_code == 0
        return "crt = :v", make_self_signed(["other.example.test"], key, days=80)[0]
    if kind == "lost":  # a hand edit or a bad restore: the row says a certificate was stored
        return "crt = :v", None
    if kind == "ts_expire":  # the renewal would come 40 days after the certificate expired
        return "ts_expire = :v", cert.not_after + 40 * 86400
    return "md5_ca = :v", "0" * 32


CORRUPTIONS = {
    "garbage": "the crt column of www.example.test is text, but not a certificate",
    "other-key": "the certificate in crt is for another key",
    "other-names": "the certificate in crt does not cover www.example.test (it names "
                   "other.example.test)",
    "ts_expire": "disagrees with the certificate's notAfter",
    "md5_ca": f"md5_ca {'0' * 32} does not match the ca column",
    "lost": "crt is empty but ts_expire",
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_a_bad_stored_certificate_is_a_problem_and_due(env: Env, kind: str) -> None:
    """UPDATE certs SET crt='garbage' (or a wrong key, names, ts_expire, md5_ca) used to list as
    healthy and never be reissued: now it is a problem in list/show/--json, and renew finds the
    row due without --force (the row itself stays valid: the agent-facing problems are unchanged)."""
    cert = issue(env, NAME, 80)
    clause, value = _corrupt(env, kind, cert)
    _sql(env.url, f"UPDATE certs SET {clause}, ts_last_update = :t WHERE name = :n",
         v=value, t=now_ts() - 86400, n=NAME)
    message = CORRUPTIONS[kind]
    [item] = env.rows()
    assert item["invalid"] is False and env.store().get(NAME).problems == ()  # type: ignore[union-attr]
    assert any(message in p for p in item["certificate_problems"]), item  # type: ignore[attr-defined]
    assert item["problems"] == item["certificate_problems"]
    listed = env.run("list").output
    assert "BAD CERTIFICATE (the next renew replaces it)" in listed and message in listed
    shown = env.run("show", NAME)
    assert "BAD CERTIFICATE" in shown.output and message in shown.output
    assert "the next renew replaces the certificate" in shown.output
    assert json.loads(env.run("show", NAME, "--json").stdout)["certificate_problems"] == \
        item["certificate_problems"]
    outcome = _renew_dry(env)
    assert outcome["status"] == "would-issue"
    assert "the stored certificate is bad" in outcome["message"]  # type: ignore[operator]
    assert message in outcome["message"]  # type: ignore[operator]


def test_a_bad_certificate_waits_for_min_interval_and_says_so(env: Env) -> None:
    issue(env, NAME, 80)  # ts_last_update is now
    _sql(env.url, "UPDATE certs SET crt = 'garbage' WHERE name = :n", n=NAME)
    outcome = _renew_dry(env)
    assert outcome["status"] == "not-due"
    assert "renew.min_interval" in outcome["message"]  # type: ignore[operator]
    assert "the stored certificate is bad (the crt column" in outcome["message"]  # type: ignore[operator]
    # list and show say the same as renew: not the next renew, the first after min_interval
    [item] = env.rows()
    at = item["renew_at"]
    assert at is not None and item["ts_renew_at"] > now_ts()  # type: ignore[operator]
    assert item["renew_reason"] == "renew.min_interval after the last attempt"
    assert f"BAD CERTIFICATE (replaced by the first renew after {at}): " in env.run("list").output
    shown = env.run("show", NAME).output
    assert f"the first renew after {at} UTC replaces the certificate" in shown


def test_the_next_renew_issues_a_replaced_csr(env: Env) -> None:
    """lecentral set-csr right after an issue: the stored certificate is for the old key, and the
    first attempt with the new CSR is not held back by renew.min_interval (the last attempt was
    a success, with the old CSR): list says the next renew replaces it, and renew would issue.
    Once an attempt with the new CSR failed, min_interval holds again, and list says until when."""
    issue(env, NAME, 80)  # ts_last_update is now
    env.csr([NAME], key=make_key())
    assert env.run("set-csr", NAME, str(env.csr_dir / f"{NAME}.csr")).exit_code == 0
    [item] = env.rows()
    assert item["ts_renew_at"] is None and item["renew_reason"] == "now: the stored certificate is bad"
    assert "BAD CERTIFICATE (the next renew replaces it): the certificate in crt is for another " \
        "key" in env.run("list").output
    assert "the next renew replaces the certificate" in env.run("show", NAME).output
    outcome = _renew_dry(env, NAME)
    assert outcome["status"] == "would-issue", outcome
    assert "the stored certificate is bad: the certificate in crt is for another key" in \
        outcome["message"]  # type: ignore[operator]
    env.store().record_failure(NAME, "the CA refused the new CSR", now_ts())
    outcome = _renew_dry(env, NAME)
    assert outcome["status"] == "not-due" and "renew.min_interval" in outcome["message"], outcome  # type: ignore[operator]
    [item] = env.rows()
    assert f"BAD CERTIFICATE (replaced by the first renew after {item['renew_at']})" in \
        env.run("list").output
    shown = env.run("show", NAME).output
    assert f"at {item['renew_at']} UTC (renew.min_interval after the last attempt)\n" in shown, \
        shown  # no ARI window asked for a bad one


def test_a_row_whose_csr_does_not_name_it_is_invalid(env: Env) -> None:
    """A row written past lecentral add: its CSR names another host. Listed INVALID with the
    missing name, refused by renew (exit 1), never ordered."""
    env.csr([NAME])
    assert env.run("add", NAME, "--enable").exit_code == 0
    pem, _ = make_csr(["other.example.test"])
    _sql(env.url, "UPDATE certs SET csr = :c, md5_modulus = :m WHERE name = :n", c=pem,
         m=Csr.load(pem).md5_modulus, n=NAME)
    [item] = env.rows()
    assert item["invalid"] is True
    assert f"the CSR of {NAME} does not name {NAME} (it names other.example.test)" in \
        item["problems"][0]  # type: ignore[index]
    assert "INVALID: the CSR of" in env.run("list").output
    outcome = _renew_dry(env)
    assert outcome["status"] == "invalid" and f"does not name {NAME}" in outcome["message"]  # type: ignore[operator]


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_seed_rows_with_capitals_and_null_enable_on_the_cli(backend: str, tmp_path: Path,
                                                            request: pytest.FixtureRequest) -> None:
    """populate.pl kept the name as typed (ascii_bin on MariaDB: case matters to the database)
    and the md5 as openssl printed it; another row has enable NULL. show/enable/disable work on
    the name in any case and never rename the row; NULL is listed as disabled with a note."""
    e = Env(tmp_path)
    if backend == "mariadb":
        url = request.getfixturevalue("mariadb_url")
        e.url = url
        e.config.write_text(f'[database]\nurl = "{url}"\n[renew]\ncsr_dir = "{e.csr_dir}"\n')
    assert e.run("init").exit_code == 0
    pem, _ = make_csr([NAME])
    digest = Csr.load(pem).md5_modulus
    _sql(e.url, "INSERT INTO certs (name, enable, csr, md5_modulus, ts_expire, ts_last_update) "
         "VALUES ('WWW.Example.TEST', 'N', :c, :m, 1, 1)", c=pem, m=f"MD5(stdin)= {digest.upper()}")
    mail, _ = make_csr(["mail.example.test"])
    _sql(e.url, "INSERT INTO certs (name, enable, csr, md5_modulus, ts_expire, ts_last_update) "
         "VALUES ('Mail.Example.TEST', NULL, :c, :m, 1, 1)", c=mail, m=Csr.load(mail).md5_modulus)
    for shown_as in (NAME, "WWW.EXAMPLE.TEST"):
        shown = e.run("show", shown_as, "--json")
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["md5_modulus"] == digest
    assert e.run("enable", "www.Example.test").exit_code == 0
    assert _sql(e.url, "SELECT name, enable FROM certs WHERE enable = 'Y'") == \
        [("WWW.Example.TEST", "Y")]
    assert e.run("disable", NAME).exit_code == 0
    assert _sql(e.url, "SELECT name, enable FROM certs WHERE name = 'WWW.Example.TEST'") == \
        [("WWW.Example.TEST", "N")]
    rows = {r["name"]: r for r in e.rows()}
    assert rows[NAME]["problems"] == [] and rows[NAME]["enabled"] is False
    assert rows["mail.example.test"]["enabled"] is False
    assert rows["mail.example.test"]["problems"] == []
    assert "column enable is NULL: not enabled" in rows["mail.example.test"]["notes"][0]  # type: ignore[index]
    assert "column enable is NULL" in e.run("list").output
    assert "NOTE" in e.run("show", "mail.example.test").output
    outcome = _renew_dry(e, "MAIL.example.test")
    assert (outcome["status"], outcome["message"]) == (
        "skipped", ("disabled (enable is NULL): not renewed; enable it with lecentral enable "
        "mail.example.test"))
    assert [ev.kind for ev in e.store().events(NAME)] == ["enable", "enable"]
    # a second row differing only in case: both refused until the admin removes one
    _sql(e.url, "INSERT INTO certs (name, enable, csr, md5_modulus) VALUES ('www.example.test', "
         "'Y', :c, :m)", c=pem, m=digest)
    assert "INVALID: rows 'WWW.Example.TEST', 'www.example.test' all name" in e.run("list").output
    refused = e.run("enable", NAME)
    assert refused.exit_code == 4 and "remove all but one" in refused.stderr
    assert e.run("remove", "www.example.test", "--yes").exit_code == 0
    assert _sql(e.url, "SELECT name FROM certs ORDER BY name") == [("Mail.Example.TEST",),
                                                                   ("WWW.Example.TEST",)]
    assert e.run("enable", NAME).exit_code == 0


def _issue_due(env: Env, name: str) -> Certificate:
    """Store a 30-day certificate for ``name`` with 5 days left (due: a third of its lifetime
    is 10 days), saved two days ago (renew.min_interval does not hold it)."""
    import datetime as dt

    key = make_key()
    env.csr([name], key=key)
    assert env.run("add", name, "--enable").exit_code == 0
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=25)
    leaf, _ = make_self_signed([name], key, days=30, not_before=start)
    cert = Certificate.load(leaf)  # its own CA: a good certificate, chain included
    env.store().save_issued(name, leaf, leaf, cert.not_after, now_ts() - 2 * 86400)
    return cert


@pytest.mark.parametrize("swept", [False, True], ids=["read-in-full", "from-facts"])
@pytest.mark.parametrize("kind", ["due", "never-issued"])
def test_a_row_held_by_min_interval_is_listed_held_not_due(env: Env, kind: str,
                                                          swept: bool) -> None:
    """A row whose last attempt failed less than renew.min_interval ago: renew says not-due
    (held by min_interval); list, list --json and show used to say 'due (...)' / 'now' for it.
    They now give the time min_interval ends, as the renew job decides it (held_until), both
    for a row read in full and for one list takes from the facts of the last sweep."""
    from lecentral.config import RenewConfig
    from lecentral.store.rows import FreshRow

    if kind == "due":
        _issue_due(env, NAME)
        due = env.rows()[0]
        assert due["ts_renew_at"] <= now_ts(), due  # type: ignore[operator]
        assert "due (" in env.run("list").output  # type: ignore[operator]
    else:
        env.csr([NAME])
        assert env.run("add", NAME, "--enable").exit_code == 0
        assert env.rows()[0]["renew_reason"] == "now: no certificate yet"
    failed_at = now_ts()
    env.store().record_failure(NAME, "the CA said no", failed_at)
    store = env.store()
    if swept:
        store.record_facts(store.sweep(RenewConfig(), now_ts()).rows)
    fresh = [isinstance(e, FreshRow) for e in store.listing(now_ts())]
    assert fresh == [swept and kind == "due"]  # a never-issued row has no facts to vouch
    outcome = _renew_dry(env)
    assert outcome["status"] == "not-due" and "renew.min_interval" in outcome["message"], outcome  # type: ignore[operator]
    [item] = env.rows()
    assert item["ts_renew_at"] == failed_at + 3600
    assert item["renew_reason"] == "renew.min_interval after the last attempt"
    listed = env.run("list").output
    assert f"{item['renew_at']} (renew.min_interval after the last attempt)" in listed, listed
    assert "due (" not in listed and "  now" not in listed
    shown = env.run("show", NAME).output
    assert f"renews            at {item['renew_at']} UTC (renew.min_interval after the " \
        "last attempt)\n" in shown, shown
    shown_json = json.loads(env.run("show", NAME, "--json").stdout)
    assert (shown_json["ts_renew_at"], shown_json["renew_reason"]) == \
        (item["ts_renew_at"], item["renew_reason"])
    # once min_interval has passed, the row is due again, and listed so
    _sql(env.url, "UPDATE certs SET ts_last_update = :t WHERE name = :n", t=failed_at - 3600,
         n=NAME)
    [item] = env.rows()
    assert item["renew_reason"] != "renew.min_interval after the last attempt"
    assert _renew_dry(env)["status"] == "would-issue"
    assert ("renews " in env.run("show", NAME).output) is (kind == "due")


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_rows_differing_only_in_case_are_listed_and_shown_as_stored(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Two rows whose names differ only in case, two only in a final dot (a seed table can
    hold them): both INVALID (renew refuses them) and each listed, in text and --json, by its
    name as stored, not both under the one lower-case name (the sysadmin could not tell them
    apart nor see which to remove); show NAME exactly as stored shows that row, not the
    other one's key; renew refuses the name (one outcome); once one is removed the other is valid again."""
    e = Env(tmp_path)
    if backend == "mariadb":
        e.url = request.getfixturevalue("mariadb_url")
        e.config.write_text(f'[database]\nurl = "{e.url}"\n[renew]\ncsr_dir = "{e.csr_dir}"\n'
                            'ari = false\n')
    assert e.run("init").exit_code == 0
    digests = {}
    for stored, name in [("WWW.Example.TEST", NAME), ("www.example.test", NAME),
                         ("mail.example.test.", "mail.example.test"),
                         ("mail.example.test", "mail.example.test")]:
        pem, _ = make_csr([name])
        digests[stored] = Csr.load(pem).md5_modulus
        _sql(e.url, "INSERT INTO certs (name, enable, csr, md5_modulus, ts_expire, "
             "ts_last_update) VALUES (:n, 'Y', :c, :m, 1, 1)", n=stored, c=pem,
             m=digests[stored])
    rows = e.rows()
    assert sorted(r["name"] for r in rows) == sorted(digests)  # type: ignore[type-var]
    assert all(r["invalid"] and "all name" in r["problems"][0] for r in rows)  # type: ignore[index]
    listed = e.run("list").output.splitlines()[1:]
    assert sorted(line.split()[0] for line in listed) == sorted(digests)
    assert all("INVALID: rows " in line for line in listed)
    for stored, digest in digests.items():
        shown = e.run("show", stored, "--json")
        assert shown.exit_code == 0, shown.output
        info = json.loads(shown.stdout)
        assert (info["name"], info["md5_modulus"]) == (stored, digest)
        assert info["invalid"] is True
        assert f"name              {stored}\n" in e.run("show", stored).output
    result = e.run("renew", "--dry-run", "--json")
    assert result.exit_code == 1, result.output
    outcomes = json.loads(result.stdout)["certificates"]
    # one outcome per name, the problem naming both rows
    assert sorted(o["name"] for o in outcomes) == ["mail.example.test", NAME], outcomes
    assert all(o["status"] == "invalid" and "all name" in o["message"] for o in outcomes)
    for stored in ("WWW.Example.TEST", "mail.example.test."):
        assert e.run("remove", stored, "--yes").exit_code == 0
    rows = e.rows()
    assert sorted(r["name"] for r in rows) == ["mail.example.test", NAME]  # type: ignore[type-var]
    assert all(not r["invalid"] for r in rows)
    assert [json.loads(e.run("show", NAME, "--json").stdout)["md5_modulus"]] == \
        [digests["www.example.test"]]


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
@pytest.mark.parametrize("how", ["missing", "not-a-directory", "tempdir", "full"])
def test_list_with_no_room_for_its_temporary_file_is_a_clear_error(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str,
        as_json: bool) -> None:
    """list spills the rows of a large table to a temporary file: a $TMPDIR that is missing,
    not a directory or full (a real full tmpfs), or tempfile's own setting missing when TMPDIR
    is not set, is an error naming it (exit 1, as fleet's), no line printed; never tempfile's
    silent fallback to /tmp. SPILL_IN_MEMORY (the bytes kept in memory before the file is
    made) is set to 1 byte so that two rows need the file; with a usable TMPDIR the output is
    the same as without the file."""
    from test_store_sqlite_errors import fill, tmpfs

    from lecentral.cli import listing
    from lecentral.config import RenewConfig

    for name in ("a.example.test", "b.example.test"):
        _issue_due(env, name)
    store = env.store()
    store.record_facts(store.sweep(RenewConfig(), now_ts()).rows)
    args = ("list", "--json") if as_json else ("list",)
    now = now_ts()
    monkeypatch.setattr(listing, "now_ts", lambda: now)  # the two listings are compared
    in_memory = env.run(*args)
    assert in_memory.exit_code == 0 and "b.example.test" in in_memory.stdout
    monkeypatch.setattr(listing, "SPILL_IN_MEMORY", 1)
    usable = tmp_path / "tmp"
    usable.mkdir()
    monkeypatch.setenv("TMPDIR", str(usable))
    spilled = env.run(*args)
    assert (spilled.exit_code, spilled.stdout) == (0, in_memory.stdout)
    assert list(usable.iterdir()) == []  # the file has no name, and is gone
    where = tmp_path / {"missing": "no-such-dir", "not-a-directory": "a-file", "tempdir":
                        "no-such-dir", "full": "full"}[how]
    with contextlib.ExitStack() as stack:
        if how == "tempdir":
            monkeypatch.delenv("TMPDIR")
            monkeypatch.setattr(tempfile, "tempdir", str(where))
        else:
            monkeypatch.setenv("TMPDIR", str(where))
        if how == "not-a-directory":
            where.write_text("")
        if how == "full":
            stack.enter_context(tmpfs(where, "64k"))
            fill(where)
        result = env.run(*args)
    assert result.exit_code == 1, result.output
    assert f"cannot use a temporary file in {where}: " in result.stderr, result.stderr
    assert result.stdout == ""


def test_rows_differing_in_a_trailing_space_are_told_apart(env: Env) -> None:
    """SQLite keeps 'www.example.test ' and 'www.example.test' as two rows, one name: list
    quotes the stored one with the space (the table would show both alike), and remove and
    show take the name as the problem prints it, space included: remove used to strip it
    and delete the other row."""
    digests = {}
    for stored in ("www.example.test ", NAME):
        pem, _ = make_csr([NAME])
        digests[stored] = Csr.load(pem).md5_modulus
        _sql(env.url, "INSERT INTO certs (name, enable, csr, md5_modulus, ts_expire, "
             "ts_last_update) VALUES (:n, 'Y', :c, :m, 1, 1)", n=stored, c=pem,
             m=digests[stored])
    assert sorted(r["name"] for r in env.rows()) == sorted(digests)  # type: ignore[type-var]
    listed = env.run("list").output
    assert "\n'www.example.test '  " in listed and f"\n{NAME}  " in listed, listed
    assert "INVALID: rows 'www.example.test', 'www.example.test ' all name" in listed
    for stored, digest in digests.items():
        assert json.loads(env.run("show", stored, "--json").stdout)["md5_modulus"] == digest
    assert env.run("remove", "www.example.test ", "--yes").exit_code == 0
    assert _sql(env.url, "SELECT name, md5_modulus FROM certs") == [(NAME, digests[NAME])]
    assert env.rows()[0]["invalid"] is False
