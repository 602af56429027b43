"""A throwaway machine booted with systemd as PID 1: this host's own root under ``systemd-nspawn``.

The host's ``/`` is bind-mounted (so the checkout, its virtualenv and every installed Debian
package are there) and booted read-only below a tmpfs overlay (``--volatile=overlay``): whatever
the machine writes vanishes when it stops. ``--private-network`` gives it its own loopback, so its
services may listen on their real ports (53, 443, 3306) beside the other tests' daemons. It boots
``basic.target`` only: no distro service starts until :meth:`Machine.run` starts it
(``systemctl start named``), which keeps the boot to a few seconds.

Commands run inside through ``nsenter`` into the namespaces of the machine's PID 1, as root, with
a plain root environment (never this process's PATH or virtualenv).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

#: The environment of a root shell on the machine.
ROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root", "LANG": "C.UTF-8", "USER": "root", "LOGNAME": "root"}


#: seconds; a boot takes a few, but the machine may be shared with a heavy load
BOOT_TIMEOUT = 180


class Machine:
    """``with Machine(workdir, binds={host_dir: path_inside}) as m: m.run("systemctl ...")``."""

    def __init__(self, workdir: Path, binds: Mapping[Path, str] | None = None) -> None:
        self.workdir = workdir
        self.root = workdir / "root"
        self.binds = dict(binds or {})
        self.name = f"lecentral-{os.getpid()}-{time.monotonic_ns() % 100000}"
        self.log = workdir / "machine.log"
        self._nspawn: subprocess.Popen[bytes] | None = None
        self._mounted = False
        self.pid1 = 0

    def start(self) -> Self:
        self.root.mkdir(parents=True)
        subprocess.run(["mount", "--bind", "/", str(self.root)], check=True, timeout=30)
        self._mounted = True
        argv = ["systemd-nspawn", "-D", str(self.root), "--volatile=overlay", "-M", self.name, "-b",
                "--register=no", "--link-journal=no", "--keep-unit", "--quiet",
                "--private-network"]
        argv += [f"--bind={host}:{inside}" for host, inside in self.binds.items()]
        argv.append("systemd.unit=basic.target")
        with open(self.log, "wb") as log:
            self._nspawn = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            start_new_session=True)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not self.pid1:
            self._alive()
            children = Path(f"/proc/{self._nspawn.pid}/task/{self._nspawn.pid}/children")
            found = children.read_text().split() if children.exists() else []
            self.pid1 = int(found[0]) if found else 0
            if time.monotonic() > deadline:
                raise RuntimeError(f"systemd-nspawn started no PID 1 in {BOOT_TIMEOUT} s: {self._log_tail()}")
            time.sleep(0.1)
        while True:
            self._alive()
            done = self.run("systemctl is-system-running", check=False)
            state = (done.stdout + done.stderr).strip()
            if state in ("running", "degraded"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the machine did not finish booting in {BOOT_TIMEOUT} s ({state}): "
                                   f"{self._log_tail()}")
            time.sleep(0.2)
        return self

    def _alive(self) -> None:
        assert self._nspawn is not None
        if self._nspawn.poll() is not None:
            raise RuntimeError(f"systemd-nspawn exited with {self._nspawn.returncode}: "
                               f"{self._log_tail()}")

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def run(self, script: str | Sequence[str], *, cwd: str = "/root", check: bool = True,
            env: Mapping[str, str] | None = None, timeout: float = 120,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``script`` (a bash script, or an argv) as root on the machine."""
        if not isinstance(script, str):
            script = shlex.join(script)
        # cd inside: nsenter's --wd resolves the directory before it enters the mount namespace
        argv = ["bash", "-euo", "pipefail", "-c", f"cd {shlex.quote(cwd)}\n{script}"]
        done = subprocess.run(
            ["nsenter", f"--target={self.pid1}", "--mount", "--uts", "--ipc", "--net", "--pid",
             "--", *argv],
            input=stdin, capture_output=True, text=True, timeout=timeout, check=False,
            env={**ROOT_ENV, **(env or {})})
        if check and done.returncode != 0:
            raise AssertionError(f"{argv} exited {done.returncode} on the machine:\n"
                                 f"{done.stdout}\n{done.stderr}")
        return done

    def stop(self) -> None:
        if self._nspawn is not None and self._nspawn.poll() is None:
            if self.pid1:
                os.kill(self.pid1, signal.SIGRTMIN + 4)  # systemd: poweroff
            try:
                self._nspawn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._nspawn.terminate()
                try:
                    self._nspawn.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._nspawn.kill()
                    self._nspawn.wait(timeout=10)
        if self._mounted:
            subprocess.run(["umount", str(self.root)], check=False, timeout=30)
            self._mounted = False

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
