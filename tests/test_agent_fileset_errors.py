"""The error branches of the journaled file-set switch (lecentral.install.fileset), each reached
through a real run: real files, FIFOs, sockets, directories, an immutable file, a full tmpfs
mounted over the state directory, a journal left by a crash (a real SIGKILL in a subprocess) or
written by hand. Each test asserts the operator's side too: exit 1, an alert, a message that
names the file and the next step, and nothing lost or half-written (the previous set in place or
put back, no temp file left, a journal the next run can finish or undo).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from _pytest.monkeypatch import MonkeyPatch
from agent_world import Mailbox, temp_files, tree
from lecentral_testing.agent import AgentWorld
from lecentral_testing.ports import free_port
from test_agent_safety import KILLER, NAME, assert_failed, installed_once, mounted

from lecentral.certificates import Certificate, Csr
from lecentral.errors import InstallError
from lecentral.files_io import temp_name
from lecentral.install.config import CertEntry
from lecentral.install.fileset import LocalFiles

OTHER = "other.example.test"


def workdir(world: AgentWorld, name: str = NAME, service: str = "files") -> Path:
    return world.state_dir / "entries" / f"{service}-{name}"


def journal_of(world: AgentWorld, name: str = NAME) -> Path:
    return workdir(world, name) / "journal.json"


def certs(world: AgentWorld) -> Path:
    return world.ssl / "certs"


def fingerprint(path: Path) -> str:
    return Certificate.load(path.read_bytes()).fingerprint


def database_fingerprint(world: AgentWorld, name: str = NAME) -> str:
    row = world.store.get(name)
    assert row is not None and row.crt
    return Certificate.load(row.crt).fingerprint


# -- a target that is not a regular file -------------------------------------------------------


@contextmanager
def planted(path: Path, kind: str) -> Iterator[None]:
    """Replace ``path`` by a FIFO or a listening UNIX socket (a directory: test_agent_safety)."""
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
        yield
        return
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    here = os.getcwd()
    os.chdir(path.parent)  # the absolute path is longer than a socket address may be
    try:
        sock.bind(path.name)
    finally:
        os.chdir(here)
    try:
        yield
    finally:
        sock.close()


KINDS = {"fifo": stat.S_ISFIFO, "socket": stat.S_ISSOCK}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_target_that_is_not_a_regular_file_is_refused(world: AgentWorld, smtp: tuple[Mailbox, int],
                                                      kind: str) -> None:
    """A FIFO (opened without blocking) or a socket (which cannot be opened) where the full chain
    goes: the run refuses before anything is written, names the path, and leaves the thing alone."""
    installed_once(world)
    full = certs(world) / f"{NAME}.full"
    with planted(full, kind):
        before = tree(world.ssl)
        message = str(assert_failed(world, before, str(full), smtp)["message"])
        assert f"{full} is not a regular file (a FIFO, a socket, a device?); refusing to replace it: " \
            "remove it, or point the configuration at another path" in message
        assert KINDS[kind](os.lstat(full).st_mode)
        assert not journal_of(world).exists()


def test_target_below_a_file_is_refused(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """``cert`` names a path below a regular file (a typo: ``www.crt/cert.pem``): the installed
    certificate cannot even be looked for (ENOTDIR); the message names the path, nothing is
    written."""
    before = installed_once(world)
    below = certs(world) / f"{NAME}.crt" / "cert.pem"
    world.write_config(world.entry(NAME, cert=str(below)))

    assert_failed(world, before, f"cannot read {below}: Not a directory", smtp)

    assert not journal_of(world).exists()


def test_missing_target_directory_is_refused(world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """The full chain's directory does not exist (not created, or unmounted): nothing is written,
    the message names the directory and says to create it; once created, the next run installs."""
    before = installed_once(world)
    gone = world.ssl / "gone"
    world.write_config(world.entry(NAME, fullchain=str(gone / f"{NAME}.full")))

    message = str(assert_failed(world, before, f"directory {gone}", smtp)["message"])

    assert "create it with the owner and mode the daemon needs" in message
    assert not journal_of(world).exists()
    gone.mkdir()
    assert world.run("run").by_name(NAME)["status"] == "installed"
    assert fingerprint(gone / f"{NAME}.full") == database_fingerprint(world)


# -- the journal cannot be written ---------------------------------------------------------------


def fill(directory: Path, leave_pages: int = 0) -> None:
    """Fill the file system of ``directory`` up to ``leave_pages`` free pages."""
    st = os.statvfs(directory)
    with open(directory / "filler", "wb", buffering=0) as filler:
        if leave_pages:
            filler.write(b"x" * ((st.f_bavail - leave_pages) * st.f_frsize))
            return
        try:
            while True:
                filler.write(b"x" * 4096)
        except OSError:
            pass  # full


@pytest.mark.parametrize("when", ["staging", "prepared", "switched"])
def test_journal_that_cannot_be_written(world: AgentWorld, smtp: tuple[Mailbox, int], monkeypatch: MonkeyPatch,
                                        when: str) -> None:
    """The state directory is a small tmpfs that is full: at once (the first journal write fails),
    or with room for the journal and the backups but not for the journal's next version (the
    temp files are written by then), or it fills up right after the renames (the moment chosen
    by wrapping fsync_dir in-process; the ENOSPC is real), before the journal says "switched".
    Each time the message names the journal and says to free space, every temp file is gone, the
    previous set is in place (untouched, or put back from this try's backup, which stays); once
    there is room the next run installs."""
    from lecentral.install import fileset

    world.state_dir.mkdir()
    with mounted(["-t", "tmpfs", "-o", "size=256k", "tmpfs"], world.state_dir):
        before = installed_once(world)
        backups = sorted((workdir(world) / "backups").iterdir())
        if when == "switched":
            real_fsync_dir = fileset.fsync_dir

            def fill_after_the_renames(path: str) -> None:
                real_fsync_dir(path)
                if path == str(certs(world)) and not (world.state_dir / "filler").exists():
                    fill(world.state_dir)

            monkeypatch.setattr(fileset, "fsync_dir", fill_after_the_renames)
        else:  # the journal (one page) and one page per file backed up (cert and fullchain change)
            fill(world.state_dir, leave_pages=0 if when == "staging" else 3)

        message = str(assert_failed(world, before, f"cannot write the journal {journal_of(world)}",
                                    smtp)["message"])

        assert "No space left on device" in message
        assert f"free space in (or repair) the file system of {workdir(world)}" in message
        assert {"staging": "run again", "prepared": "run again; nothing was changed",
                "switched": "run again; the previous files were put back"}[when] in message
        assert not journal_of(world).exists() and not temp_files(world.state_dir)
        now = sorted((workdir(world) / "backups").iterdir())
        assert now == backups if when != "switched" else now[:-1] == backups  # kept: the files put back
        monkeypatch.undo()
        (world.state_dir / "filler").unlink()
        out = world.run("run")
        assert out.by_name(NAME)["status"] == "installed", out.stderr
        assert fingerprint(certs(world) / f"{NAME}.full") == database_fingerprint(world)


# -- a journal that cannot be trusted ----------------------------------------------------------


def journal_for(world: AgentWorld, state: str, paths: list[Path], backup: Path) -> dict[str, object]:
    return {"state": state, "backup": str(backup), "files": [
        {"role": "cert", "path": str(p), "temp": temp_name(str(p)), "existed": True, "sha256": "0" * 64}
        for p in paths]}


def corrupt_journal(world: AgentWorld, how: str) -> str:
    """Write a bad journal for NAME; return the words the refusal must contain."""
    cert = certs(world) / f"{NAME}.crt"
    own_backup = workdir(world) / "backups" / "000009-20250101T000000Z"
    if how == "truncated":
        text = json.dumps(journal_for(world, "prepared", [cert], own_backup))
        journal_of(world).write_text(text[:len(text) // 2])
        return "is unreadable"
    if how == "not-a-journal":
        journal_of(world).write_text("[]")
        return "is not a journal"
    if how == "unknown-state":
        journal_of(world).write_text(json.dumps(journal_for(world, "switching", [cert], own_backup)))
        return "has unknown state 'switching'"
    if how == "other-entry":  # the other entry's certificate, restored from NAME's backups
        other = certs(world) / f"{OTHER}.crt"
        journal_of(world).write_text(json.dumps(journal_for(world, "restoring", [other], own_backup)))
        return f"names '{other}', which is not a file of {NAME}"
    if how == "foreign-temp":  # a "temp file" that is another entry's certificate
        bad = journal_for(world, "staging", [cert], own_backup)
        bad["files"][0]["temp"] = str(certs(world) / f"{OTHER}.crt")  # type: ignore[index]
        journal_of(world).write_text(json.dumps(bad))
        return f"names '{cert}', which is not a file of {NAME} (or not with its own temp file)"
    if how == "malformed-file":
        bad = journal_for(world, "prepared", [cert], own_backup)
        bad["files"] = [str(cert)]
        journal_of(world).write_text(json.dumps(bad))
        return f"names '{cert}', which is not a file of {NAME}"
    if how == "foreign-retire":  # the commit would remove a "KEY.next" that is another file
        bad = journal_for(world, "switched", [cert], own_backup)
        bad["retire"] = str(certs(world) / f"{OTHER}.crt")
        journal_of(world).write_text(json.dumps(bad))
        return f"retires '{certs(world) / f'{OTHER}.crt'}', not {world.key_path(NAME)}.next"
    assert how == "foreign-backup"  # abandoning it would delete the certificate directory
    journal_of(world).write_text(json.dumps(journal_for(world, "staging", [cert], certs(world))))
    return f"names the backup '{certs(world)}'"


@pytest.mark.parametrize("how", ["truncated", "not-a-journal", "unknown-state", "other-entry",
                                 "foreign-temp", "foreign-backup", "malformed-file", "foreign-retire"])
def test_journal_that_cannot_be_trusted_is_left_to_the_operator(world: AgentWorld, smtp: tuple[Mailbox, int],
                                                                how: str) -> None:
    """A journal that is truncated, not a journal, in an unknown state, or that names files,
    temp files or a backup directory that are not this entry's own: nothing is done with it (an
    abandon would delete its "temp files" and "backup", a rollback would overwrite its "files"),
    the alert names the journal and says what to do; the other entry is installed as usual. Once
    the operator has deleted the journal, the next run installs."""
    for name in (NAME, OTHER):
        world.add(name)
        world.issue(name, days=30)
    world.write_config(world.entry(NAME), world.entry(OTHER))
    assert world.run("run").exit_code == 0
    for name in (NAME, OTHER):
        world.issue(name, days=60)
    words = corrupt_journal(world, how)
    journal = journal_of(world).read_bytes()
    before = tree(world.ssl)

    out = world.run("run")

    result = out.by_name(NAME)
    assert out.exit_code == 1 and result["status"] == "failed", result
    assert f"journal {journal_of(world)} " in result["message"] and words in result["message"], result
    assert "check the files of" in result["message"] and "then delete the journal" in result["message"]
    assert journal_of(world).read_bytes() == journal
    assert out.by_name(OTHER)["status"] == "installed"
    other_files = {k: v for k, v in tree(world.ssl).items() if OTHER in k}
    assert {k: v for k, v in tree(world.ssl).items() if OTHER not in k} == \
        {k: v for k, v in before.items() if OTHER not in k}
    assert fingerprint(certs(world) / f"{OTHER}.full") == database_fingerprint(world, OTHER)
    assert any(f"{NAME}: NOT installed" in s for s in smtp[0].subjects())
    dry = world.run("run", "--dry-run")
    assert dry.exit_code == 1 and words in dry.by_name(NAME)["message"]

    journal_of(world).unlink()
    assert world.run("run").by_name(NAME)["status"] == "installed"
    assert fingerprint(certs(world) / f"{NAME}.full") == database_fingerprint(world)
    assert {k: v for k, v in tree(world.ssl).items() if OTHER in k} == other_files


# -- copies (Postfix's chroot) --------------------------------------------------------------------


def test_chroot_copy_over_one_of_the_entrys_own_files_is_refused(world: AgentWorld,
                                                                 smtp: tuple[Mailbox, int]) -> None:
    """postfix with options.chroot: the copy of ``cert`` inside the chroot would be the path of
    the entry's own ``chain``: two roles for one file. Refused before anything is written."""
    queue = world.workdir / "spool"
    chain = queue / str(certs(world) / f"{NAME}.crt").lstrip("/")
    chain.parent.mkdir(parents=True)
    world.add(NAME)
    world.issue(NAME)
    world.write_config(world.entry(NAME, service="postfix", chain=str(chain), check="true",
                                   reload="true", options={"chroot": True, "queue_directory": str(queue)}))
    before = tree(world.ssl)

    out = world.run("run")

    result = out.by_name(NAME)
    assert out.exit_code == 1 and result["status"] == "failed", result
    assert f"copy path {chain} must be absolute and not one of the entry's own files" in result["message"]
    assert tree(world.ssl) == before and not chain.exists()
    assert any(f"{NAME}: NOT installed" in s for s in smtp[0].subjects())


