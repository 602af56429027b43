"""Every way an install can go wrong: refused before anything is touched, or undone completely.

Each test asserts the clear error AND that nothing was lost or half-written (the file tree is
byte-for-byte, mode and owner the same; no temp file is left). Read-only directories and full
file systems are real mounts (a read-only bind mount, a 64 KiB tmpfs): the tests run as root.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from agent_world import Mailbox, temp_files, tree
from lecentral_testing.agent import AgentWorld, TestCA
from lecentral_testing.ports import free_port
from sqlalchemy import text

from lecentral.certificates import Certificate
from lecentral.install.csr import build_csr, load_key

NAME = "www.example.test"


def installed_once(world: AgentWorld, key: str = "rsa2048",
                   **entry: object) -> dict[str, tuple[bytes, int, int, int]]:
    """Install a first certificate, queue a newer one in the database; return the file tree."""
    world.add(NAME, key=key)
    world.issue(NAME, days=30)
    world.write_config(world.entry(NAME, **entry))
    out = world.run("run")
    assert out.by_name(NAME)["status"] == "installed", out.stderr
    world.issue(NAME, days=60)
    return tree(world.ssl)


def assert_failed(world: AgentWorld, before: dict[str, tuple[bytes, int, int, int]], words: str,
                  smtp: tuple[Mailbox, int], status: str = "failed") -> dict[str, object]:
    out = world.run("run")
    assert out.exit_code == 1, out.stdout + out.stderr
    result = out.by_name(NAME)
    assert result["status"] == status, result
    assert words in result["message"], result["message"]
    assert tree(world.ssl) == before
    assert not temp_files(world.ssl)
    assert any(NAME in s and ("NOT installed" in s or "rolled back" in s) for s in smtp[0].subjects())
    return result


@pytest.mark.parametrize("kind", ["rsa2048", "ec256"])
def test_key_mismatch_installs_nothing(world: AgentWorld, smtp: tuple[Mailbox, int], kind: str) -> None:
    """The certificate in the database was made for another key: nothing written, alert."""
    before = installed_once(world, key=kind)
    # the server's key was replaced by another of the same type, the central CSR was not
    other = world.workdir / "other.key"
    world.add("other.example.test", key=kind, key_path=other)
    world.write_config(world.entry(NAME, key=str(other)))
    result = assert_failed(world, before, "does not match the private key", smtp)
    assert str(other) in str(result["message"])
    assert "lecentral-install csr" in str(result["message"])
    status = world.run("status", "--json")  # says what the run will do: refuse, not "to install"
    (row,) = json.loads(status.stdout)["certs"]
    assert status.exit_code == 1 and "the next run will refuse it" in row["error"], row
    assert "does not match the private key" in row["error"]


def test_certificate_for_another_name_is_refused(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    before = installed_once(world)
    key = load_key(world.key_path(NAME))
    crt = world.ca.sign(build_csr(["other.example.test"], key).pem, days=60)
    world.issue(NAME, crt=crt, ca=world.ca.pem)
    assert_failed(world, before, "is for other.example.test, not www.example.test", smtp)


def test_chain_that_does_not_verify_is_refused(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    before = installed_once(world)
    row = world.store.get(NAME)
    assert row is not None
    world.issue(NAME, crt=TestCA("rogue").sign(row.csr, days=60), ca=world.ca.pem)
    assert_failed(world, before, "is not issued by", smtp)


def test_altered_row_is_refused(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """md5_ca that does not match the ca column: the row was tampered with or half-written."""
    before = installed_once(world)
    with world.store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("UPDATE certs SET md5_ca = :v WHERE name = :n"), {"v": "0" * 32, "n": NAME})
    assert_failed(world, before, "md5_ca", smtp)


def test_invalid_row_is_refused(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """Everything read from the database is validated (CertRow.problems) before acting on it."""
    before = installed_once(world)
    with world.store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(text("UPDATE certs SET md5_modulus = 'not-hex' WHERE name = :n"), {"n": NAME})
    assert_failed(world, before, "column md5_modulus is 'not-hex'", smtp)


def test_symlink_at_a_target_is_refused(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """A link planted at a target path is never followed nor replaced; nothing else is written."""
    before = installed_once(world)
    victim = world.workdir / "victim"
    victim.write_text("precious\n")
    full = world.ssl / "certs" / f"{NAME}.full"
    full.unlink()
    full.symlink_to(victim)
    before = {k: v for k, v in tree(world.ssl).items()}
    result = assert_failed(world, before, "is a symbolic link", smtp)
    assert str(full) in str(result["message"])
    assert victim.read_text() == "precious\n" and full.is_symlink()


@pytest.mark.parametrize("role", ["crt", "full"])
def test_directory_at_a_target_is_refused(world: AgentWorld, smtp: tuple[Mailbox, int],
                                          role: str) -> None:
    """A directory where a file should be (a path naming the directory, or one created by
    mistake) is named in the error, not reported as "6: Is a directory"; nothing is written."""
    installed_once(world)
    target = world.ssl / "certs" / f"{NAME}.{role}"
    target.unlink()
    target.mkdir()
    (target / "inside").write_text("kept\n")
    before = tree(world.ssl)
    assert_failed(world, before, f"{target} is a directory; the configuration must name the file "
                  "itself", smtp)
    assert (target / "inside").read_text() == "kept\n"


def test_full_state_directory_names_the_backup(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """The state directory (backups) is full: the backup file is named, the old set stays."""
    installed_once(world)
    with mounted(["-t", "tmpfs", "-o", "size=64k", "tmpfs"], world.state_dir):
        world.state_dir.chmod(0o700)
        (world.state_dir / "entries").mkdir(mode=0o700)
        with open(world.state_dir / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"x" * 512)
            except OSError:
                pass  # full
        filler_path = world.state_dir / "filler"
        os.truncate(filler_path, filler_path.stat().st_size - 4096)  # the journal's page, no more
        before = tree(world.ssl)
        result = assert_failed(world, before, "No space left on device", smtp)
        assert f"cannot write {world.state_dir}/entries/files-{NAME}/backups/" in \
            str(result["message"]), result["message"]


@contextmanager
def mounted(args: list[str], where: Path) -> Iterator[None]:
    subprocess.run(["mount", *args, str(where)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_read_only_directory(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """The certificate directory is a read-only mount: the old files stay, no temp file is left."""
    before = installed_once(world)
    certs = world.ssl / "certs"
    subprocess.run(["mount", "--bind", str(certs), str(certs)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(certs)], check=True)
        assert_failed(world, before, "Read-only file system", smtp)
    finally:
        subprocess.run(["umount", str(certs)], check=True)
    assert tree(world.ssl) == before


def test_full_file_system(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """A 64 KiB tmpfs that fills up while the new files are written: old set intact, temps gone."""
    certs = world.ssl / "certs"
    with mounted(["-t", "tmpfs", "-o", "size=64k", "tmpfs"], certs):
        before = installed_once(world)
        with open(certs / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"x" * 512)
            except OSError:
                pass  # full
        before = tree(world.ssl)
        result = assert_failed(world, before, "No space left on device", smtp)
        # the target whose temp file could not be written, not a bare errno
        assert f"cannot write {certs / NAME}.crt (temp file .{NAME}.crt.lecentral-" in \
            str(result["message"]), result["message"]


KILLER = """
import os, signal, sys
target_dir = sys.argv[1]
real_replace = os.replace
def replace_then_die(src, dst, *a, **k):
    real_replace(src, dst, *a, **k)
    if str(dst).startswith(target_dir):
        os.kill(os.getpid(), signal.SIGKILL)  # the power cut, right after the first target file
