"""The console scripts leave without the interpreter's teardown (lecentral/cli/quickexit.py),
and that is invisible: the same exit status, the same stdout and stderr (to a pipe, to a file),
the same files written, as a normal exit; and where it would not be the same (a thread still
running, a file still open, a broken pipe), the normal exit runs.

Each case runs twice in a fresh interpreter: once through :func:`lecentral.cli.quickexit.run`
and once calling the command itself (Python's normal exit), and the two are compared. The
quick run's ``os._exit`` is wrapped to say on stderr that it was taken (``QUICK <status>``), so
a test also knows which way the process left.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import IO, Any

import pytest
from lecentral_testing.pki import make_csr
from renew_world import World, make_config, new_zone, write_toml

SPY = ("import os, sys\n"
       "_exit = os._exit\n"
       "def _said(code):\n"
       "    sys.stderr.write(f'QUICK {code}\\n'); sys.stderr.flush(); _exit(code)\n"
       "os._exit = _said\n")


def _python(body: str, quick: bool, tmp: Path, stdout: int | IO[Any] = subprocess.PIPE,
            args: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run ``body`` (which defines a click command ``cmd``) and then the command, through
    quickexit.run (``quick``) or standalone (a normal exit)."""
    end = ("from lecentral.cli.quickexit import run\nrun(cmd)\n" if quick else "cmd()\n")
    code = SPY + f"import sys\nsys.argv = ['cmd', *{list(args)!r}]\n" + \
        textwrap.dedent(body) + end
    return subprocess.run([sys.executable, "-c", code], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=60, check=False, cwd=tmp)


def _both(body: str, tmp: Path, *args: str) -> tuple[subprocess.CompletedProcess[str],
                                                     subprocess.CompletedProcess[str]]:
    return _python(body, True, tmp, args=args), _python(body, False, tmp, args=args)


def _quick(result: subprocess.CompletedProcess[str]) -> bool:
    return f"QUICK {result.returncode}\n" in result.stderr


def _without_spy(stderr: str) -> str:
    return "".join(line for line in stderr.splitlines(keepends=True)
                   if not line.startswith("QUICK "))


ECHO = """
import click, logging
@click.command()
@click.option('--code', default=0, type=int)
@click.option('--fail', is_flag=True)
def cmd(code, fail):
    logging.basicConfig(format='log: %(message)s')
    for i in range(20000):
        click.echo(f'line {i} ' + 'x' * 40)
    logging.getLogger('t').warning('a warning on stderr')
    click.echo('to stderr', err=True)
    if fail:
        raise click.ClickException('it failed')
    if code:
        raise click.exceptions.Exit(code)
"""


@pytest.mark.parametrize("args", [(), ("--code", "3"), ("--fail",), ("--bogus",)])
def test_status_stdout_and_stderr_to_pipes_are_a_normal_exits(tmp_path: Path,
                                                               args: tuple[str, ...]) -> None:
    """1 MB on stdout (more than a pipe holds: flushed at the end), a log line and a message on
    stderr; exit 0, 3 (ctx.exit), 1 (ClickException), 2 (a usage error)."""
    quick, normal = _both(ECHO, tmp_path, *args)
    assert _quick(quick) and not _quick(normal)
    assert quick.returncode == normal.returncode == {(): 0, ("--code", "3"): 3,
                                                     ("--fail",): 1, ("--bogus",): 2}[args]
    assert quick.stdout == normal.stdout
    assert _without_spy(quick.stderr) == normal.stderr


def test_stdout_redirected_to_a_file_is_complete(tmp_path: Path) -> None:
    outputs = []
    for quick in (True, False):
        path = tmp_path / f"out-{quick}.txt"
        with path.open("w") as out:
            result = _python(ECHO, quick, tmp_path, stdout=out)
        assert result.returncode == 0 and _quick(result) == quick
        outputs.append(path.read_text())
    assert outputs[0] == outputs[1]
    assert outputs[0].count("\n") == 20000


