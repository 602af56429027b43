"""lecentral service plugin for OpenLDAP's slapd: Debian's layout, cn=config check, restart, LDAP checks.

Registered through the ``lecentral.plugins`` entry point ``openldap`` (see :mod:`lecentral_openldap.plugin`).
"""

__version__ = "0.1.0"
