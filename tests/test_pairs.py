"""The shared certificate/key pair check and key-access check every service plugin uses
(lecentral.api: KeyPair, pairs_using, check_key_pairs, check_key_access), on real key files."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from lecentral_testing.daemons.certs import write_cert_files

from lecentral.errors import EntryError, InstallError
from lecentral.install.pairs import (
    DaemonTerms,
    KeyPair,
    check_key_access,
    check_key_pairs,
    pairs_using,
)
from lecentral.records import CertEntry

DAEMON = DaemonTerms("mydaemon", "KeyFile", "mydaemon would not start")


def entry_for(tmp_path: Path) -> tuple[CertEntry, Path]:
    site = write_cert_files(tmp_path / "site", ["www.example.test"], key_kind="ec256")
    entry = CertEntry(name="www.example.test", service="mine", key=str(site.key), cert=str(site.cert),
                      fullchain=str(site.fullchain))
    return entry, site.key


def test_pairs_naming_the_entry_files_are_checked_others_ignored(tmp_path: Path) -> None:
    entry, key = entry_for(tmp_path)
    other = write_cert_files(tmp_path / "other", ["www.example.test"], key_kind="rsa2048")
    link = tmp_path / "link.full"
    link.symlink_to(entry.fullchain)
    pairs = [KeyPair(str(link), str(key), "site A"), KeyPair("/elsewhere.crt", str(other.key), "site B")]
    used = pairs_using(entry, pairs)
    assert used == pairs[:1]  # through the symlink; site B is someone else's
    check_key_pairs(entry, used, DAEMON)  # the right key: no error

    wrong = [KeyPair(entry.cert, str(other.key), "site C", key_words=f"KeyFile {other.key}")]
    with pytest.raises(InstallError) as caught:
        check_key_pairs(entry, wrong, DAEMON)
    message = str(caught.value)
    assert message.startswith("www.example.test (mine): site C pairs ")
    assert f"with KeyFile {other.key}, which does not match the new certificate (EC" in message
    assert f"mydaemon would not start. Point KeyFile at {key}" in message
    assert "(nothing was restarted)" in message


def test_missing_key_and_no_key_at_all_are_errors_an_unreadable_key_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    entry, _ = entry_for(tmp_path)
    with pytest.raises(InstallError, match="the key /nowhere.key, which does not exist; mydaemon would not start"):
        check_key_pairs(entry, [KeyPair(entry.cert, "/nowhere.key", "site")], DAEMON)
    with pytest.raises(InstallError, match="with no KeyFile, so mydaemon would look for the key in that file"):
        check_key_pairs(entry, [KeyPair(entry.cert, None, "site")], DAEMON)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_text("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")
    with caplog.at_level(logging.WARNING):
        check_key_pairs(entry, [KeyPair(entry.cert, str(encrypted), "site")], DAEMON)
    assert f"cannot check the key {encrypted}" in caplog.text


def test_key_access(tmp_path: Path) -> None:
    entry, key = entry_for(tmp_path)
    check_key_access(entry, usual_group="mine")  # 0600 root: fine without a group
    key.chmod(0o644)
    with pytest.raises(EntryError) as caught:
        check_key_access(entry, usual_group="mine")
    assert caught.value.key == "key" and f"chmod o-rwx {key} (Debian: root:mine 0640)" in str(caught.value)
    key.chmod(0o600)
    os.chown(key, 0, 0)
    with pytest.raises(EntryError, match=f"group daemon\\) cannot read the private key {key}"):
        check_key_access(entry, group="daemon", usual_group="mine")
    with pytest.raises(EntryError) as caught:
        check_key_access(entry, group="no-such-group-here", usual_group="mine")
    assert caught.value.key == "options.key_group"
