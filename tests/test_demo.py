"""``lecentral demo`` from start to finish: real BIND, resolver and Pebble, three certificates."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from lecentral.cli.central import main


def test_demo_issues_three_certificates_and_cleans_up(tmp_path: Path) -> None:
    keep = tmp_path / "world"
    result = CliRunner().invoke(main, ["demo", "--keep", str(keep)])
    assert result.exit_code == 0, result.output
    assert "3 issued" in result.output
    for name in ("www.example.test", "ldap.example.test", "mail.example.test"):
        assert f"CN={name}   (issuer: CN=Pebble Intermediate CA" in result.output
    assert "mail.example.test,smtp.example.test" in result.output
    # the servers' keys were written 0600 and never reached the database
    key = (keep / "servers" / "www.example.test.key")
    assert key.stat().st_mode & 0o077 == 0
    assert b"PRIVATE KEY" not in (keep / "lecentral.db").read_bytes()


def test_demo_without_keep_removes_its_temp_dir() -> None:
    import tempfile

    before = set(Path(tempfile.gettempdir()).glob("lecentral-demo-*"))
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 0, result.output
    assert set(Path(tempfile.gettempdir()).glob("lecentral-demo-*")) == before


def test_demo_keep_refuses_an_existing_directory(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--keep", str(tmp_path)])
    assert result.exit_code == 2
    assert f"--keep {tmp_path}: it exists already" in result.output
