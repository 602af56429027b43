"""The agent's up-to-date cache (``STATE_DIR/uptodate.json``) and its direct read of the rows.

What the cache holds, when it is not believed (a file changed on disk, a changed row, an expired
certificate, a file changed too recently), and that a corrupt or foreign cache is ignored and
rewritten, never trusted. A remembered answer is recognised by a reason text the compare never
writes ("up to date (as remembered)"): it shows only when the cache was believed.

``RACY_SECONDS`` is set to 0 here (monkeypatch): the files of a test are seconds old, and the
rule that leaves such files out is tested on its own, with the real value.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from lecentral_testing.agent import AgentWorld

from lecentral.install import uptodate
from lecentral.install.uptodate import CACHE_FILE, FORMAT
from lecentral.store.direct import read_rows

NAME = "www.example.test"
MARK = "up to date (as remembered)"


@pytest.fixture
def agent(tmp_path: Path) -> AgentWorld:
    world = AgentWorld(tmp_path)
    world.add(NAME, key="ec256")
    world.issue(NAME)
    world.write_config(world.entry(NAME))
    return world


def cache_of(world: AgentWorld) -> dict[str, dict[str, object]]:
    data = json.loads((world.state_dir / CACHE_FILE).read_text())
    assert data["format"] == FORMAT
    entries: dict[str, dict[str, object]] = data["entries"]
    return entries


def mark_remembered(world: AgentWorld) -> None:
    """Rewrite the remembered reason so that a believed cache shows in the run's message."""
    path = world.state_dir / CACHE_FILE
    data = json.loads(path.read_text())
    for known in data["entries"].values():
        known["reason"] = MARK
    path.write_text(json.dumps(data))
    path.chmod(0o600)


