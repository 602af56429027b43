"""Real Debian daemons presenting a certificate on 127.0.0.1, for verifier, agent and plugin tests.

Each launcher runs the packaged daemon with a configuration of its own in a temp dir, on dynamic
unprivileged ports, never touching the system's instance; it is stopped by pid. Each takes the
paths of the certificate files it reads, exposes its ports and :attr:`~TlsServer.verify_urls`, and
reloads the way an admin would (:attr:`~TlsServer.reload_argv`, :meth:`~TlsServer.reload`).

=================  ====================================  ==========================================
launcher           listeners (verify URL scheme)         reload
=================  ====================================  ==========================================
NginxServer        https (tls)                           nginx -s reload
ApacheServer       https (https)                         apache2 -k graceful
HaproxyServer      https (tls)                           SIGUSR2 to the master (systemctl reload)
PostfixServer      smtp (smtp+starttls), smtps, plain,   postfix -c DIR reload
                   smtpd_listeners (failure tests)
DovecotServer      imap, pop3 (+starttls), imaps, pop3s  doveadm -c CONF reload
SlapdServer        ldap (ldap+starttls), ldaps, ldapi    ldapmodify of olcTLS* (or restart())
=================  ====================================  ==========================================

Debian packages: nginx apache2 haproxy postfix dovecot-imapd dovecot-pop3d slapd ldap-utils.
(The FreeRADIUS and OpenSSH launchers live with the tests of the plugins that use them:
plugins/lecentral-freeradius/tests/radius_launcher.py, plugins/lecentral-esxi/tests/sshd_launcher.py.)
Pytest fixtures: :mod:`lecentral_testing.daemons.fixtures`.
"""

from lecentral_testing.daemons.apache import ApacheServer
from lecentral_testing.daemons.base import TlsServer
from lecentral_testing.daemons.certs import CertFiles, pem_fingerprint, write_cert_files
from lecentral_testing.daemons.dovecot import DovecotServer
from lecentral_testing.daemons.haproxy import HaproxyServer
from lecentral_testing.daemons.nginx import NginxServer
from lecentral_testing.daemons.postfix import PostfixServer
from lecentral_testing.daemons.slapd import SlapdServer

__all__ = [
    "ApacheServer",
    "CertFiles",
    "DovecotServer",
    "HaproxyServer",
    "NginxServer",
    "PostfixServer",
    "SlapdServer",
    "TlsServer",
    "pem_fingerprint",
    "write_cert_files",
]