def test_copies_a_plugin_asks_for_are_checked(tmp_path: Path) -> None:
    """The ``copies`` of the plugin API (what ChrootFiles passes): a copy of a role the entry
    does not write, or a relative path, is a plugin's bug, refused at once with its name."""
    entry = CertEntry(name=NAME, key=str(tmp_path / "k"), cert=str(tmp_path / "c"))
    with pytest.raises(InstallError, match=f"{NAME}: copy /x/chain of 'chain', which this entry does not"):
        LocalFiles(entry, tmp_path, 3, {"/x/chain": "chain"})
    with pytest.raises(InstallError, match="copy path x/cert must be absolute"):
        LocalFiles(entry, tmp_path, 3, {"x/cert": "cert"})
    assert LocalFiles(entry, tmp_path, 3, {"/x/key": "key"}).targets()[-1] == ("key.copy1", "/x/key", "key")


# -- a rename that fails ------------------------------------------------------------------------


def test_rename_that_fails_puts_back_the_files_already_renamed(world: AgentWorld,
                                                               smtp: tuple[Mailbox, int]) -> None:
    """The full chain is immutable (chattr +i: an admin protecting it): reading it, backing it up
    and writing its temp file work, its rename does not. The certificate, renamed just before,
    is put back; the message names the full chain (not its temp file) and the next step; the
    next run, once the flag is gone, installs."""
    before = installed_once(world)
    full = certs(world) / f"{NAME}.full"
    subprocess.run(["chattr", "+i", str(full)], check=True)
    try:
        message = str(assert_failed(world, before, f"cannot rename the new file into {full}: "
                                                   "Operation not permitted", smtp)["message"])
    finally:
        subprocess.run(["chattr", "-i", str(full)], check=True)

    assert "the previous files were put back; fix that (is it immutable, lsattr?" in message
    assert ".lecentral-" not in message
    assert not journal_of(world).exists()
    assert world.run("run").by_name(NAME)["status"] == "installed"
    assert fingerprint(full) == fingerprint(certs(world) / f"{NAME}.crt") == database_fingerprint(world)


