"""The shell scripts run on the ESXi host (busybox ``sh``): probe, switch, restore, finish.

Each returns the body of a function for :func:`lecentral_esxi.ssh.wrap`. Values are quoted with
:func:`shlex.quote`; file contents travel in quoted here-documents (no expansion) whose end marker
is random, so no certificate or key line can end them early. Only POSIX ``sh`` and busybox
tools are used (``cp -p``, ``mv``, ``chmod``, ``stat -c``, ``sha256sum``, ``sync``), all present
in the ESXi Shell. The scripts report their own failures as ``lecentral: ...`` on stderr with
exit status 70.

Names on the host, for a stamp ``S`` (UTC time and a random suffix): backups
``rui.crt.lecentral-S`` and ``rui.key.lecentral-S`` (mode kept by ``cp -p``), new files
written as ``.rui.crt.lecentral-new-S`` / ``.rui.key.lecentral-new-S`` and renamed into place.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from shlex import quote

CRT, KEY = "rui.crt", "rui.key"
#: how the host answers a probe: one status line per file, then this line, then rui.crt
PROBE_SEPARATOR = "--lecentral-probe--"
#: exit status of a script whose files are in place but whose ``persist`` command failed
PERSIST_FAILED = 71

_COMMON = """\
umask 077
d={dir}
fail() {{ echo "lecentral: $*" >&2; exit 70; }}
sha() {{ if [ -f "$1" ]; then set -- $(sha256sum "$1") || fail "sha256sum failed on $1"; echo "$1"; \
else echo none; fi; }}
[ -d "$d" ] || fail "directory $d does not exist on the host (options.remote_dir)"
command -v sha256sum >/dev/null || fail "sha256sum not found on the host"
"""


def backup_name(name: str, stamp: str) -> str:
    """``rui.crt.lecentral-<stamp>``: where the host keeps the file that ``stamp``'s install replaced."""
    return f"{name}.lecentral-{stamp}"


def temp_name(name: str, stamp: str) -> str:
    """``.rui.crt.lecentral-new-<stamp>``: the new file before it is renamed into place."""
    return f".{name}.lecentral-new-{stamp}"


def probe(remote_dir: str) -> str:
    """Report ``<kind> <file> [<octal mode>]`` for rui.crt and rui.key, then rui.crt's content.

    kind is ``file``, ``missing``, ``link`` (a symbolic link: refused) or ``other``.
    """
    return _COMMON.format(dir=quote(remote_dir)) + f"""\
for f in {CRT} {KEY}; do
  p="$d/$f"
  if [ -L "$p" ]; then echo "link $f"
  elif [ ! -e "$p" ]; then echo "missing $f"
  elif [ ! -f "$p" ]; then echo "other $f"
  else echo "file $f $(stat -c %a "$p" 2>/dev/null)"
  fi
done
echo {PROBE_SEPARATOR}
if [ -f "$d/{CRT}" ] && [ ! -L "$d/{CRT}" ]; then cat "$d/{CRT}" || fail "cannot read $d/{CRT}"; fi"""


def _heredoc(path_var: str, data: bytes) -> str:
    text = data.decode("ascii")  # PEM; checked by the caller
    if not text.endswith("\n"):
        raise ValueError("here-document data must end with a newline")
    marker = f"LECENTRAL_EOF_{secrets.token_hex(8)}"
    return f"cat > \"{path_var}\" <<'{marker}' || fail \"cannot write {path_var}\"\n{text}{marker}\n"


@dataclass(frozen=True)
class NewPair:
    """What a switch puts on the host: contents, their SHA-256, and the modes of the files."""

    crt: bytes
    key: bytes
    crt_sha256: str
    key_sha256: str
    crt_mode: int
    key_mode: int


def _persist(command: str) -> str:
    """Run the operator's ``persist`` command (in a subshell: it may be any command line); a
    failure exits with :data:`PERSIST_FAILED` after the files were switched."""
    if not command:
        return ""
    message = quote(f"lecentral: the files were changed, but then {command!r} failed")
    return f"( {command}\n) || {{ echo {message} >&2; exit {PERSIST_FAILED}; }}"


