"""What a newcomer tripped over in both CLIs (issue 14): one exit status table, quiet renew,
messages that name the program, dates instead of epochs, words instead of parser internals, a
plugins table that fits, status failing on an unreachable service, man pages, completion, and
init refusing to make directories outside lecentral's state directory.

Each test reproduces the report first; all run on real parts (SQLite, the CLIs, groff/man).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from lecentral_testing.agent import AgentWorld, TestCA
from lecentral_testing.pki import make_csr
from lecentral_testing.ports import LOOPBACK, free_port
from sqlalchemy import create_engine, text

from lecentral.certificates import Certificate, now_ts, when
from lecentral.cli.agent import main as agent_main
from lecentral.cli.central import main
from lecentral.errors import EXIT_CODES, exit_code_rows
from lecentral.store.sql import SqlStore

NAME = "www.example.test"
UNKNOWN = "nope.example.test"
DOCS = Path(__file__).parents[1] / "docs"


class Central:
    """lecentral.toml, a CSR directory and an SQLite database (made by init) in a temp dir."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.db = tmp / "lecentral.db"
        self.csr_dir = tmp / "csr"
        self.csr_dir.mkdir()
        self.config = tmp / "lecentral.toml"
        self.config.write_text(f'[database]\nurl = "sqlite:///{self.db}"\n'
                               f'[renew]\ncsr_dir = "{self.csr_dir}"\n'
                               f'state_dir = "{tmp / "state"}"\nari = false\n')
        self.ca = TestCA()

    def run(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(main, ["--config", str(self.config), *args], input=input)

    def csr(self, name: str) -> Path:
        path = self.csr_dir / f"{name}.csr"
        path.write_bytes(make_csr([name])[0])
        return path

    def add_issued(self, name: str, days: int = 80) -> Certificate:
        """A row with a certificate signed by :attr:`ca`, valid ``days`` more: not due."""
        self.csr(name)
        assert self.run("add", name, "--enable").exit_code == 0
        store = SqlStore(f"sqlite:///{self.db}")
        try:
            row = store.get(name)
            assert row is not None
            crt = self.ca.sign(row.csr, days=days)
            leaf = Certificate.load(crt)
            store.save_issued(name, crt, self.ca.pem, leaf.not_after, now_ts())
        finally:
            store.close()
        return leaf

    def add_invalid(self, name: str) -> None:
        """An enabled row whose CSR is garbage (a hand edit): the renew job refuses it."""
        engine = create_engine(f"sqlite:///{self.db}")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO certs (name, enable, csr, md5_modulus, ts_expire, "
                              "ts_last_update) VALUES (:n, 'Y', 'garbage', 'x', 1, 1)"), {"n": name})
        engine.dispose()


@pytest.fixture
def central(tmp_path: Path) -> Central:
    c = Central(tmp_path)
    assert c.run("init").exit_code == 0
    return c


# --- lecentral-install csr --out RELATIVE: see test_agent_cli.test_csr_out_with_a_relative_path


# --- lecentral -q renew ----------------------------------------------------------------------


def test_quiet_renew_prints_nothing_when_nothing_happened(central: Central) -> None:
    """The cron line ``lecentral -q renew --once`` printed ``9 not-due`` every day (mailed)."""
    central.add_issued(NAME)
    loud = central.run("renew", "--once")
    assert loud.exit_code == 0, loud.output
    assert "1 not-due" in loud.stdout
    quiet = central.run("-q", "renew", "--once")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stdout == "" and quiet.stderr == ""
    runs = SqlStore(f"sqlite:///{central.db}")
    try:
        with runs.engine.connect() as conn:  # both runs were recorded all the same
            count = conn.execute(text("SELECT COUNT(*) FROM lecentral_runs")).scalar()
    finally:
        runs.close()
    assert count == 2