def settled(world: AgentWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed, then found up to date once (which remembers it)."""
    monkeypatch.setattr(uptodate, "RACY_SECONDS", 0)
    assert world.run("run").by_name(NAME)["status"] == "installed"
    assert world.run("run").by_name(NAME)["status"] == "up-to-date"


def test_an_up_to_date_entry_is_remembered_and_believed(agent: AgentWorld,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the cache holds: per entry id the fingerprint, the expiry and the reason; the next
    run answers from it; a cache file is private to its user."""
    settled(agent, monkeypatch)
    known = cache_of(agent)[f"files-{NAME}"]
    assert set(known) == {"fingerprint", "not_after", "reason"}
    assert str(known["reason"]).startswith("up to date (expires ")
    assert (os.stat(agent.state_dir / CACHE_FILE).st_mode & 0o777) == 0o600
    mark_remembered(agent)

    out = agent.run("run")

    assert out.exit_code == 0, out.stderr
    assert out.by_name(NAME) == {**out.by_name(NAME), "status": "up-to-date", "message": MARK}


def test_files_just_written_are_not_remembered(agent: AgentWorld) -> None:
    """Right after an install the files are too new for their times to show the next change."""
    assert agent.run("run").by_name(NAME)["status"] == "installed"
    assert agent.run("run").by_name(NAME)["status"] == "up-to-date"
    path = agent.state_dir / CACHE_FILE
    assert not path.exists() or f"files-{NAME}" not in cache_of(agent)


@pytest.mark.parametrize("role", ["cert", "chain", "fullchain"])
def test_a_file_changed_on_disk_is_compared_again(agent: AgentWorld, role: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Any file of the set changed: the full compare runs, sees it, and installs again."""
    settled(agent, monkeypatch)
    mark_remembered(agent)
    path = Path(agent.entry(NAME)[role])
    path.write_bytes(path.read_bytes().replace(b"-----END CERTIFICATE-----\n", b"", 1))

    out = agent.run("run")

    assert out.by_name(NAME)["status"] == "installed", out.stderr
    assert out.by_name(NAME)["message"] != MARK


def test_the_same_bytes_rewritten_are_compared_again(agent: AgentWorld,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the file's times changed (touch): still a miss, and the compare says up to date."""
    settled(agent, monkeypatch)
    mark_remembered(agent)
    os.utime(agent.entry(NAME)["cert"])

    out = agent.run("run")

    assert out.by_name(NAME)["status"] == "up-to-date"
    assert out.by_name(NAME)["message"].startswith("up to date (expires ")


def test_a_removed_key_is_not_up_to_date(agent: AgentWorld,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The private key gone: the compare runs and fails loudly, as without a cache."""
    settled(agent, monkeypatch)
    mark_remembered(agent)
    agent.key_path(NAME).unlink()

    out = agent.run("run")

    assert out.exit_code == 1
    assert out.by_name(NAME)["status"] == "failed"
    assert f"files-{NAME}" not in cache_of(agent)


def test_a_changed_row_is_compared_again(agent: AgentWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """The row disabled on the central host: not up to date any more (skipped, as without a cache)."""
    settled(agent, monkeypatch)
    mark_remembered(agent)
    agent.store.set_enable(NAME, False)

    out = agent.run("run")

    assert out.by_name(NAME)["status"] == "skipped"
    assert "disabled in the database" in out.by_name(NAME)["message"]


def test_a_damaged_row_is_refused_despite_the_cache(agent: AgentWorld,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad md5_ca written behind the agent's back: as loud as ever (the row is part of the
    fingerprint)."""
    settled(agent, monkeypatch)
    mark_remembered(agent)
    import sqlite3

    with sqlite3.connect(agent.workdir / "lecentral.db") as conn:
        conn.execute("UPDATE certs SET md5_ca = ? WHERE name = ?", ("0" * 32, NAME))

    out = agent.run("run")

    assert out.exit_code == 1
    assert out.by_name(NAME)["status"] == "failed"
    assert "md5_ca" in out.by_name(NAME)["message"]


def test_an_expired_remembered_certificate_is_compared_again(
        agent: AgentWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """The remembered expiry has passed: the cache is not believed."""
    settled(agent, monkeypatch)
    mark_remembered(agent)
    path = agent.state_dir / CACHE_FILE
    data = json.loads(path.read_text())
    data["entries"][f"files-{NAME}"]["not_after"] = 1
    path.write_text(json.dumps(data))

    assert agent.run("run").by_name(NAME)["message"] != MARK


@pytest.mark.parametrize("damage", [
    b"", b"{not json", b"\xff\xfe", b"[]", json.dumps({"format": "other 1", "entries": {}}).encode(),
    json.dumps({"format": FORMAT, "entries": {"x": {"fingerprint": "zz", "not_after": 2,
                                                    "reason": "up to date"}}}).encode(),
    json.dumps({"format": FORMAT, "entries": {"x": {"fingerprint": "a" * 64, "not_after": "2",
                                                    "reason": "up to date"}}}).encode(),
    json.dumps({"format": FORMAT, "entries": {"x": {"fingerprint": "a" * 64, "not_after": 2,
                                                    "reason": "installed"}}}).encode(),
])
def test_a_corrupt_cache_is_ignored_and_rewritten(agent: AgentWorld, damage: bytes,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    settled(agent, monkeypatch)
    path = agent.state_dir / CACHE_FILE
    path.write_bytes(damage)

    out = agent.run("run")

    assert out.exit_code == 0
    assert out.by_name(NAME)["status"] == "up-to-date"
    assert out.by_name(NAME)["message"].startswith("up to date (expires ")
    assert f"files-{NAME}" in cache_of(agent)  # rewritten whole


def test_a_cache_others_can_write_is_not_believed(agent: AgentWorld,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Group- or world-writable: anyone could have written it; ignored, rewritten 0600."""
    settled(agent, monkeypatch)
    mark_remembered(agent)
    path = agent.state_dir / CACHE_FILE
    path.chmod(0o666)

    out = agent.run("run")

    assert out.by_name(NAME)["message"] != MARK
    assert (os.stat(path).st_mode & 0o777) == 0o600


def test_a_symlinked_cache_is_not_followed(agent: AgentWorld, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A symlink in the state dir (pointing at a forged cache) is neither read nor written through."""
    settled(agent, monkeypatch)
    mark_remembered(agent)
    path = agent.state_dir / CACHE_FILE
    forged = tmp_path / "forged.json"
    forged.write_bytes(path.read_bytes())
    forged.chmod(0o600)
    path.unlink()
    path.symlink_to(forged)

    out = agent.run("run")

    assert out.by_name(NAME)["message"] != MARK
    assert not path.is_symlink()
    assert json.loads(forged.read_text())["entries"][f"files-{NAME}"]["reason"] == MARK


def test_a_cache_from_another_agent_matches_nothing(agent: AgentWorld, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache copied from another host (same entry id, other files): no fingerprint matches."""
    other = AgentWorld(tmp_path / "other")
    other.add(NAME, key="ec256")
    other.issue(NAME)
    other.write_config(other.entry(NAME))
    settled(other, monkeypatch)
    mark_remembered(other)
    settled(agent, monkeypatch)
    (agent.state_dir / CACHE_FILE).write_bytes((other.state_dir / CACHE_FILE).read_bytes())

    assert agent.run("run").by_name(NAME)["message"] != MARK
    other.close()


def test_a_dry_run_reads_the_cache_but_never_writes_it(agent: AgentWorld,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    settled(agent, monkeypatch)
    mark_remembered(agent)
    before = (agent.state_dir / CACHE_FILE).read_bytes()
    agent.store.set_enable(NAME, False)

    out = agent.run("run", "--dry-run")

    assert out.by_name(NAME)["status"] == "skipped"
    assert (agent.state_dir / CACHE_FILE).read_bytes() == before


# -- the direct read (no SQLAlchemy) -------------------------------------------------------------


def test_the_direct_read_gives_the_stores_rows(agent: AgentWorld) -> None:
    agent.add("mail.example.test", key="ec256", enable=False)
    names = [NAME, "mail.example.test", "absent.example.test"]

    rows = read_rows(agent.db_url, names)

    assert rows == {n: agent.store.get(n) for n in names}


def test_the_direct_read_leaves_the_unusual_to_the_store(agent: AgentWorld) -> None:
    """A name stored in other case, a text blob, a missing file, a URL with options: None (the
    store's path then runs, with its own rules and messages)."""
    import sqlite3

    db = agent.workdir / "lecentral.db"
    assert read_rows(agent.db_url, ["WWW.example.test"]) is None
    assert read_rows(f"sqlite:///{agent.workdir}/missing.db", [NAME]) is None
    assert read_rows(f"{agent.db_url}?timeout=5", [NAME]) is None
    assert read_rows("postgresql+psycopg://u:p@127.0.0.1/db", [NAME]) is None
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE certs SET crt = CAST(crt AS TEXT) WHERE name = ?", (NAME,))
    assert read_rows(agent.db_url, [NAME]) is None


def test_a_row_with_problems_is_refused_through_the_direct_read(agent: AgentWorld) -> None:
    """md5_ca not a digest: the same problem, the same refusal, as through the store."""
    import sqlite3

    with sqlite3.connect(agent.workdir / "lecentral.db") as conn:
        conn.execute("UPDATE certs SET md5_ca = 'nonsense' WHERE name = ?", (NAME,))
    rows = read_rows(agent.db_url, [NAME])
    assert rows is not None and rows[NAME] is not None
    assert rows[NAME].problems == agent.store.get(NAME).problems  # type: ignore[union-attr]

    out = agent.run("run")

    assert out.exit_code == 1
    assert "column md5_ca is 'nonsense'" in out.by_name(NAME)["message"]
    assert not Path(agent.entry(NAME)["cert"]).exists()
