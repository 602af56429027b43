"""The exceptions lecentral raises on purpose.

Every message names the thing at fault (file, key, zone, host:port, row) and says what to do next.
None of them ever carries a secret: build messages from names, never from secret values.
"""

from __future__ import annotations


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


class UnknownNameError(StoreError):
    """No row of ``certs`` has that name: the same refusal, exit 1, whichever command was typed."""

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