os.replace = replace_then_die
from lecentral.cli.agent import main
sys.argv = ["lecentral-install", *sys.argv[2:]]
main()
"""


def test_killed_between_files_is_repaired_by_the_next_run(world: AgentWorld) -> None:
    """SIGKILL right after the first file was renamed into place (the process really dies; only
    the moment is chosen, by wrapping os.replace): the next run finishes the set and reloads."""
    reloads = world.workdir / "reloads"
    installed_once(world, reload=f"sh -c 'echo reload >> {reloads}'")
    new = Certificate.load(world.store.get(NAME).crt)  # type: ignore[union-attr]
    certs = world.ssl / "certs"

    killed = subprocess.run([sys.executable, "-c", KILLER, str(certs), "--config",
                             str(world.config_path), "run"], capture_output=True, text=True, check=False)

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    cert_now = Certificate.load((certs / f"{NAME}.crt").read_bytes())
    full_now = Certificate.load((certs / f"{NAME}.full").read_bytes())
    assert cert_now.fingerprint == new.fingerprint and full_now.fingerprint != new.fingerprint  # a mix
    assert temp_files(certs)  # the full chain's temp file is still waiting

    out = world.run("run")

    result = out.by_name(NAME)
    assert result["status"] == "installed" and "interrupted" in result["message"], result
    assert Certificate.load((certs / f"{NAME}.full").read_bytes()).fingerprint == new.fingerprint
    assert reloads.read_text().count("reload") == 2
    assert not temp_files(certs)
    assert not (world.state_dir / "entries" / f"files-{NAME}" / "journal.json").exists()
    assert world.run("run").by_name(NAME)["status"] == "up-to-date"


def test_killed_while_writing_temp_files_leaves_the_old_set(world: AgentWorld) -> None:
    """SIGKILL after the first temp file was written: the old set is untouched; the next run
    removes the temp file and installs normally."""
    before = installed_once(world)
    certs = world.ssl / "certs"
    script = KILLER.replace("real_replace(src, dst, *a, **k)\n    if str(dst)",
                            "real_replace(src, dst, *a, **k)\n    if False and str(dst)")
    script = script.replace("os.replace = replace_then_die", """os.replace = replace_then_die