def switch(remote_dir: str, stamp: str, pair: NewPair, keep: int, persist: str) -> str:
    """Back up the pair, write the new one beside it, check it, rename key then certificate,
    prune old backups, print ``switched``, then run ``persist``.

    Nothing is renamed before both new files are complete, checked against their SHA-256 and
    synced. If the second rename fails, the first is undone from the backup. Afterwards only the
    newest ``keep`` backups of each file stay.
    """
    ct, kt = f"$d/{temp_name(CRT, stamp)}", f"$d/{temp_name(KEY, stamp)}"
    return _COMMON.format(dir=quote(remote_dir)) + f"""\
s={quote(stamp)}
ct="{ct}"; kt="{kt}"
trap 'rm -f "$ct" "$kt"' EXIT
for f in {CRT} {KEY}; do
  [ -L "$d/$f" ] && fail "$d/$f is a symbolic link; refusing to replace it (point it at a real file)"
  [ -e "$d/$f" ] && [ ! -f "$d/$f" ] && fail "$d/$f is not a regular file; refusing to replace it"
done
for f in {CRT} {KEY}; do
  if [ -f "$d/$f" ]; then cp -p "$d/$f" "$d/$f.lecentral-$s" || fail "cannot back up $d/$f (disk full?)"; fi
done
{_heredoc("$ct", pair.crt)}{_heredoc("$kt", pair.key)}\
chmod {pair.crt_mode:o} "$ct" && chmod {pair.key_mode:o} "$kt" || fail "cannot set the modes of the new files"
[ "$(sha "$ct")" = {pair.crt_sha256} ] || fail "$ct was not written completely (disk full?)"
[ "$(sha "$kt")" = {pair.key_sha256} ] || fail "$kt was not written completely (disk full?)"
sync
mv -f "$kt" "$d/{KEY}" || fail "cannot rename the new key into $d/{KEY}"
if ! mv -f "$ct" "$d/{CRT}"; then
  if [ -f "$d/{KEY}.lecentral-$s" ]; then cp -p "$d/{KEY}.lecentral-$s" "$kt" && mv -f "$kt" "$d/{KEY}"
  else rm -f "$d/{KEY}"; fi
  fail "cannot rename the new certificate into $d/{CRT}; the previous key was put back"
fi
sync
trap - EXIT
{_prune(keep)}
echo switched
{_persist(persist)}"""


def _prune(keep: int) -> str:
    return f"""\
for f in {CRT} {KEY}; do
  ls -1 "$d" | grep "^$f\\.lecentral-[0-9]" | sort -r | tail -n +{keep + 1} | while read -r b; do
    rm -f "$d/$b"
  done
done"""


def restore(remote_dir: str, stamp: str, existed: dict[str, bool], persist: str) -> str:
    """Put back the pair that ``stamp``'s switch replaced (a file that did not exist is removed),
    then run ``persist``.

    Repeatable: a file already equal to its backup is left alone.
    """
    lines = [_COMMON.format(dir=quote(remote_dir)), f"s={quote(stamp)}", 't="$d/.lecentral-restore-$s"',
             "trap 'rm -f \"$t\"' EXIT"]
    for name in (CRT, KEY):
        lines.append(f'rm -f "$d/{temp_name(name, stamp)}"')
        if existed[name]:
            b = f'"$d/{backup_name(name, stamp)}"'
            lines += [f'[ -f {b} ] || fail "backup {backup_name(name, stamp)} is missing in $d"',
                      f'if [ "$(sha {b})" != "$(sha "$d/{name}")" ]; then',
                      f'  cp -p {b} "$t" && mv -f "$t" "$d/{name}" || fail "cannot restore $d/{name}"',
                      "fi"]
        else:
            lines.append(f'rm -f "$d/{name}" || fail "cannot remove $d/{name}"')
    lines += ["sync", "echo restored", _persist(persist)]
    return "\n".join(lines)


def finish(remote_dir: str, stamp: str, crt_sha256: str, key_sha256: str) -> str:
    """After a run killed during :func:`switch`: complete it if the new key is already in place
    (the certificate's temp file is complete), drop the temp files, and print ``switched`` if the
    new pair is in place or ``abandoned`` if the previous one still is (backups stay)."""
    ct, kt = f"$d/{temp_name(CRT, stamp)}", f"$d/{temp_name(KEY, stamp)}"
    return _COMMON.format(dir=quote(remote_dir)) + f"""\
ct="{ct}"; kt="{kt}"
if [ -f "$ct" ] && [ "$(sha "$ct")" = {crt_sha256} ] && [ "$(sha "$d/{KEY}")" = {key_sha256} ]; then
  mv -f "$ct" "$d/{CRT}" || fail "cannot rename $ct into $d/{CRT}"
  sync
fi
rm -f "$ct" "$kt"
if [ "$(sha "$d/{CRT}")" = {crt_sha256} ] && [ "$(sha "$d/{KEY}")" = {key_sha256} ]; then
  echo switched
else
  echo abandoned
fi"""
