"""The built-in ``certbot-webroot`` issuer: the seed's way, running the real certbot.

For one certbot='Y' row: the ``webroot_path`` is validated, the web server is checked to serve it
for every name (``[http01] self_check``, as the ``webroot`` issuer does, so a wrong webroot never
becomes a failed validation at the CA), then::

    certbot certonly --non-interactive --webroot -w WEBROOT --csr CSR \\
        --cert-path .. --chain-path .. --fullchain-path .. --server [acme] directory \\
        --agree-tos -m [acme] email --config-dir/--work-dir/--logs-dir under [certbot] state_dir

runs in a fresh private directory; what certbot wrote is read back and split into ``crt``/``ca``
for the renew job's checks. certbot keeps its own ACME account in ``state_dir/config``, and
locks its directories while it runs; so that several certificates can be issued at once, runs
use up to four state directories (``state_dir`` and ``state_dir/slots/N``), each with a copy of
that one account. Until certbot has an account for ``[acme] directory``, runs take turns in
``state_dir`` (the first one registers it). The EAB MAC key, when configured, goes
to certbot in a 0600 config file, never on its command line (which every local user can read).
certbot's own error text (the CA's problems, from its output) becomes the IssueError, so it
reaches the event log; its full log stays in ``state_dir/logs``.

IP addresses (RFC 8738) in the CSR need a certbot that orders IP identifiers (certbot 5, whose
``--help all`` lists ``--ip-address``); an older one would order the DNS names alone and the
certificate would be refused after issuance, so it is asked once, and a row with IP addresses
gets a clear error naming the native ``webroot`` issuer instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from lecentral.errors import IssueError
from lecentral.http01.native import site_checker
from lecentral.http01.webroot import ChallengeDirs, http01_names, webroot_of
from lecentral.interfaces import IssuedCertificate, Issuer
from lecentral.names import is_ip

if TYPE_CHECKING:
    from lecentral.certificates import Csr
    from lecentral.config import CentralConfig
    from lecentral.store.rows import CertRow

log = logging.getLogger(__name__)

NAME = "certbot-webroot"

#: certbot's chatter, not its error
_NOISE = ("Saving debug log", "Requesting a certificate", "Ask for help", "- - -",
          "If you like Certbot", "* Donating", "Donating to", "Account registered")
MAX_ERROR = 2000
#: certbot runs at the same time, at most (each is a Python process of ~80 MB)
MAX_SLOTS = 4


def find_certbot(command: str) -> str:
    """The full path of ``[certbot] command``; IssueError saying how to install certbot if absent."""
    found = shutil.which(command) if command.strip() else None
    if found is None:
        where = "on PATH (" + os.environ.get("PATH", "") + ")" if os.sep not in command else ""
        raise IssueError(
            f"certbot is not installed: [certbot] command = {command!r} was not found {where}".rstrip()
            + "; install it with `pip install lecentral[certbot]` (or Debian's certbot package), "
            "or set [certbot] command to the full path of certbot, or let the native issuer "
            'handle certbot rows: [renew] http01_issuer = "webroot"')
    return found


def certbot_error(output: str) -> str:
    """certbot's error text from its output, on one line, without its chatter."""
    lines = [" ".join(line.split()) for line in output.splitlines()]
    kept = [line for line in lines if line and not line.startswith(_NOISE)]
    text = " ".join(kept) or "no output"
    return text if len(text) <= MAX_ERROR else text[:MAX_ERROR] + " ..."


class StateSlots:
    """certbot state directories that runs may use at the same time, sharing one ACME account."""

    def __init__(self, state: Path, server: str, count: int) -> None:
        self.state = state
        parts = urlsplit(server)
        #: where certbot keeps the account for ``server`` (certbot's own layout)
        self.account_dir = Path("config", "accounts", parts.netloc + parts.path)
        self._free = list(range(count))
        self._cond = threading.Condition()
        self._registering = threading.Lock()

    def root(self, slot: int) -> Path:
        """The state directory of ``slot`` (its config, work and logs directories are below)."""
        return self.state if slot == 0 else self.state / "slots" / str(slot)

    def has_account(self) -> bool:
        """True once certbot has registered an account for the server in the primary directory."""
        return any((self.state / self.account_dir).glob("*/regr.json"))

    @contextlib.contextmanager
    def take(self) -> Iterator[Path]:
        """A state directory for one certbot run, with the shared account in it."""
        if not self.has_account():
            with self._registering:  # the first run registers the account; the others wait
                if not self.has_account():
                    slot = self._acquire(0)
                    try:
                        yield self.root(0)
                    finally:
                        self._release(slot)
                    return
        slot = self._acquire(None)
        try:
            if slot:
                self._copy_account(slot)
            yield self.root(slot)
        finally:
            self._release(slot)

    def _copy_account(self, slot: int) -> None:
        source = self.state / "config" / "accounts"
        target = self.root(slot) / "config" / "accounts"
        try:
            (self.state / "slots").mkdir(mode=0o700, exist_ok=True)
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            shutil.copytree(source, target, dirs_exist_ok=True)  # modes kept: keys stay 0400
        except OSError as exc:
            raise IssueError(f"cannot copy certbot's account from {source} to {target} "
                             f"({exc}); check [certbot] state_dir") from None

    def _acquire(self, wanted: int | None) -> int:
        with self._cond:
            while True:
                if wanted is None and self._free:
                    self._free.sort()  # the primary first: fewer copies of the account
                    return self._free.pop(0)
                if wanted is not None and wanted in self._free:
                    self._free.remove(wanted)
                    return wanted
                self._cond.wait()

    def _release(self, slot: int) -> None:
        with self._cond:
            self._free.append(slot)
            self._cond.notify_all()