import lecentral.install.fileset as fs
real_write = fs.write_new
def write_then_die(path, *a, **k):
    real_write(path, *a, **k)
    if path.startswith(target_dir):
        os.kill(os.getpid(), signal.SIGKILL)
fs.write_new = write_then_die""")
    killed = subprocess.run([sys.executable, "-c", script, str(certs), "--config",
                             str(world.config_path), "run"], capture_output=True, text=True, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert {k: v for k, v in tree(world.ssl).items() if ".lecentral-" not in k} == before

    out = world.run("run")

    assert out.by_name(NAME)["status"] == "installed"
    assert not temp_files(certs)


def test_owner_and_mode_are_kept_or_applied(world: AgentWorld) -> None:
    """Without owner/group/mode in the entry, each file keeps what it had (backups too), except
    that a key-bearing file is narrowed to 0640; with them, they are applied (a mode too wide
    for any file of the entry is refused by the configuration check, tests/test_agent_config.py)."""
    world.add(NAME)
    world.issue(NAME, days=30)
    certs = world.ssl / "certs"
    combined = world.ssl / "private" / f"{NAME}.pem"
    for path, mode in ((certs / f"{NAME}.crt", 0o640), (certs / f"{NAME}.full", 0o604),
                       (combined, 0o644)):
        path.write_text("placeholder\n")
        os.chown(path, 65534, 65534)
        os.chmod(path, mode)
    world.write_config(world.entry(NAME, combined=str(combined)))
    out = world.run("run")
    assert out.by_name(NAME)["status"] == "installed"
    assert "combined holds the private key: mode 0644 narrowed to 0640" in out.stderr
    for path, mode in ((certs / f"{NAME}.crt", 0o640), (certs / f"{NAME}.full", 0o604),
                       (combined, 0o640)):
        st = path.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, mode), path
    backup = next((world.state_dir / "entries" / f"files-{NAME}" / "backups").iterdir())
    st = (backup / "fullchain").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o604)
    assert (backup / "fullchain").read_text() == "placeholder\n"

    world.issue(NAME, days=60)
    world.write_config(world.entry(NAME, combined=str(combined), owner="root", group="nogroup",
                                   mode="0640"))
    out = world.run("run")
    assert out.by_name(NAME)["status"] == "installed"
    for path, mode in ((certs / f"{NAME}.crt", 0o640), (combined, 0o640)):
        st = path.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 65534, mode), path


def test_config_test_failure_rolls_back_before_any_reload(world: AgentWorld,
                                                         smtp: tuple[Mailbox, int]) -> None:
    """``check`` fails with the new files: they are taken back, the reload never runs."""
    reloads = world.workdir / "reloads"
    broken = world.workdir / "broken"
    before = installed_once(world, check=f"sh -c 'if test -e {broken}; then echo broken config >&2; "
                                          "exit 3; fi'",
                            reload=f"sh -c 'echo reload >> {reloads}'")
    broken.touch()  # the daemon's config broke since the first install
    reloads.unlink()
    result = assert_failed(world, before, "broken config", smtp, status="rolled-back")
    assert "exited with status 3" in str(result["message"])
    assert not reloads.exists()


def test_database_down(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """Nothing listens where the database should be: retried (a server restarting refuses
    connections too) for ``[database] retry_for``, then an alert, exit 4, every file untouched,
    and the database password appears nowhere."""
    before = installed_once(world)
    port = free_port()
    url = f"mysql+pymysql://reader:s3cr3t-pw@127.0.0.1:{port}/certs"
    world.database = {"retry_for": 1, "retry_delay": 0.2}
    world.write_config(world.entry(NAME), database=url)

    out = world.run("run")

    assert out.exit_code == 4
    assert "cannot read" not in out.stdout and "127.0.0.1" in out.stderr
    assert "retry 1 in" in out.stderr  # the retry is logged ...
    assert f"the server 127.0.0.1:{port} stayed unavailable" in out.stderr  # ... and given up
    assert "retry_for = 1 s" in out.stderr
    assert tree(world.ssl) == before
    assert any("cannot read the certificate database" in s for s in smtp[0].subjects())
    assert "s3cr3t-pw" not in out.stdout + out.stderr + smtp[0].bodies()


def test_activation_failing_even_after_rollback(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """First install, and the reload fails whatever the files: the new files are removed again
    (there was nothing before) and the alert says the rollback did not end well."""
    world.add(NAME)
    world.issue(NAME)
    world.write_config(world.entry(NAME, reload="sh -c 'echo daemon is dead >&2; exit 1'"))

    out = world.run("run")

    result = out.by_name(NAME)
    assert out.exit_code == 1 and result["status"] == "rollback-failed", result
    assert "daemon is dead" in result["message"] and "the previous files were put back" in \
        result["message"]
    assert list((world.ssl / "certs").iterdir()) == []
    assert any("ROLLBACK FAILED" in s for s in smtp[0].subjects())


def test_rollback_that_cannot_write_is_finished_by_the_next_run(world: AgentWorld,
                                                                smtp: tuple[Mailbox, int]) -> None:
    """The reload fails AND leaves the directory read-only, so the previous files cannot be put
    back: the alert says where the backup is; once the directory is writable again the next run
    finishes the rollback from its journal and reloads."""
    certs = world.ssl / "certs"
    reloads = world.workdir / "reloads"
    installed_once(world, reload=f"sh -c 'echo reload >> {reloads}'")
    before = tree(world.ssl)
    subprocess.run(["mount", "--bind", str(certs), str(certs)], check=True)
    try:
        world.write_config(world.entry(NAME, reload=f"sh -c 'mount -o remount,ro,bind {certs}; "
                                                          "exit 1'"))
        out = world.run("run")
    finally:
        subprocess.run(["umount", str(certs)], check=True)

    result = out.by_name(NAME)
    assert result["status"] == "rollback-failed", result
    assert "ROLLBACK FAILED" in result["message"] and "copy them back by hand" in result["message"]
    assert tree(world.ssl) != before  # the new files are still there
    world.write_config(world.entry(NAME, reload=f"sh -c 'echo reload >> {reloads}'"))

    out = world.run("run", NAME)

    result = out.by_name(NAME)
    assert result["status"] == "rolled-back" and "interrupted while rolling back" in result["message"]
    assert tree(world.ssl) == before
    assert reloads.read_text().count("reload") == 2
    assert not temp_files(world.ssl)


def test_missing_sqlite_file_is_never_created(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """A typo in the SQLite path: exit 4 and an alert naming the file; no empty database is made
    (which would read as "no such certificate" forever after)."""
    before = installed_once(world)
    typo = world.workdir / "lecentral.dbb"
    world.write_config(world.entry(NAME), database=f"sqlite:///{typo}")

    out = world.run("run")

    assert out.exit_code == 4, out.stdout + out.stderr
    assert f"database file {typo} does not exist; check [database] url" in out.stderr
    assert not typo.exists()
    assert tree(world.ssl) == before
    assert any("cannot read the certificate database" in s for s in smtp[0].subjects())
    bodies = "".join(m.get_payload(decode=True).decode() for m in smtp[0].messages)
    assert f"database file {typo} does not exist" in bodies
