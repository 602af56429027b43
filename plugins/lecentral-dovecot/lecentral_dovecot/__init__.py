"""lecentral service plugin for Dovecot: Debian's layout, ``doveconf -n``, ``doveadm reload``,
IMAP and POP3 (STARTTLS and implicit TLS) verification read from Dovecot's own configuration.

Registered through the ``lecentral.plugins`` entry point ``dovecot`` (see :mod:`lecentral_dovecot.plugin`).
"""

__version__ = "0.1.0"
