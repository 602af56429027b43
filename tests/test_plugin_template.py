"""``lecentral plugin new NAME``: the package it writes installs, registers its service and
passes its own tests; what it refuses, it refuses with exit status 2 and writes nothing."""

from __future__ import annotations

import ast
import json
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from lecentral.cli.central import main

NAME = "demo-daemon"


def new(*args: str) -> Result:
    return CliRunner().invoke(main, ["plugin", "new", *args])


def throwaway_venv(path: Path) -> Path:
    """A venv that sees this environment's packages (lecentral, lecentral-testing, pytest,
    setuptools) without touching it: ``--system-site-packages`` covers a system-wide lecentral;
    a ``.pth`` adds this environment's site-packages for a lecentral installed in a venv. So pip
    needs no network (``--no-deps --no-build-isolation``) and what it installs goes only there."""
    venv.create(path, system_site_packages=True, with_pip=True)
    python = path / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    lines = [f"import site; site.addsitedir({d!r})\n" for d in site.getsitepackages()]
    (Path(purelib) / "_outer_environment.pth").write_text("".join(lines))
    return python


def run(argv: list[str | Path], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300,
                          check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def listed_services(python: Path | str) -> dict[str, dict[str, object]]:
    out = run([python, "-c", "from lecentral.cli.agent import main; main()", "plugins", "--json"])
    assert out.returncode == 0, out.stderr
    return {s["name"]: s for s in json.loads(out.stdout)["services"]}


def test_a_generated_plugin_installs_registers_its_service_and_passes_its_tests(tmp_path: Path) -> None:
    result = new(NAME, "--dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    package = tmp_path / f"lecentral-{NAME}"
    assert sorted(str(p.relative_to(package)) for p in package.rglob("*") if p.is_file()) == [
        "README.md", "lecentral_demo_daemon/__init__.py", "lecentral_demo_daemon/plugin.py",
        "lecentral_demo_daemon/py.typed", "pyproject.toml", "tests/test_demo_daemon_contract.py"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [package.name]  # no temp dir left
    source = (package / "lecentral_demo_daemon" / "plugin.py").read_text()
    imported = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
    assert imported == {"__future__", "typing", "lecentral.api"}
    assert 'dependencies = ["lecentral>=0.1,<0.2"]' in (package / "pyproject.toml").read_text()

    python = throwaway_venv(tmp_path / "venv")
    install = run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                   "--no-index", package])
    assert install.returncode == 0, install.stdout + install.stderr

    service = listed_services(python)[NAME]
    assert service["distribution"] == f"lecentral-{NAME}"
    assert service["defaults"] == {
        "key": "/etc/ssl/private/{name}.key", "cert": "/etc/ssl/certs/{name}.crt",
        "fullchain": "/etc/ssl/certs/{name}.full", "check": "", "reload": f"systemctl reload {NAME}",
        "verify": ["tls://127.0.0.1:443?sni={name}"]}
    assert NAME not in listed_services(sys.executable)  # installed in the throwaway venv only

    tests = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", package / "tests"],
                cwd=tmp_path)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout, tests.stdout


@pytest.mark.parametrize(("name", "words"), [
    ("My_Daemon", "plugin name 'My_Daemon' is not usable: use lower case letters and digits"),
    ("-x", "plugin name '-x' is not usable"),
    ("a--b", "plugin name 'a--b' is not usable"),
    ("x" * 41, "at most 40 characters"),
    ("lecentral-foo", "give the daemon's name only; the package is called lecentral-NAME already"),
    ("nginx", ("plugin name 'nginx': plugin 'nginx' of lecentral-nginx is installed and "
               "registers that name already")),
    ("files", "plugin name 'files': plugin"),
])
def test_an_unusable_or_taken_name_is_refused(tmp_path: Path, name: str, words: str) -> None:
    result = new("--dir", str(tmp_path), "--", name)
    assert result.exit_code == 2, result.output
    assert words in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_existing_package_directory_is_never_touched(tmp_path: Path) -> None:
    existing = tmp_path / f"lecentral-{NAME}"
    existing.mkdir()
    (existing / "plugin.py").write_text("mine\n")
    result = new(NAME, "--dir", str(tmp_path))
    assert result.exit_code == 2
    assert f"{existing} exists already; remove it or choose another --dir" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [existing.name]
    assert [p.name for p in existing.iterdir()] == ["plugin.py"]
    assert (existing / "plugin.py").read_text() == "mine\n"


def test_a_missing_dir_is_refused(tmp_path: Path) -> None:
    result = new(NAME, "--dir", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert f"--dir {tmp_path / 'nope'}: no such directory; create it first" in result.stderr


def test_help_explains_what_is_written_and_refused() -> None:
    result = CliRunner().invoke(main, ["plugin", "new", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for words in ("DIR/lecentral-NAME/", "tests/test_NAME_contract.py", "exit status 2",
                  "lecentral.api only", "--dir DIR"):
        assert words in text, words
    assert "plugin new NAME" in CliRunner().invoke(main, ["--help"]).output
