"""A first step run by hand as root must not leave files the service user cannot open.

The guide's units run as the ``lecentral`` user, whose ``/var/lib/lecentral`` tmpfiles.d makes.
A newcomer runs ``lecentral init`` (SQLite), ``account import`` or a first ``renew`` as root:
the files created in that user's directory now belong to that user (lecentral/files_io.py
``owner_for``), and where a file was left to root anyway, the service user's error says whose
it is and the ``chown`` that fixes it (it used to say "check that the server is up").

The service user here is ``nobody``: the commands run in a forked child that drops to it (the
interpreter lives under /root, which ``nobody`` may not enter, so it cannot be exec'ed as them).
Needs root, as CI runs.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from lecentral.cli.central import main

NOBODY = pwd.getpwnam("nobody")


def as_user(func: Callable[[], tuple[int, str]]) -> tuple[int, str]:
    """``func()`` (exit code, output) in a child process running as ``nobody``."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY.pw_gid)
            os.setuid(NOBODY.pw_uid)
            exit_code, output = func()
            os.write(write, f"{exit_code}\n{output}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, data
    first, _, rest = data.partition("\n")
    return int(first), rest


@pytest.fixture
def world() -> Iterator[Path]:
    """A directory ``nobody`` may enter (pytest's tmp_path lives below a root-only 0700 one)."""
    path = Path(tempfile.mkdtemp(prefix="lecentral-root-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def cli(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args])


def service_dir(tmp_path: Path) -> Path:
    """/var/lib/lecentral as tmpfiles.d makes it: the service user's, 0750."""
    state = tmp_path / "var-lib-lecentral"
    state.mkdir(mode=0o750)
    os.chown(state, NOBODY.pw_uid, NOBODY.pw_gid)
    return state


def test_root_init_leaves_the_database_to_the_service_user(world: Path) -> None:
    tmp_path = world
    state = service_dir(tmp_path)
    config = tmp_path / "lecentral.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{state}/lecentral.db"\n'
                      f'[acme]\naccount_key = "{state}/account.key"\n')
    config.chmod(0o644)
    assert cli(config, "init").exit_code == 0
    db = state / "lecentral.db"
    assert (db.stat().st_uid, db.stat().st_mode & 0o777) == (NOBODY.pw_uid, 0o600)

    def listing() -> tuple[int, str]:
        result = cli(config, "list", "--json")
        return result.exit_code, result.output

    code, output = as_user(listing)
    assert code == 0 and output.strip() == "[]", output


def test_a_database_left_to_root_says_whose_it_is(world: Path) -> None:
    tmp_path = world
    """The old trap: root's file in the service user's directory. The error names the owner,
    the user lecentral runs as and the chown; it no longer asks whether the server is up."""
    state = service_dir(tmp_path)
    config = tmp_path / "lecentral.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{state}/lecentral.db"\n')
    config.chmod(0o644)
    assert cli(config, "init").exit_code == 0
    db = state / "lecentral.db"
    os.chown(db, 0, 0)  # as an older lecentral, or a copy made by root, left it

    def listing() -> tuple[int, str]:
        result = cli(config, "list")
        return result.exit_code, result.output

    code, output = as_user(listing)
    assert code == 4, output
    assert f"{db} belongs to root:root mode 0600 and lecentral runs as nobody" in output
    assert f"chown lecentral: {db}" in output and "server is up" not in output


def test_root_made_account_key_belongs_to_the_service_user(world: Path) -> None:
    tmp_path = world
    from lecentral.acme.account import load_or_create

    state = service_dir(tmp_path)
    key = state / "account.key"
    load_or_create(str(key))  # what a first renew run by root does
    assert (key.stat().st_uid, key.stat().st_mode & 0o777) == (NOBODY.pw_uid, 0o600)


def test_files_root_makes_in_its_own_directories_stay_roots(tmp_path: Path) -> None:
    """Only a directory that belongs to another user hands files over: /etc/lecentral (root's)
    keeps root's files root's."""
    from lecentral.files_io import owner_for

    tmp_path.chmod(0o700)
    assert owner_for(str(tmp_path / "x")) == (0, 0)
    assert owner_for(str(service_dir(tmp_path) / "x")) == (NOBODY.pw_uid, NOBODY.pw_gid)
