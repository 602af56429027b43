"""The central CLI's management commands on the embedded SQLite store, error paths included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from lecentral.certificates import Certificate, Csr, now_ts
from lecentral.cli.central import main
from lecentral.store.sql import SqlStore
from lecentral.testing.pki import make_csr, make_key, make_self_signed

NAME = "www.example.test"


class Env:
    """A config file, a CSR directory and an SQLite database in a temp dir."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.db = tmp / "var" / "lecentral.db"
        self.csr_dir = tmp / "csr"
        self.csr_dir.mkdir()
        self.config = tmp / "lecentral.toml"
        self.config.write_text(f'[database]\nurl = "sqlite:///{self.db}"\n'
                               f'[renew]\ncsr_dir = "{self.csr_dir}"\n')
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
    assert first.exit_code == 0 and "created tables certs, lecentral_events, lecentral_leftovers" in first.output
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
    assert "has no table certs, lecentral_events, lecentral_leftovers; run lecentral init" in result.stderr


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


@pytest.mark.parametrize("setup, args, message", [
    (None, [NAME], f"CSR file {{csr_dir}}/{NAME}.csr does not exist"),
    ("garbage", [NAME], "is not a valid PEM or DER certificate request"),
    ("other", [NAME], f"is for other.example.test, not {NAME}"),
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
    elif setup == "other":
        path.write_bytes(make_csr(["other.example.test"])[0])
    elif setup == "weak":
        path.write_bytes(make_csr([NAME], make_key("rsa1024"))[0])
    elif setup == "ok":
        env.csr([NAME])
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
    assert failed.exit_code == 5 and "not www.example.test" in failed.stderr
    assert env.store().get(NAME) == row
    missing = env.run("set-csr", "nope.example.test", str(new))
    assert missing.exit_code != 0


def test_enable_disable_remove(env: Env) -> None:
    env.csr([NAME])
    env.run("add", NAME)
    assert env.run("enable", NAME).exit_code == 0
    assert env.rows()[0]["enabled"] is True
    assert env.run("disable", NAME).exit_code == 0
    assert env.rows()[0]["enabled"] is False
    unknown = env.run("enable", "nope.example.test")
    assert unknown.exit_code == 4 and "no certificate named 'nope.example.test'" in unknown.stderr
    aborted = env.run("remove", NAME, input="n\n")
    assert aborted.exit_code == 1 and len(env.rows()) == 1
    assert env.run("remove", NAME, "--yes").exit_code == 0
    assert env.rows() == []
    gone = env.run("remove", NAME, "--yes")
    assert gone.exit_code == 1 and "no certificate named" in gone.stderr
    kinds = [e.kind for e in env.store().events(NAME)]
    assert kinds == ["removed", "enable", "enable", "added"]


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
    assert "not a valid PEM or DER" in problems
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


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[renew]\nbefore = 3\n")
    result = CliRunner().invoke(main, ["--config", str(config), "list"])
    assert result.exit_code == 2
    assert f"{config}: unknown key 'renew.before'" in result.stderr


def test_console_scripts_run(env: Env) -> None:
    """The installed entry point, not just the click object."""
    out = subprocess.run(["lecentral", "--config", str(env.config), "list", "--json"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0 and json.loads(out.stdout) == []
    helped = subprocess.run([sys.executable, "-m", "lecentral.cli", "--help"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert "Commands:" in helped.stdout and "renew" in helped.stdout or "list" in helped.stdout


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