def test_atexit_functions_log_files_and_temporary_directories_as_a_normal_exit(
        tmp_path: Path) -> None:
    """What atexit does still happens: its functions run, a log file handler is flushed and
    closed, a TemporaryDirectory left to its finalizer is removed."""
    body = """
    import atexit, click, logging, tempfile, pathlib
    @click.command()
    def cmd():
        handler = logging.FileHandler('app.log')
        logging.getLogger().addHandler(handler)
        logging.getLogger('t').warning('written by the handler')
        atexit.register(lambda: pathlib.Path('atexit.txt').write_text('ran'))
        global kept
        kept = tempfile.TemporaryDirectory(dir='.')
        pathlib.Path(kept.name, 'f').write_text('x')
        pathlib.Path('tempdir.txt').write_text(kept.name)
    """
    for quick in (True, False):
        result = _python(body, quick, tmp_path)
        assert result.returncode == 0, result.stderr
        assert _quick(result) == quick
        assert (tmp_path / "atexit.txt").read_text() == "ran"
        assert (tmp_path / "app.log").read_text() == "written by the handler\n"
        assert not Path(tmp_path, (tmp_path / "tempdir.txt").read_text()).exists()
        for name in ("atexit.txt", "app.log", "tempdir.txt"):
            (tmp_path / name).unlink()


@pytest.mark.parametrize("left", ["thread", "open file", "temporary file", "text status",
                                  "profiler"])
def test_what_a_quick_exit_would_lose_gets_the_normal_exit(tmp_path: Path, left: str) -> None:
    """A running non-daemon thread (Python waits for it), a file still open for writing (its
    buffer is flushed when freed), an open NamedTemporaryFile (deleted when freed), a status
    that is a text (printed), a profiler or tracer (python -m cProfile writes its file after the
    program returns): the normal exit, with what it does."""
    setups = {
        "thread": """
            import threading, time, pathlib
            def later():
                time.sleep(0.3)
                pathlib.Path('thread.txt').write_text('done')
            threading.Thread(target=later).start()
        """,
        "open file": """
            global f
            f = open('open.txt', 'w')
            f.write('buffered, never closed')
        """,
        "temporary file": """
            import tempfile, pathlib
            global t
            t = tempfile.NamedTemporaryFile(dir='.', prefix='tmpfile')
            pathlib.Path('tmpname.txt').write_text(t.name)
        """,
        "text status": """
            import sys
            sys.exit('said on stderr')
        """,
        "profiler": """
            import sys
            sys.setprofile(lambda *args: None)
        """,
    }
    body = "import click\n@click.command()\ndef cmd():\n" + textwrap.indent(
        textwrap.dedent(setups[left]), "    ")
    quick, normal = _both(body, tmp_path)
    assert not _quick(quick) and not _quick(normal)
    assert quick.returncode == normal.returncode
    assert quick.stderr == normal.stderr
    if left == "thread":
        assert (tmp_path / "thread.txt").read_text() == "done"
    elif left == "open file":
        assert (tmp_path / "open.txt").read_text() == "buffered, never closed"
    elif left == "temporary file":
        assert not Path((tmp_path / "tmpname.txt").read_text()).exists()
    elif left == "text status":
        assert quick.returncode == 1 and quick.stderr == "said on stderr\n"
    else:
        assert quick.returncode == 0 and quick.stderr == ""


def test_a_crash_is_a_normal_exit_with_its_traceback(tmp_path: Path) -> None:
    """An exception click does not handle (a bug) leaves the normal way: traceback, status 1."""
    body = "import click\n@click.command()\ndef cmd():\n    raise RuntimeError('boom')\n"
    quick, normal = _both(body, tmp_path)
    assert not _quick(quick) and quick.returncode == normal.returncode == 1
    assert quick.stderr.startswith("Traceback") and quick.stderr.endswith("RuntimeError: boom\n")
    assert normal.stderr.endswith("RuntimeError: boom\n")


def test_a_broken_pipe_is_said_as_by_a_normal_exit(tmp_path: Path) -> None:
    """The reader of stdout goes away: the same status and the same stderr."""
    results = []
    for quick in (True, False):
        end = "from lecentral.cli.quickexit import run\nrun(cmd)\n" if quick else "cmd()\n"
        with subprocess.Popen([sys.executable, "-c", SPY + textwrap.dedent(ECHO) + end],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=tmp_path) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            stderr = proc.stderr.read()
            results.append((proc.wait(timeout=60), _without_spy(stderr)))
    assert results[0] == results[1]
    assert results[0][0] != 0


# -- the real console script ----------------------------------------------------------------

