"""The exceptions lecentral raises on purpose.

Every message names the thing at fault (file, key, zone, host:port, row) and says what to do next.
None of them ever carries a secret: build messages from names, never from secret values.
"""

from __future__ import annotations

#: The exit status table of both CLIs (``lecentral`` and ``lecentral-install``), one code per
#: kind of error below: the ``--help`` epilogs and docs/reference.md's table are made from it
#: (tests/test_cli_polish.py checks the docs). ``lecentral check`` and ``lecentral-install check``
#: are monitoring plugins and keep the plugin conventions (0 OK .. 3 UNKNOWN) instead.
EXIT_CODES: tuple[tuple[int, str, str], ...] = (
    # (code, what --help shows, the rest of docs/reference.md's row)
    (0, "done; nothing failed", ""),
    (1, "something failed, or a refusal",
     ("a certificate not renewed or not installed, a service that does not serve it or refuses "
     "connections; a NAME not in the database or not configured (in every command, whatever "
     "it does), remove aborted")),
    (2, "configuration or usage error",
     ("missing file, unknown key, wrong type or value, bad option; in lecentral renew also an "
      "account key or TSIG key file that cannot be made or read (said once; the certificates it "
      "stopped are BLOCKED, their failure counts unchanged)")),
    (3, "plugin error", "unknown plugin, one that failed to load, a name registered twice"),
    (4, "database error",
     ("unreachable, tables missing (lecentral init) or older than this lecentral (lecentral "
     "upgrade), a write refused, a duplicate row")),
    (5, "CSR or certificate error", "unparsable, bad signature, weak key, wrong names"),
    (6, "issuance error", "outside the renew job's per-certificate accounting"),
    (7, "install lock held, or install error",
     ("another lecentral-install run holds the agent's lock, or its state directory ([agent] "
      "state_dir) cannot be used: nothing done; any other install error outside the agent's "
      "per-certificate accounting (one certificate's is 1)")),
    (8, "renew lock held", "another lecentral renew holds the database's renew lock; nothing done"),
    (9, "output error",
     ("stdout could not be written (a full disk, an I/O error): said once on stderr; the "
      "command itself ran to its end (lecentral check and lecentral-install check say 3, "
      "UNKNOWN). A broken pipe (the reader gone early, as head does) is not an error: the "
      "command keeps its own exit status")),
)


def exit_code_rows() -> list[tuple[int, str]]:
    """(code, full meaning) of every row of :data:`EXIT_CODES`, as docs/reference.md shows them."""
    return [(code, f"{short}: {rest}" if rest else short) for code, short, rest in EXIT_CODES]


class LecentralError(Exception):
    """Base of every error lecentral reports to a user; the CLI prints it and exits non-zero."""

    exit_code = 1


class ConfigError(LecentralError):
    """The configuration file is missing, unreadable, or holds an unknown key or a wrong type."""

    exit_code = 2


class EntryError(ConfigError):
    """One key of one ``[[cert]]`` entry is wrong; raised by a service plugin.

    ``key`` is the dotted key inside the entry (``options.port``, ``action``); the agent prefixes
    the message with the file and the entry (``install.toml: cert[2].options.port: ...``), so a
    plugin's message says only what is wrong and what to do. Raised from an options dataclass
    (``ServiceType(options_model=...)``), ``key`` is relative to ``[cert.options]`` (``port``).
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class PluginError(LecentralError):
    """A plugin is unknown, failed to load, or two plugins claim the same name."""

    exit_code = 3


class StoreError(LecentralError):
    """The certificate database is unreachable, or a row is missing, duplicated or invalid."""

    exit_code = 4


class DatabaseUnavailable(StoreError):
    """The database server stayed unavailable through the whole ``[database] retry_for``: the
    next write of the same run would wait as long again, so a renew pass stops saving (what it
    issued stays in the spool for the next run)."""


class UnknownNameError(StoreError):
    """No row of ``certs`` (or no ``[[cert]]`` of install.toml, for the agent) has that name, or
    the NAME typed is not even a DNS name: the same refusal, exit 1, whichever command of either
    CLI was typed (scripts test for it)."""

    exit_code = 1


class CsrError(LecentralError):
    """A CSR or certificate cannot be parsed, has a bad signature, a weak key, or the wrong names."""

    exit_code = 5


class IssueError(LecentralError):
    """Issuing a certificate failed (ACME problem, DNS update refused, challenge not served...)."""

    exit_code = 6


class DnsError(IssueError):
    """A DNS query or a TSIG-signed dynamic update failed; the message names server, zone and key."""


class RenewLockedError(LecentralError):
    """Another ``lecentral renew`` holds the renew lock of the database: this run did nothing."""

    exit_code = 8


class InstallError(LecentralError):
    """The agent could not install, verify or roll back a certificate on this server."""

    exit_code = 7


class VerifyError(InstallError):
    """The service does not present the expected certificate (or cannot be reached to check)."""
