"""The journal of a file-set switch: what has been done so far, so a crash can be finished or undone."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lecentral.errors import InstallError
from lecentral.files_io import fsync_dir, replace_atomically, unlink_quietly

JOURNAL = "journal.json"
#: the states a switch goes through (fileset.py's module docstring says what each means)
STATES = ("staging", "prepared", "switched", "restoring", "restored")


class Journal:
    """``journal.json`` in an entry's private workdir: what a file-set switch has done so far.

    Written atomically (0600) before each step, so the next run can finish or undo a switch that
    a crash cut short. Installers that write elsewhere (a remote host) use the same journal.
    """

    def __init__(self, workdir: Path, name: str) -> None:
        self.workdir = workdir
        self.name = name
        self.path = workdir / JOURNAL

    def read(self) -> dict[str, Any] | None:
        """The journal, or ``None`` when no switch is under way."""
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise self.corrupt(f"is unreadable ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("state"), str):
            raise self.corrupt("is not a journal (no state)")
        return data

    def corrupt(self, what: str) -> InstallError:
        """The error for a journal that cannot be trusted: only the operator knows what happened."""
        return InstallError(f"journal {self.path} {what}; nothing was done: check the files of "
                            f"{self.name} by hand (the previous ones are in {self.workdir}/backups), "
                            "then delete the journal")

    def save(self, journal: dict[str, Any]) -> None:
        try:
            replace_atomically(str(self.path), json.dumps(journal, indent=1).encode(),
                               os.geteuid(), os.getegid(), 0o600)
        except OSError as exc:  # write() and rename() name no file: say which, and where
            raise InstallError(f"{self.name}: cannot write the journal {self.path}: "
                               f"{exc.strerror or exc}; free space in (or repair) the file system "
                               f"of {self.workdir}, then run again") from None

    def drop(self) -> None:
        unlink_quietly(str(self.path))
        fsync_dir(str(self.workdir))
