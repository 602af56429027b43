"""lecentral service plugin for Postfix: Debian's layout, ``postfix check``, ``postfix reload``,
copies in the chroot, SMTP STARTTLS and SMTPS verification read from master.cf.

Registered through the ``lecentral.plugins`` entry point ``postfix`` (see :mod:`lecentral_postfix.plugin`).
"""

__version__ = "0.1.0"
