"""Copies of the certificate files inside Postfix's chroot, switched with the originals as one set.

When smtpd runs chrooted (Debian's master.cf), the chroot is ``queue_directory``
(``/var/spool/postfix``) and a path such as ``/etc/postfix/mail.example.com.pem`` is
``/var/spool/postfix/etc/postfix/mail.example.com.pem`` from inside it. The copies are
:class:`~lecentral.install.fileset.LocalFiles` ``copies``: journaled, backed up, renamed and
rolled back with the originals, so the two never disagree. The private key is copied too when
no combined file already holds it (the cert/key file style).

Directories missing in the chroot are created first, each with the owner and mode of the
directory it mirrors (``/etc/postfix`` -> ``/var/spool/postfix/etc/postfix``). They are the only
thing a rollback leaves behind: empty, harmless, and needed again by the next install.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from lecentral.api import CertEntry, InstallError, IssuedCertificate, LocalFiles


def inside(path: str, directory: str) -> bool:
    """True when ``path`` is ``directory`` or below it (already in the chroot: no copy needed)."""
    return os.path.commonpath([path, directory]) == directory


def chroot_copies(entry: CertEntry, queue_directory: str) -> dict[str, str]:
    """Chroot path -> role, for every file the entry writes (and the key when none holds it)."""
    copies = {queue_directory + path: role for role, path in entry.files.items()
              if not inside(path, queue_directory)}
    key_inside_combined = bool(entry.combined) and entry.key_bearing("combined")
    if not key_inside_combined and not inside(entry.key, queue_directory):
        copies[queue_directory + entry.key] = "key"
    return copies


class ChrootFiles(LocalFiles):
    """The entry's files plus their copies under ``queue_directory``, one atomic set."""

    def __init__(self, entry: CertEntry, workdir: Path, keep: int, queue_directory: str) -> None:
        self.queue_directory = os.path.normpath(queue_directory)
        super().__init__(entry, workdir, keep, chroot_copies(entry, self.queue_directory))

    def directories(self) -> list[tuple[str, str]]:
        """(directory to create in the chroot, the directory it mirrors), parents first.

        Refuses a chroot that is missing, or a symlink anywhere on the way into it: a link
        planted there would send the key somewhere else.
        """
        root = self.queue_directory
        try:
            st = os.lstat(root)
        except FileNotFoundError:
            raise InstallError(f"{self.entry.label}: the Postfix chroot {root} does not exist; set "
                               "options.queue_directory, or options.chroot = false") from None
        if not stat.S_ISDIR(st.st_mode):
            raise InstallError(f"{self.entry.label}: the Postfix chroot {root} is not a directory")
        todo: list[tuple[str, str]] = []
        for copy in self.copies:
            source_dir = os.path.dirname(copy[len(root):])
            parts = [p for p in source_dir.split("/") if p]
            for depth in range(1, len(parts) + 1):
                mirrored = "/" + "/".join(parts[:depth])
                target = root + mirrored
                if any(t == target for t, _ in todo):
                    continue
                try:
                    st = os.lstat(target)
                except FileNotFoundError:
                    todo.append((target, mirrored))
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    raise InstallError(f"{self.entry.label}: {target} in the Postfix chroot is not a "
                                       "directory (a symbolic link?); refusing to write through it")
        return todo

    def plan(self, new: IssuedCertificate) -> list[str]:
        todo = self.directories()
        if not todo:
            return super().plan(new)
        # the copies' directories do not exist yet: plan the originals alone, then say the rest
        originals = LocalFiles(self.entry, self.workdir, self.keep)
        if self.next_key:
            originals.stage_key(self.next_key)  # a staged rotation: the key is in the set too
        lines = originals.plan(new)
        lines += [f"create directory {target} (owner and mode of {mirrored})" for target, mirrored in todo]
        lines += [f"write {copy} (copy of {role} in the Postfix chroot)" for copy, role in self.copies.items()]
        return lines

    def install(self, new: IssuedCertificate) -> list[str]:
        for target, mirrored in self.directories():
            try:
                st = os.stat(mirrored)
                os.mkdir(target, 0o700)
                os.chown(target, st.st_uid, st.st_gid)
                os.chmod(target, stat.S_IMODE(st.st_mode))
            except OSError as exc:
                raise InstallError(f"{self.entry.label}: cannot create {target} in the Postfix chroot: "
                                   f"{exc.strerror}; nothing was changed") from None
        return super().install(new)
