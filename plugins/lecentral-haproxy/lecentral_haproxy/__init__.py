"""lecentral service plugin for HAProxy: one combined PEM in /etc/haproxy/certs/, ``haproxy -c``, ``systemctl reload haproxy``.

Registered through the ``lecentral.plugins`` entry point ``haproxy`` (see :mod:`lecentral_haproxy.plugin`).
"""

__version__ = "0.1.0"