def _lecentral(quick: bool, *argv: str, stdout: int | IO[Any] = subprocess.PIPE,
               ) -> subprocess.CompletedProcess[str]:
    """``lecentral ARGV`` as its console script runs it (``quick``), or through the click group
    itself with a normal exit."""
    end = ("from lecentral.cli.start import central\ncentral()\n" if quick else
           "from lecentral.cli.central import main\nmain()\n")
    code = SPY + f"import sys\nsys.argv = {['lecentral', *argv]!r}\n" + end
    return subprocess.run([sys.executable, "-c", code], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=300, check=False)


def test_lecentral_commands_print_and_exit_as_with_a_normal_exit(tmp_path: Path) -> None:
    """init, add, list (table, --json to a pipe and to a file), an unknown name (1), a missing
    configuration (2): the same output and status both ways; the console script leaves quickly."""
    config = tmp_path / "lecentral.toml"
    (tmp_path / "csr").mkdir()
    config.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/lecentral.db"\n'
                      f'[renew]\ncsr_dir = "{tmp_path}/csr"\n')
    assert _lecentral(True, "--config", str(config), "init").returncode == 0
    for i in range(30):
        name = f"h{i}.example.test"
        (tmp_path / "csr" / f"{name}.csr").write_bytes(make_csr([name])[0])
        added = _lecentral(i % 2 == 0, "--config", str(config), "add", name, "--enable")
        assert added.returncode == 0, added.stderr
    files = _both_ways(_lecentral, config, tmp_path,
                       (["list"], ["list", "--json"], ["show", "h3.example.test"],
                        ["show", "nobody.example.test"], ["--config", "/nonexistent", "list"]),
                       ["list", "--json"])
    assert files[0] == files[1] and files[0].endswith("\n")


def _both_ways(run: Any, config: Path, tmp_path: Path, argvs: tuple[list[str], ...],
               to_file: list[str]) -> list[str]:
    """``run`` (:func:`_lecentral` or :func:`_agent`) of each of ``argvs`` with ``config``: the
    same status, stdout and stderr with the quick exit as with a normal one (to a pipe), and
    the quick exit taken; then ``to_file`` written to a file both ways: the two files' text."""
    for argv in argvs:
        full = ["--config", str(config), *argv]
        quick, normal = run(True, *full), run(False, *full)
        assert _quick(quick) and not _quick(normal), quick.stderr
        assert (quick.returncode, quick.stdout, _without_spy(quick.stderr)) == \
            (normal.returncode, normal.stdout, normal.stderr), argv
    files = []
    for quick_exit in (True, False):
        path = tmp_path / f"{to_file[0]}-{quick_exit}.out"
        with path.open("w") as out:
            result = run(quick_exit, "--config", str(config), *to_file, stdout=out)
        assert result.returncode == 0 and _quick(result) == quick_exit
        files.append(path.read_text())
    return files


def test_mariadb_sees_each_connection_closed_as_before(tmp_path: Path, mariadb_url: str,
                                                        mariadb_server: Any) -> None:
    """The database is closed by the command (App.close) before the quick exit: MariaDB counts
    no aborted connection (a connection dropped without its goodbye is one, and is logged)."""
    config = tmp_path / "lecentral.toml"
    config.write_text(f'[database]\nurl = "{mariadb_url}"\n')

    def aborted() -> int:
        [(_, value)] = mariadb_server.execute("SHOW GLOBAL STATUS LIKE 'Aborted_clients'")
        return int(value)

    before = aborted()
    for argv in (["init"], ["list"], ["list", "--json"], ["show", "nobody.example.test"]):
        result = _lecentral(True, "--config", str(config), *argv)
        assert _quick(result), result.stderr
    assert aborted() == before


