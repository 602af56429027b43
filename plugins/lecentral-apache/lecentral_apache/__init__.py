"""lecentral service plugin for Apache httpd: Debian's layout, ``apache2ctl configtest`` plus a
certificate/key check, ``apache2ctl graceful``.

Registered through the ``lecentral.plugins`` entry point ``apache`` (see :mod:`lecentral_apache.plugin`).
"""

__version__ = "0.1.0"
