"""lecentral service plugin for VMware ESXi: pushes rui.crt/rui.key over SSH from a management host.

Registered through the ``lecentral.plugins`` entry point ``esxi`` (see :mod:`lecentral_esxi.plugin`).
"""

__version__ = "0.1.0"