def test_renew_json_through_the_console_script_saves_and_reports_everything(
        dns_world: World, tmp_path: Path) -> None:
    """A real renew pass (2 processes: a forked child and its pipe) through the console script:
    the JSON report on a file is whole, each certificate saved, the spool empty, and the process
    left quickly with status 0."""
    config = make_config(dns_world, tmp_path)
    names = [new_zone(dns_world, "quick") for _ in range(5)]
    (tmp_path / "csr").mkdir()
    toml = write_toml(config, tmp_path / "lecentral.toml", processes=2, workers=2)
    toml.write_text(toml.read_text().replace("[renew]\n",
                                             f'[renew]\ncsr_dir = "{tmp_path}/csr"\n'))
    assert _lecentral(True, "--config", str(toml), "init").returncode == 0
    for name in names:
        (tmp_path / "csr" / f"{name}.csr").write_bytes(make_csr([name])[0])
        assert _lecentral(True, "--config", str(toml), "add", name, "--enable").returncode == 0
    report = tmp_path / "renew.json"
    with report.open("w") as out:
        result = _lecentral(True, "--config", str(toml), "renew", "--json", stdout=out)
    assert result.returncode == 0, result.stderr
    assert _quick(result)
    data = json.loads(report.read_text())
    assert sorted(c["name"] for c in data["certificates"]) == sorted(names)
    assert {c["status"] for c in data["certificates"]} == {"issued"}
    listed = json.loads(_lecentral(True, "--config", str(toml), "list", "--json").stdout)
    assert all(entry.get("ts_expire", 0) > 1 for entry in listed), listed
    assert list((tmp_path / "state" / "spool").glob("*.json")) == []


def test_ctrl_c_after_the_command_is_one_status_not_a_traceback(tmp_path: Path) -> None:
    """A Ctrl-C that lands once the command is done, while the quick exit looks for files
    still open (a new-user trial: two chained tracebacks on stderr): the output stays whole,
    the status is 130, stderr has no traceback."""
    body = ECHO + ("import lecentral.cli.quickexit as q\n"
                   "def _interrupted():\n"
                   "    raise KeyboardInterrupt\n"
                   "q._files_left = _interrupted\n")
    result = _python(body, True, tmp_path)
    assert result.returncode == 130, result.stderr
    assert result.stdout.count("\n") == 20000 and result.stdout.endswith("x" * 40 + "\n")
    assert "Traceback" not in result.stderr
    assert _without_spy(result.stderr) == "log: a warning on stderr\nto stderr\n"


# -- lecentral-install: the same stdout guard and quick exit ----------------------------------------

def _agent(quick: bool, *argv: str, stdout: int | IO[Any] = subprocess.PIPE,
           extra: str = "") -> subprocess.CompletedProcess[str]:
    """``lecentral-install ARGV`` as its console script runs it (``quick``), or through the click
    group itself with a normal exit; ``extra``: code run first (after the spy)."""
    end = ("from lecentral.cli.start import agent\nagent()\n" if quick else
           "from lecentral.cli.agent import main\nmain()\n")
    code = SPY + extra + f"import sys\nsys.argv = {['lecentral-install', *argv]!r}\n" + end
    return subprocess.run([sys.executable, "-c", code], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=300, check=False)


@pytest.fixture
def agent_toml(tmp_path: Path) -> Path:
    """install.toml with 200 entries (status --json: more than a pipe holds) on a central SQLite
    database that has none of them."""
    central = tmp_path / "lecentral.toml"
    central.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/lecentral.db"\n')
    assert _lecentral(True, "--config", str(central), "init").returncode == 0
    lines = [(f'[database]\nurl = "sqlite:///{tmp_path}/lecentral.db"\n'
              f'[agent]\nstate_dir = "{tmp_path}/agent"\n')]
    for i in range(200):
        lines.append(f'[[cert]]\nname = "h{i}.example.test"\nservice = "files"\n'
                     f'key = "{tmp_path}/h{i}.key"\ncert = "{tmp_path}/h{i}.crt"\n')
    path = tmp_path / "install.toml"
    path.write_text("".join(lines))
    return path


def test_agent_commands_print_and_exit_as_with_a_normal_exit(agent_toml: Path,
                                                             tmp_path: Path) -> None:
    """status (table, --json), check, plugins, a missing configuration: the same output and status
    both ways, to a pipe and to a file; the console script leaves quickly."""
    files = _both_ways(_agent, agent_toml, tmp_path,
                       (["status"], ["status", "--json"], ["check"], ["plugins"],
                        ["--config", "/nonexistent", "status"]),
                       ["status", "--json"])
    assert files[0] == files[1] and len(json.loads(files[0])["certs"]) == 200