class CertbotWebrootIssuer(Issuer):
    """Issues certificates for certbot='Y' rows by running ``certbot certonly --webroot --csr``."""

    def __init__(self, config: CentralConfig) -> None:
        self.config = config
        self.certbot = find_certbot(config.certbot.command)
        self.state = Path(config.certbot.state_dir)
        self.checker = site_checker(config)
        self.dirs = ChallengeDirs()
        self.slots = StateSlots(self.state, config.acme.first().directory,
                                max(1, min(config.renew.workers, MAX_SLOTS)))
        # certbot removes the challenge directories it made: one run (or self-check) at a time
        # per webroot, so that it never removes one that another run is about to write into
        self._webroots: dict[Path, threading.Lock] = {}
        self._lock = threading.Lock()
        self._ip_support: str | None = None  # "" if certbot orders IP identifiers, else why not

    def _webroot_turn(self, webroot: Path) -> threading.Lock:
        with self._lock:
            return self._webroots.setdefault(Path(os.path.realpath(webroot)), threading.Lock())

    def issue(self, row: CertRow, csr: Csr) -> IssuedCertificate:
        from lecentral.certificates import split_fullchain

        webroot = webroot_of(row.name, row.webroot_path)
        names = http01_names(row.name, csr.names)
        if csr.ips:
            self.require_ip_support(row.name, csr.ips)
        if csr.cn is not None and is_ip(csr.cn):
            raise IssueError(
                f"{row.name}: the CSR's CN is the IP address {csr.cn}, which certbot --csr orders "
                "as a DNS name and refuses (\"will not issue certificates for a bare IP "
                "address\"); make a CSR without a CN, the address in subjectAltName only "
                f"(lecentral-install csr {csr.cn} --key PATH does), or let the native issuer, "
                "which orders it as an IP address, handle certbot rows ([renew] http01_issuer = "
                "\"webroot\")")
        with self._webroot_turn(webroot):
            if self.checker is not None:
                with self.dirs.open(webroot) as files:
                    self.checker.probe(files, names)
            with self.slots.take() as state:
                run_dir = self._run_dir()
                try:
                    fullchain = self._run(row, csr, webroot, names, run_dir, state)
                finally:
                    shutil.rmtree(run_dir, ignore_errors=True)
        crt, ca = split_fullchain(fullchain)
        return IssuedCertificate(crt=crt, ca=ca)

    def require_ip_support(self, row_name: str, ips: list[str]) -> None:
        """IssueError unless this certbot orders IP identifiers (asked once per run)."""
        with self._lock:
            if self._ip_support is None:
                self._ip_support = self._ask_ip_support()
        if self._ip_support:
            raise IssueError(
                f"{row_name}: the CSR asks for the IP address {', '.join(ips)}, but "
                f"{self._ip_support}; let the native issuer handle certbot rows "
                '([renew] http01_issuer = "webroot"), or install certbot 5 or later')

    def _ask_ip_support(self) -> str:
        """"" if ``certbot --help all`` lists ``--ip-address``, else a sentence saying why not."""
        env = {**os.environ, "HOME": str(self.state), "XDG_CONFIG_HOME": str(self.state / "xdg")}

        def output(*args: str) -> str:
            return subprocess.run([self.certbot, *args], env=env, check=False,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=120).stdout.decode("utf-8",
                                                                                       "replace")

        try:
            if "--ip-address" in output("--help", "all"):
                return ""
            version = " ".join(output("--version").split())[:80] or "certbot"
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{self.certbot} --help all could not be run ({exc})"
        return (f"{version} ({self.certbot}) cannot order IP address identifiers (its "
                "--help all has no --ip-address)")

    def _run_dir(self) -> Path:
        runs = self.state / "runs"
        try:
            self.state.mkdir(mode=0o700, parents=True, exist_ok=True)
            runs.mkdir(mode=0o700, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix="run-", dir=runs))  # 0700
        except OSError as exc:
            raise IssueError(f"cannot create certbot's working directory under {runs} "
                             f"({exc.strerror}); check [certbot] state_dir") from None

    def _profile(self) -> str | None:
        """The ACME profile of the row being issued (``lecentral set --profile`` or ``[acme]
        profile``), with the native issuer's rules: refused, naming what the CA offers, when
        the CA offers others; left out, with a warning, when it offers none."""
        import requests

        from lecentral.acme.orders import OrderOptions, chosen_profile, current_options

        acme = self.config.acme.first()  # the CA certbot orders from (no fallback)
        options = current_options() or OrderOptions(profile=acme.profile or None)
        if not options.profile:
            return None
        try:
            reply = requests.get(acme.directory, timeout=30, verify=acme.ca_bundle or True)
            meta = reply.json().get("meta") or {}
        except (requests.RequestException, ValueError) as exc:
            raise IssueError(f"cannot read the CA's directory {acme.directory} to check the "
                             f"ACME profile {options.profile!r}: {exc}") from None
        offered = meta.get("profiles") if isinstance(meta, dict) else None
        profile = chosen_profile(options.profile, offered if isinstance(offered, dict) else {},
                                 acme.directory, options.profile_source)
        if profile is None:
            log.warning("the CA at %s offers no ACME profiles: certbot orders without %s %r",
                        acme.directory, options.profile_source, options.profile)
        return profile

    def argv(self, webroot: Path, run_dir: Path, state: Path,
             profile: str | None = None) -> list[str]:
        """certbot's command line for one run in ``run_dir`` with state ``state`` (no secret in it)."""
        acme = self.config.acme.first()  # certbot has its own accounts: the first CA, no fallback
        argv = [self.certbot, "certonly", "--non-interactive", "--webroot", "-w", str(webroot),
                "--csr", str(run_dir / "request.csr"),
                "--cert-path", str(run_dir / "cert.pem"),
                "--chain-path", str(run_dir / "chain.pem"),
                "--fullchain-path", str(run_dir / "fullchain.pem"),
                "--server", acme.directory, "--agree-tos", "--no-eff-email",
                "--config-dir", str(state / "config"), "--work-dir", str(state / "work"),
                "--logs-dir", str(state / "logs"), "--max-log-backups", "20"]
        argv += ["-m", acme.email] if acme.email else ["--register-unsafely-without-email"]
        if acme.eab_kid or acme.eab_hmac_key:
            argv += ["--config", str(run_dir / "eab.ini")]
        if profile:  # offered by the CA (checked by _profile): certbot must not fall back
            argv += ["--required-profile", profile]
        return argv

    def _run(self, row: CertRow, csr: Csr, webroot: Path, names: list[str], run_dir: Path,
             state: Path) -> bytes:
        acme = self.config.acme.first()  # certbot has its own accounts: the first CA, no fallback
        (run_dir / "request.csr").write_bytes(csr.pem)
        if acme.eab_kid or acme.eab_hmac_key:
            fd = os.open(run_dir / "eab.ini", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(f"eab-kid = {acme.eab_kid}\neab-hmac-key = {acme.eab_hmac_key}\n")
        env = {**os.environ, "HOME": str(self.state), "XDG_CONFIG_HOME": str(self.state / "xdg")}
        if acme.ca_bundle:
            env["REQUESTS_CA_BUNDLE"] = acme.ca_bundle
        timeout = acme.poll_timeout + 120
        argv = self.argv(webroot, run_dir, state, self._profile())
        log.info("%s: running certbot for %s (webroot %s)", row.name, ", ".join(names), webroot)
        try:
            done = subprocess.run(argv, cwd=run_dir, env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise IssueError(f"certbot did not finish within {timeout:.0f} s for "
                             f"{', '.join(names)} ([acme] poll_timeout + 120 s); see "
                             f"{state / 'logs'}/letsencrypt.log") from None
        except OSError as exc:
            raise IssueError(f"cannot run certbot {self.certbot}: {exc.strerror}; check "
                             "[certbot] command") from None
        output = done.stdout.decode("utf-8", "replace")
        if done.returncode != 0:
            hint = csr.sans_only_hint()  # certbot does not say at which step the CA refused
            hint = f"; if the CA refused the CSR itself: {hint}" if hint else ""
            raise IssueError(f"certbot failed for {', '.join(names)} (exit status "
                             f"{done.returncode}): {certbot_error(output)} (certbot's log: "
                             f"{state / 'logs'}/letsencrypt.log){hint}")
        try:
            return (run_dir / "fullchain.pem").read_bytes()
        except OSError as exc:
            raise IssueError(f"certbot reported success for {', '.join(names)} but wrote no "
                             f"{run_dir / 'fullchain.pem'} ({exc.strerror}); its output: "
                             f"{certbot_error(output)}") from None
