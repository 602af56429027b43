"""lecentral service plugin for nginx: defaults for Debian's layout, ``nginx -t``, ``nginx -s reload``.

Registered through the ``lecentral.plugins`` entry point ``nginx`` (see :mod:`lecentral_nginx.plugin`).
"""

__version__ = "0.1.0"
