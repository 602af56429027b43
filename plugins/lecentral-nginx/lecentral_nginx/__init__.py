"""lecentral service plugin for nginx: Debian's layout, ``nginx -t`` plus a certificate/key check (``nginx -T``), ``nginx -s reload``.

Registered through the ``lecentral.plugins`` entry point ``nginx`` (see :mod:`lecentral_nginx.plugin`).
"""

__version__ = "0.1.0"