def test_quiet_renew_speaks_when_something_failed_and_says_it_once(central: Central) -> None:
    """A failure is printed (quiet or not), in the table only: it was a log line too."""
    central.add_issued(NAME)
    central.add_invalid("bad.example.test")
    for args in (("-q", "renew"), ("renew",)):
        result = central.run(*args)
        assert result.exit_code == 1, result.output
        assert "bad.example.test  INVALID" in result.stdout
        assert "1 invalid, 1 not-due" in result.stdout
        assert "bad.example.test" not in result.stderr, result.stderr  # said once, on stdout


# --- one exit status for an unknown NAME, in every command of both CLIs ------------------------


def unknown_name_commands(central: Central, name: str) -> list[list[str]]:
    csr = central.csr_dir / "unknown.csr"
    csr.write_bytes(make_csr([name if "." in name else UNKNOWN])[0])
    return [["show", name], ["enable", name], ["disable", name], ["remove", name, "--yes"],
            ["set-csr", name, str(csr)], ["renew", name], ["renew", "--dry-run", name],
            ["fleet", name], ["probe", name], ["endpoint", "list", name],
            ["endpoint", "add", name, "tls://www.example.test:443"],
            ["endpoint", "remove", name, "tls://www.example.test:443"]]


@pytest.mark.parametrize("name", [UNKNOWN, "www"])
def test_an_unknown_name_exits_1_in_every_central_command(central: Central, name: str) -> None:
    """It was 1, 4 or 5 depending on the command (and 5 for a name that is not a DNS name)."""
    central.add_issued(NAME)
    before = central.run("list", "--json").stdout
    for args in unknown_name_commands(central, name):
        result = central.run(*args)
        assert result.exit_code == 1, (args, result.output)
        assert f"lecentral: error: no certificate named {name!r} in the database" in \
            result.stderr or f"no certificate named {name} in the database" in result.stderr, \
            (args, result.stderr)
        assert "Traceback" not in result.output
    assert central.run("list", "--json").stdout == before  # nothing changed


def test_an_unknown_name_exits_1_in_the_agent_and_its_errors_say_lecentral_install(
        tmp_path: Path) -> None:
    """``lecentral-install run NAME`` exited 2 for a NAME not in install.toml, and every agent
    error started with ``lecentral:``."""
    world = AgentWorld(tmp_path)
    try:
        world.add(NAME)
        world.issue(NAME)
        world.write_config(world.entry(NAME))
        result = world.run("run", UNKNOWN)
        assert result.exit_code == 1, result.stderr
        assert result.stderr.startswith(f"lecentral-install: error: {UNKNOWN} not configured in ")
        assert not (tmp_path / "ssl" / "certs" / f"{NAME}.crt").exists()  # nothing installed
        bad = CliRunner().invoke(agent_main, ["--config", str(tmp_path / "none.toml"), "run"])
        assert bad.exit_code == 2 and bad.stderr.startswith("lecentral-install: error: ")
    finally:
        world.close()


def test_one_exit_status_table_in_both_helps_and_the_reference() -> None:
    """Made from lecentral.errors.EXIT_CODES: both --help epilogs, and docs/reference.md's table
    row for row."""
    for cli in (main, agent_main):
        helped = CliRunner().invoke(cli, ["--help"])
        assert helped.exit_code == 0
        flat = " ".join(helped.stdout.split())
        for code, short, _ in EXIT_CODES:
            assert f"{code} {short}" in flat, (cli.name, code)
        assert "a NAME not in the database or not configured is 1 in every command" in flat
    section = (DOCS / "reference.md").read_text().split("## Exit status", 1)[1].split("\n## ")[0]
    rows = [(int(m[0]), m[1]) for m in re.findall(r"^\| (\d) \| (.*) \|$", section, re.MULTILINE)]
    assert rows == exit_code_rows()