@pytest.mark.parametrize("args", [["status", "--json"], ["status"], ["check"]])
def test_agent_output_with_its_reader_gone_keeps_its_status_quietly(agent_toml: Path,
                                                                    args: list[str]) -> None:
    """``lecentral-install status --json | head -c 10`` with the reader gone before the first
    write: no BrokenPipeError traceback, nothing on stderr, the command's own status (check's:
    WARNING, the names are not in the database)."""
    own = _agent(True, "--config", str(agent_toml), *args).returncode
    code = "from lecentral.cli.start import agent\nagent()\n"
    argv = ["lecentral-install", "--config", str(agent_toml), "--quiet", *args]
    with subprocess.Popen([sys.executable, "-c", f"import sys\nsys.argv = {argv!r}\n" + code],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        err = process.stderr.read().decode()
        assert (process.wait(timeout=120), err) == (own, "")


@pytest.mark.parametrize(("args", "status"), [(["status", "--json"], 9), (["check"], 3)])
def test_agent_output_to_a_full_disk_is_said_once(agent_toml: Path, args: list[str],
                                                  status: int) -> None:
    """``lecentral-install status --json > /dev/full``: one line on stderr (no traceback), exit 9;
    3 (UNKNOWN) for check, a monitoring plugin."""
    own = _agent(True, "--config", str(agent_toml), *args).returncode
    with open("/dev/full", "w") as full:
        result = _agent(True, "--config", str(agent_toml), "--quiet", *args, stdout=full)
    assert result.returncode == status, result.stderr
    assert _without_spy(result.stderr) == (
        "lecentral-install: error: the output could not be written to stdout: No space left on "
        f"device; the rest of it was dropped (the command itself ran to its end, exit status "
        f"{own})\n")


def test_agent_ctrl_c_after_the_command_is_one_status_not_a_traceback(agent_toml: Path) -> None:
    """A Ctrl-C that lands once ``lecentral-install status --json`` is done, while the quick exit
    looks for files still open: the output stays whole, the status is 130, no traceback."""
    extra = ("import lecentral.cli.quickexit as q\n"
             "def _interrupted():\n"
             "    raise KeyboardInterrupt\n"
             "q._files_left = _interrupted\n")
    result = _agent(True, "--config", str(agent_toml), "status", "--json", extra=extra)
    assert result.returncode == 130, result.stderr
    assert len(json.loads(result.stdout)["certs"]) == 200
    assert "Traceback" not in result.stderr


def test_ctrl_c_during_the_command_is_130_not_1(tmp_path: Path) -> None:
    """A Ctrl-C while the command runs: click says "Aborted!" and exits 1, which a monitoring
    check reads as WARNING and a script as a failure of the command; the console scripts exit
    130, as a shell says an interrupted command. No traceback either way."""
    body = ("import click, os, signal\n"
            "@click.command()\n"
            "def cmd():\n"
            "    click.echo('started')\n"
            "    os.kill(os.getpid(), signal.SIGINT)\n"
            "    click.echo('never')\n")
    quick, normal = _both(body, tmp_path)
    assert (quick.returncode, normal.returncode) == (130, 1)
    assert quick.stdout == normal.stdout == "started\n"
    assert _without_spy(quick.stderr) == normal.stderr == "\nAborted!\n"


def test_agent_ctrl_c_while_verifying_is_130_without_a_traceback(agent_toml: Path) -> None:
    """``lecentral-install status`` stuck on a verify URL that never answers (a listening socket
    that says nothing): Ctrl-C once it is connected ends it with 130 and "Aborted!", no
    traceback."""
    import signal
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        text = agent_toml.read_text().replace(
            'service = "files"\n', f'service = "files"\nverify = "tls://127.0.0.1:{port}"\n', 1)
        agent_toml.write_text(text)
        code = "from lecentral.cli.start import agent\nagent()\n"
        argv = ["lecentral-install", "--config", str(agent_toml), "status"]
        with subprocess.Popen([sys.executable, "-c", f"import sys\nsys.argv = {argv!r}\n" + code],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) as process:
            server.settimeout(60)
            conn, _ = server.accept()  # it is verifying now, waiting for the TLS handshake
            with conn:
                process.send_signal(signal.SIGINT)
                out, err = process.communicate(timeout=60)
    assert (process.returncode, err) == (130, "\nAborted!\n"), err
    assert out == ""
