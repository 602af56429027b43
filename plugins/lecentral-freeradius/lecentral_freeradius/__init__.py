"""lecentral service plugin for FreeRADIUS: EAP certificate files (also inside a chroot), ``freeradius -C``,
restart, checks with pyrad (Access-Request) and eapol_test (the certificate EAP-TLS presents).

Registered through the ``lecentral.plugins`` entry point ``freeradius`` (see :mod:`lecentral_freeradius.plugin`).
"""

__version__ = "0.1.0"