def test_renew_help_says_how_many_at_once_workers_and_processes() -> None:
    """``renew.workers`` and ``renew.processes`` decide how a pass runs: the help says both,
    with the default the configuration has."""
    from lecentral.config import RenewConfig

    helped = CliRunner().invoke(main, ["renew", "--help"])
    assert helped.exit_code == 0
    flat = " ".join(helped.stdout.split())
    assert (f"Certificates are issued renew.workers at a time (default {RenewConfig().workers}: "
            "what the CA sees at once)") in flat
    assert ("With renew.processes above 1 (the default, \"auto\", is 2 where this process may "
            "use 2 cores or more, by its CPU affinity and its cgroups' CPU quota, and one was idle "
            "during the start; -vv logs the choice), a pass of more than renew.workers "
            "certificates is shared with that many processes") in flat
    assert RenewConfig().processes == "auto"


def test_the_agent_guide_says_what_exit_7_is_as_the_table_does() -> None:
    """Exit 7 is the agent's lock held or its state directory unusable (tests/test_agent_install.py
    runs both): the table, docs/reference.md and docs/agent.md say the same."""
    (meaning,) = [m for code, m in exit_code_rows() if code == 7]
    guide = " ".join((DOCS / "agent.md").read_text().split("**Exit status**", 1)[1]
                     .split("\n\n", 1)[0].split())
    for words in ("another lecentral-install run holds", "state directory", "[agent] state_dir"):
        assert words in meaning and words in guide.replace("`", ""), words
    assert "7 another lecentral-install run holds the lock" in guide


# --- lecentral show: dates, not epochs ---------------------------------------------------------


def test_show_history_shows_dates_not_epochs(central: Central) -> None:
    leaf = central.add_issued(NAME)
    shown = central.run("show", NAME)
    assert shown.exit_code == 0, shown.output
    assert f"expires at {leaf.not_after!s}" not in shown.stdout
    stamp = when(leaf.not_after)
    assert f"issued, expires at {stamp}" in shown.stdout
    assert not re.search(r"\b\d{10}\b", shown.stdout.split("history:")[1])
    as_json = json.loads(central.run("show", NAME, "--json").stdout)  # the stored text, as is
    assert f"issued, expires at {leaf.not_after}" in [e["message"] for e in as_json["history"]]


# --- lecentral plugins fits 100 columns --------------------------------------------------------


def test_plugins_table_fits_100_columns(central: Central) -> None:
    """It was ~230 columns wide (every registered name on one line); --json keeps everything."""
    result = central.run("plugins")
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 100, result.stdout
    assert "verifier: tls, https" in result.stdout and "pop3+starttls" in result.stdout
    rows = json.loads(central.run("plugins", "--json").stdout)
    verifiers = next(r for r in rows if r["name"] == "lecentral.builtin.verifiers")
    assert "verifier:pop3+starttls" in verifiers["registers"]


# --- lecentral-install status: a service that refuses connections -----------------------------


def test_status_exits_1_when_a_service_refuses_connections(tmp_path: Path) -> None:
    """It exited 0 with ``error`` in the SERVED column when nothing listened on the verify URL."""
    world = AgentWorld(tmp_path)
    try:
        world.add(NAME)
        world.issue(NAME)
        world.write_config(world.entry(NAME))
        assert world.run("run").exit_code == 0
        assert world.run("status").exit_code == 0
        url = f"tls://{LOOPBACK}:{free_port()}?sni={NAME}"  # nothing listens there
        world.write_config(world.entry(NAME, verify=url, verify_timeout=2.0))
        result = world.run("status")
        assert result.exit_code == 1, result.output
        assert f"{url} error" in result.stdout
        assert result.stderr.startswith(f"lecentral-install: error: {NAME}: {url}: ")
        as_json = world.run("status", "--json")
        assert as_json.exit_code == 1
        assert "error" in json.loads(as_json.stdout)["certs"][0]["served"][url]
    finally:
        world.close()


# --- man pages and shell completion -----------------------------------------------------------