# -- runs killed (SIGKILL) at a chosen moment, finished by the next run ---------------------------


AGENT = """
import os, signal, sys
journal = sys.argv[1]
{hook}
from lecentral.cli.agent import main
sys.argv = ["lecentral-install", *sys.argv[2:]]
main()
"""

# the power cut right after the first file was put back by a rollback
DIE_WHILE_RESTORING = """
real_replace = os.replace
def replace_then_die(src, dst, *a, **k):
    real_replace(src, dst, *a, **k)
    if not str(dst).startswith(os.path.dirname(journal)) and '"restoring"' in open(journal).read():
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace_then_die
"""

# the power cut right after the commit removed a rotation's KEY.next
DIE_AFTER_RETIRING = """
real_unlink = os.unlink
def unlink_then_die(path, *a, **k):
    real_unlink(path, *a, **k)
    if str(path).endswith(".key.next"):
        os.kill(os.getpid(), signal.SIGKILL)
os.unlink = unlink_then_die
"""


def killed_run(world: AgentWorld, hook: str = "") -> None:
    """``lecentral-install run`` in a subprocess that dies by SIGKILL (the moment is chosen by
    ``hook``, wrapping one os function, or by the entry's own reload command)."""
    killed = subprocess.run([sys.executable, "-c", AGENT.format(hook=hook), str(journal_of(world)),
                             "--config", str(world.config_path), "run"],
                            capture_output=True, text=True, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr


def test_killed_while_rolling_back_the_next_run_finishes_the_rollback(world: AgentWorld,
                                                                      smtp: tuple[Mailbox, int]) -> None:
    """The config test fails, the rollback has put back the certificate but not yet the full
    chain when the run dies. The next run finds the certificate already restored, restores the
    rest, reloads, and alerts "rolled back": the previous set, byte for byte."""
    reloads = world.workdir / "reloads"
    before = installed_once(world, reload=f"sh -c 'echo reload >> {reloads}'")
    world.write_config(world.entry(NAME, check="sh -c 'echo bad config >&2; exit 1'",
                                   reload=f"sh -c 'echo reload >> {reloads}'"))

    killed_run(world, DIE_WHILE_RESTORING)

    assert fingerprint(certs(world) / f"{NAME}.crt") != database_fingerprint(world)  # put back
    assert fingerprint(certs(world) / f"{NAME}.full") == database_fingerprint(world)  # not yet
    assert json.loads(journal_of(world).read_text())["state"] == "restoring"
    world.write_config(world.entry(NAME, reload=f"sh -c 'echo reload >> {reloads}'"))
    smtp[0].messages.clear()

    out = world.run("run")

    result = out.by_name(NAME)
    assert out.exit_code == 1 and result["status"] == "rolled-back", result
    assert "interrupted while rolling back" in result["message"]
    assert tree(world.ssl) == before and not temp_files(world.ssl)
    assert not journal_of(world).exists()
    assert reloads.read_text().count("reload") == 2
    assert any(f"{NAME}: install failed, rolled back" in s for s in smtp[0].subjects())
    assert world.run("run").by_name(NAME)["status"] == "installed"  # the row is still newer


def test_killed_by_its_reload_the_next_run_finishes_the_install(world: AgentWorld) -> None:
    """The reload kills the agent (journal "switched", nothing committed): the next run does not
    switch again; it runs the config test, the reload and commits."""
    reloads = world.workdir / "reloads"
    installed_once(world)
    world.write_config(world.entry(NAME, reload="sh -c 'kill -KILL $PPID'"))

    killed_run(world)

    assert json.loads(journal_of(world).read_text())["state"] == "switched"
    world.write_config(world.entry(NAME, reload=f"sh -c 'echo reload >> {reloads}'"))
    out = world.run("run")

    result = out.by_name(NAME)
    assert out.exit_code == 0 and result["status"] == "installed", result
    assert "finishing an interrupted install" in result["message"]
    assert reloads.read_text() == "reload\n"
    assert fingerprint(certs(world) / f"{NAME}.full") == database_fingerprint(world)
    assert not journal_of(world).exists() and not temp_files(world.ssl)


def test_killed_by_the_reload_after_a_rollback_the_next_run_activates_the_old_set(
        world: AgentWorld, smtp: tuple[Mailbox, int]) -> None:
    """Verification fails, the previous files are put back (journal "restored") and the second
    reload kills the agent: the next run reloads the previous set and alerts "rolled back"."""
    marker = world.workdir / "reloaded-once"
    before = installed_once(world)
    nobody = f"https://127.0.0.1:{free_port()}/"
    world.write_config(world.entry(NAME, verify=[nobody], verify_timeout=1,
                                   reload=f"sh -c 'test -e {marker} && kill -KILL $PPID; touch {marker}'"))

    killed_run(world)

    assert json.loads(journal_of(world).read_text())["state"] == "restored"
    assert tree(world.ssl) == before
    world.write_config(world.entry(NAME, reload="true"))
    smtp[0].messages.clear()
    out = world.run("run")

    result = out.by_name(NAME)
    assert out.exit_code == 1 and result["status"] == "rolled-back", result
    assert "the previous files are back and activated" in result["message"]
    assert tree(world.ssl) == before and not journal_of(world).exists()
    assert any(f"{NAME}: install failed, rolled back" in s for s in smtp[0].subjects())


def test_killed_between_renames_with_a_temp_file_gone_is_not_left_mixed(world: AgentWorld) -> None:
    """Killed after the certificate was renamed; then the full chain's temp file is deleted (a
    temp cleaner, an operator tidying up) before the next run. That set cannot be finished: the
    next run puts the previous files back and installs afresh from the database, so certificate
    and full chain agree (it used to finish "installed" with the old full chain in place)."""
    installed_once(world)
    killed = subprocess.run([sys.executable, "-c", KILLER, str(certs(world)), "--config",
                             str(world.config_path), "run"], capture_output=True, text=True, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert json.loads(journal_of(world).read_text())["state"] == "prepared"
    for temp in temp_files(world.ssl):
        os.unlink(temp)

    out = world.run("run")

    result = out.by_name(NAME)
    assert out.exit_code == 0 and result["status"] == "installed", result
    assert "cannot be finished (temp file gone); putting the previous files back" in out.stderr
    assert fingerprint(certs(world) / f"{NAME}.full") == database_fingerprint(world)
    assert fingerprint(certs(world) / f"{NAME}.crt") == database_fingerprint(world)
    assert not journal_of(world).exists() and not temp_files(world.ssl)
    assert world.run("run").by_name(NAME)["status"] == "up-to-date"


# -- the private key -------------------------------------------------------------------------------


def test_key_gone_between_the_check_and_the_write(world: AgentWorld, smtp: tuple[Mailbox, int],
                                                  monkeypatch: MonkeyPatch) -> None:
    """The combined file holds the key; the key is moved away (another tool, an operator) after
    the pre-check read it and before the set is planned. The moment is chosen by wrapping the
    engine's precheck in-process; the failure is real (no such file). Nothing is written, the
    message names the key."""
    from lecentral.install import decide, engine

    combined = world.ssl / "private" / f"{NAME}.pem"
    before = installed_once(world, combined=str(combined))
    key = world.key_path(NAME)
    real_precheck = decide.precheck

    def precheck_then_move_the_key(*args: object, **kwargs: object) -> object:
        checked = real_precheck(*args, **kwargs)  # type: ignore[arg-type]
        key.rename(world.workdir / "moved.key")
        return checked

    monkeypatch.setattr(engine, "precheck", precheck_then_move_the_key)
    before.pop(f"private/{NAME}.key")

    assert_failed(world, before, f"cannot read private key {key}: No such file or directory", smtp)

    assert not journal_of(world).exists()
    assert (world.workdir / "moved.key").exists()


def stage_rotation(world: AgentWorld, how: str = "--rotate") -> Path:
    """csr --rotate (KEY.next), its CSR set on "the central host" and a certificate issued for it."""
    key = world.key_path(NAME)
    csr_file = world.workdir / "rotated.csr"
    made = world.run("csr", NAME, "--key", str(key), how, "--out", str(csr_file))
    assert made.exit_code == 0, made.stderr
    csr = Csr.load(csr_file.read_bytes())
    world.store.set_csr(NAME, csr.pem, csr.md5_modulus)
    world.issue(NAME, days=60)
    return key.with_name(f"{NAME}.key.next")


def test_rotation_with_the_live_key_gone_takes_the_new_keys_mode(world: AgentWorld) -> None:
    """A staged rotation whose live key was deleted: the new key goes in with its own owner and
    mode (0600), KEY.next goes, key and certificate agree."""
    installed_once(world)
    pending = stage_rotation(world)
    new_key = pending.read_bytes()
    world.key_path(NAME).unlink()

    out = world.run("run")

    assert out.by_name(NAME)["status"] == "installed", out.stderr
    key = world.key_path(NAME)
    assert key.read_bytes() == new_key and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not pending.exists()
    assert world.run("run").by_name(NAME)["status"] == "up-to-date"


def test_killed_after_retiring_the_new_key_the_next_run_commits(world: AgentWorld) -> None:
    """Killed right after the commit removed KEY.next, before the journal went: the next run
    finishes (KEY.next already gone is fine) and installs nothing twice."""
    installed_once(world)
    pending = stage_rotation(world)
    new_key = pending.read_bytes()

    killed_run(world, DIE_AFTER_RETIRING)

    assert not pending.exists() and journal_of(world).exists()
    out = world.run("run")

    result = out.by_name(NAME)
    assert result["status"] == "installed" and "finishing an interrupted install" in result["message"]
    assert world.key_path(NAME).read_bytes() == new_key
    assert not journal_of(world).exists()
    assert world.run("run").by_name(NAME)["status"] == "up-to-date"


@pytest.mark.parametrize("how", ["rotated-again", "symlink"])
def test_key_next_changed_before_the_commit_is_left_alone(world: AgentWorld, how: str) -> None:
    """Killed after the switch of a rotation (by its reload); before the next run KEY.next is made
    again (csr --force) or replaced by a symbolic link. The next run finishes the install and
    leaves that KEY.next alone, with a warning: it is not the key now in place."""
    installed_once(world)
    pending = stage_rotation(world)
    new_key = pending.read_bytes()
    world.write_config(world.entry(NAME, reload="sh -c 'kill -KILL $PPID'"))
    killed_run(world)
    assert json.loads(journal_of(world).read_text())["state"] == "switched"
    if how == "rotated-again":
        made = world.run("csr", NAME, "--key", str(world.key_path(NAME)), "--force",
                         "--out", str(world.workdir / "again.csr"))
        assert made.exit_code == 0, made.stderr
        words = "is not the key now in"
    else:
        pending.unlink()
        pending.symlink_to(world.key_path(NAME))
        words = "is a symbolic link"
    left = pending.read_bytes()
    world.write_config(world.entry(NAME, reload="true"))

    out = world.run("run")

    assert out.by_name(NAME)["status"] == "installed", out.stderr
    assert words in out.stderr and f"{pending}" in out.stderr
    assert world.key_path(NAME).read_bytes() == new_key
    assert os.path.lexists(pending) and pending.read_bytes() == left
    assert not journal_of(world).exists()


def test_installer_api_refuses_out_of_order_calls(world: AgentWorld) -> None:
    """The Installer API as a service plugin (or the engine) calls it: ``restore`` with no
    switched set, and ``install`` over an unfinished journal, are refused with the journal's
    path; the journal is left for ``recover``. (The engine never calls them so: this is the
    guard for plugins that drive LocalFiles themselves.)"""
    from lecentral.interfaces import IssuedCertificate

    installed_once(world)
    entry = CertEntry(name=NAME, key=str(world.key_path(NAME)), cert=str(certs(world) / f"{NAME}.crt"))
    files = LocalFiles(entry, workdir(world), 3)
    with pytest.raises(InstallError, match=f"nothing to roll back .*{journal_of(world)}"):
        files.restore()
    journal = journal_for(world, "prepared", [certs(world) / f"{NAME}.crt"],
                          workdir(world) / "backups" / "000009-20250101T000000Z")
    journal_of(world).write_text(json.dumps(journal))
    with pytest.raises(InstallError, match=f"{journal_of(world)} exists: an earlier run is unfinished"):
        files.install(IssuedCertificate(crt=b"", ca=b""))
    assert json.loads(journal_of(world).read_text()) == journal
