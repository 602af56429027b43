"""A Postfix instance of its own: config_directory, queue and data directories in a temp dir.

The system's /etc/postfix is read for nothing but the list of files ``postfix check`` creates
(``meta_directory``); the system's Postfix is never started, stopped or reconfigured. Three
``smtpd`` listeners on 127.0.0.1 (dynamic ports):

* ``smtp``: STARTTLS offered (``smtpd_tls_security_level = may``), like port 25 or 587;
* ``smtps``: TLS from the first byte (``smtpd_tls_wrappermode = yes``), like port 465;
* ``plain``: no TLS at all, for "STARTTLS not offered" tests.

``smtpd_listeners`` adds more smtpd listeners, each on a port of its own with ``-o`` overrides in
``master.cf``, so one instance can also answer the ways a misconfigured server does (a listener
whose ``smtpd_client_restrictions = reject`` answers the greeting with 554, one whose broken TLS
key makes it answer STARTTLS with 454) while its other listeners work; see
:meth:`PostfixServer.listener_url`.

The certificate is given as ``smtpd_tls_chain_files = KEY, CERT[, CHAIN]`` (Postfix >= 3.4).
``postfix -c DIR check`` creates the queue; the ``master`` process then runs in the foreground
(``-d``) so it can be stopped by pid. Reload as an admin would: ``postfix -c DIR reload`` (SIGHUP
to the master, whose new smtpd processes load the new files). Logs go to ``maillog``. It never
delivers mail (``default_transport`` and ``relay_transport`` are ``error:``), so nothing a test
provokes, such as a postmaster notice about a broken key, leaves 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lecentral_testing.daemons.base import TlsServer
from lecentral_testing.process import (
    Daemon,
    ServerStartError,
    chown_to,
    daemon_user,
    find_executable,
)

DAEMON_DIR = Path("/usr/lib/postfix/sbin")

#: every transport that could leave the host: mail bounces (a double bounce is dropped) instead
NO_DELIVERY = "error:a test Postfix delivers no mail"

#: listener name -> verify URL scheme, in every instance
_BUILTIN_LISTENERS = {"smtp": "smtp+starttls", "smtps": "smtps", "plain": "smtp+starttls"}


def _checked_listeners(listeners: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """``smtpd_listeners`` copied, or ValueError for what master.cf cannot hold."""
    checked: dict[str, dict[str, str]] = {}
    for name, params in listeners.items():
        if name in _BUILTIN_LISTENERS or not name.replace("-", "_").isidentifier():
            raise ValueError(f"smtpd_listeners: {name!r} is a built-in listener or not a plain name")
        for key, value in params.items():
            if not key.isidentifier() or "\n" in value or "}" in value:  # "}" would end "-o { }"
                raise ValueError(f"smtpd_listeners[{name!r}]: cannot pass {key} = {value!r} with -o")
        checked[name] = dict(params)
    return checked


# chroot "n" everywhere: our queue is not set up as a chroot jail.
_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixServer(TlsServer):
    """Postfix with ``smtp`` (STARTTLS), ``smtps`` (implicit TLS) and ``plain`` smtpd listeners.

    ``main_cf``: extra ``main.cf`` parameters (override any default here, e.g. the
    ``smtpd_tls_cert_file``/``smtpd_tls_key_file`` style instead of chain files).
    ``smtpd_listeners``: extra smtpd listeners, name -> ``main.cf`` parameters overridden for that
    listener only (``-o``), e.g. ``{"reject": {"smtpd_delay_reject": "no",
    "smtpd_client_restrictions": "reject"}}``. Not in :attr:`verify_urls` (they are for failure
    tests, and :meth:`reload` would wait for them to present the certificate): use
    :meth:`listener_url`.
    """

    kind = "postfix"
    serving_processes = ("smtpd",)

    def __init__(self, workdir: Path | str | None = None, *, cert: Path | str, key: Path | str,
                 chain: Path | str | None = None, myhostname: str = "mail.example.test",
                 main_cf: dict[str, str] | None = None,
                 smtpd_listeners: Mapping[str, Mapping[str, str]] | None = None) -> None:
        super().__init__(workdir, cert=cert, key=key, chain=chain)
        self.myhostname = myhostname
        self.main_cf_extra = dict(main_cf or {})
        self.smtpd_listeners = _checked_listeners(smtpd_listeners or {})
        self._postfix = find_executable("postfix", package="postfix")
        self._master = str(DAEMON_DIR / "master")
        self.user = daemon_user("postfix")
        # smtpd drops to the postfix user and must still reach the queue: a root-owned 0755 tree.
        self.base = self.reachable_dir("postfix", self.user)
        self.config_dir = self.base / "etc"
        self.queue_dir = self.base / "queue"
        self.data_dir = self.base / "data"
        self.maillog = self.base / "maillog"

    def listeners(self) -> dict[str, str]:
        return {**_BUILTIN_LISTENERS, **{name: "smtp+starttls" for name in self.smtpd_listeners}}

    @property
    def verify_urls(self) -> dict[str, str]:
        """``smtp`` and ``smtps`` only: ``plain`` offers no TLS to verify (see :attr:`plain_url`),
        and the ``smtpd_listeners`` are for failure tests (see :meth:`listener_url`)."""
        urls = super().verify_urls
        for name in ("plain", *self.smtpd_listeners):
            urls.pop(name, None)
        return urls

    @property
    def plain_url(self) -> str:
        """``smtp+starttls://`` URL of the listener that offers no STARTTLS (for error tests)."""
        return self.listener_url("plain")

    def listener_url(self, name: str) -> str:
        """The verify URL of any listener, ``plain`` and the ``smtpd_listeners`` included."""
        return f"{self.listeners()[name]}://{self.address}:{self.ports[name]}"

    def main_cf(self) -> dict[str, str]:
        """The ``main.cf`` parameters written (defaults, then the caller's ``main_cf``)."""
        files = ", ".join(str(p) for p in (self.key, self.cert, self.chain) if p is not None)
        params = {
            "compatibility_level": "3.6",
            "config_directory": str(self.config_dir),
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "meta_directory": "/etc/postfix",  # read only: postfix-files, the list of queue dirs
            "command_directory": "/usr/sbin",
            "daemon_directory": str(DAEMON_DIR),
            "shlib_directory": "/usr/lib/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": self.myhostname,
            "mydestination": "",
            "alias_maps": "",
            "alias_database": "",
            "inet_interfaces": self.address,
            "inet_protocols": "ipv4",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.base),
            "smtpd_tls_security_level": "may",
            "smtpd_tls_chain_files": files,
            # Never deliver: a TLS "local problem" (a broken key) makes smtpd mail a notice to
            # postmaster@myhostname, which is not local here and would go out by DNS and SMTP.
            "default_transport": NO_DELIVERY,
            "relay_transport": NO_DELIVERY,
        }
        params.update(self.main_cf_extra)
        return params

    def write_config(self) -> None:
        self.config_dir.mkdir(exist_ok=True)
        self.queue_dir.mkdir(exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        chown_to(self.data_dir, self.user)
        (self.config_dir / "main.cf").write_text(
            "".join(f"{key} = {value}\n" for key, value in self.main_cf().items()))
        smtp, smtps, plain = (self.ports[name] for name in ("smtp", "smtps", "plain"))
        (self.config_dir / "master.cf").write_text(
            f"{self.address}:{smtp} inet n - n - - smtpd\n"
            f"{self.address}:{smtps} inet n - n - - smtpd\n"
            "  -o smtpd_tls_wrappermode=yes\n  -o smtpd_tls_security_level=encrypt\n"
            f"{self.address}:{plain} inet n - n - - smtpd\n  -o smtpd_tls_security_level=none\n"
            + "".join(self._extra_listener(name, params) for name, params in self.smtpd_listeners.items())
            + _SERVICES)

    def _extra_listener(self, name: str, params: Mapping[str, str]) -> str:
        """A master.cf entry for one of the ``smtpd_listeners``, its parameters as ``-o``."""
        lines = [f"{self.address}:{self.ports[name]} inet n - n - - smtpd"]
        # "-o { name = value }" (Postfix >= 3.0) keeps a value with spaces in one argument.
        lines += [f"  -o {{ {key} = {value} }}" for key, value in params.items()]
        return "\n".join(lines) + "\n"

    def prepare(self) -> None:
        try:
            self.config_test()  # also creates the queue directories, with their owners and modes
        except ServerStartError as exc:
            raise ServerStartError(f"{exc}\nmaillog:\n{self._maillog_tail()}") from None

    def _maillog_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.maillog.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no maillog)"

    def daemon(self) -> Daemon:
        argv = [self._master, "-c", str(self.config_dir), "-d"]
        return Daemon("postfix-master", argv, log_path=self.base / "master.log", cwd=self.base)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of ``maillog`` (where smtpd reports TLS problems)."""
        return self._maillog_tail(lines)

    @property
    def pid_path(self) -> Path:
        return self.queue_dir / "pid" / "master.pid"

    @property
    def reload_argv(self) -> list[str]:
        return [self._postfix, "-c", str(self.config_dir), "reload"]

    @property
    def check_argv(self) -> list[str]:
        return [self._postfix, "-c", str(self.config_dir), "check"]