def test_man_pages_are_generated_from_click_and_read_by_man(tmp_path: Path) -> None:
    out = tmp_path / "man"
    made = subprocess.run([sys.executable, "-m", "lecentral.cli.manpage", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert made.returncode == 0, made.stderr
    groff = shutil.which("groff")
    assert groff is not None and shutil.which("man") is not None  # installed on the test host
    for prog, commands in (("lecentral", ["init", "renew", "fleet", "endpoint add", "dns zone"]),
                           ("lecentral-install", ["run", "status", "csr", "check"])):
        page = out / f"{prog}.1"
        warnings = subprocess.run([groff, "-man", "-ww", "-z", str(page)], capture_output=True,
                                  text=True, timeout=60, check=False)
        assert warnings.returncode == 0 and warnings.stderr == "", warnings.stderr
        shown = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True,
                               timeout=60, check=False,
                               env={**os.environ, "MANPAGER": "cat", "MANWIDTH": "100"})
        assert shown.returncode == 0, shown.stderr
        for section in ("NAME", "SYNOPSIS", "COMMANDS", "EXIT STATUS", "SHELL COMPLETION"):
            assert f"\n{section}\n" in shown.stdout, (prog, section)
        for command in commands:
            assert f"{prog} {command}" in shown.stdout, (prog, command)
        flat = " ".join(shown.stdout.split())
        assert "8 renew lock held: another lecentral renew holds" in flat  # the one table
        assert f"{prog} demo" not in flat  # lecentral's own commands, not lecentral-testing's
    usage = subprocess.run([sys.executable, "-m", "lecentral.cli.manpage"], capture_output=True,
                           text=True, timeout=60, check=False)
    assert usage.returncode == 2 and "usage: python -m lecentral.cli.manpage DIR" in usage.stderr


@pytest.mark.parametrize(("prog", "var"), [("lecentral", "_LECENTRAL_COMPLETE"),
                                           ("lecentral-install", "_LECENTRAL_INSTALL_COMPLETE")])
def test_shell_completion_prints_a_script(prog: str, var: str) -> None:
    """docs/reference.md's completion lines work as written."""
    exe = Path(sys.executable).parent / prog
    for shell, word in (("bash", "complete -o nosort -F"), ("zsh", "compdef"), ("fish", "complete")):
        script = subprocess.run([str(exe)], env={**os.environ, var: f"{shell}_source"},
                                capture_output=True, text=True, timeout=60, check=False)
        assert script.returncode == 0 and word in script.stdout, (shell, script.stderr)
        assert f"{var}={shell}_source {prog}" in (DOCS / "reference.md").read_text()
    words = subprocess.run([str(exe)], env={**os.environ, var: "bash_complete",
                                            "COMP_WORDS": f"{prog} ", "COMP_CWORD": "1"},
                           capture_output=True, text=True, timeout=60, check=False)
    expected = "renew" if prog == "lecentral" else "run"
    assert words.returncode == 0 and f"plain,{expected}" in words.stdout.split(), words.stdout


# --- lecentral init and missing directories ---------------------------------------------------


def test_init_does_not_make_directories_outside_the_state_directory(tmp_path: Path) -> None:
    """A typo in [database] url made a whole directory tree wherever it pointed."""
    c = Central(tmp_path)
    elsewhere = tmp_path / "typo" / "deeper"
    c.config.write_text(f'[database]\nurl = "sqlite:///{elsewhere}/lecentral.db"\n'
                        f'[renew]\nstate_dir = "{tmp_path / "var" / "renew"}"\n')
    result = c.run("init")
    assert result.exit_code == 2, result.output
    assert f"lecentral: error: directory {tmp_path / 'typo'} does not exist (for the database " \
        f"file {elsewhere}/lecentral.db of [database] url)" in result.stderr
    assert str(tmp_path / "var") in result.stderr
    assert not (tmp_path / "typo").exists()
    # inside the state directory (its parent, /var/lib/lecentral by default): made, as before
    inside = tmp_path / "var" / "db"
    c.config.write_text(f'[database]\nurl = "sqlite:///{inside}/lecentral.db"\n'
                        f'[renew]\nstate_dir = "{tmp_path / "var" / "renew"}"\n')
    made = c.run("init")
    assert made.exit_code == 0, made.output
    assert (inside / "lecentral.db").is_file()
