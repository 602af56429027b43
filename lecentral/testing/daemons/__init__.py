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
PostfixServer      smtp (smtp+starttls), smtps, plain,   postfix -c DIR reload
                   smtpd_listeners (failure tests)
DovecotServer      imap, pop3 (+starttls), imaps, pop3s  doveadm -c CONF reload
SlapdServer        ldap (ldap+starttls), ldaps, ldapi    ldapmodify of olcTLS* (or restart())
FreeradiusServer   RADIUS auth (UDP), EAP-TLS            restart()
SshServer          ssh (for plugins that push over SSH)  -
=================  ====================================  ==========================================

Debian packages: nginx apache2 postfix dovecot-imapd dovecot-pop3d slapd ldap-utils freeradius
freeradius-utils eapoltest openssh-server.
Pytest fixtures: :mod:`lecentral.testing.daemons.fixtures`.
"""

from lecentral.testing.daemons.apache import ApacheServer
from lecentral.testing.daemons.base import TlsServer
from lecentral.testing.daemons.certs import CertFiles, pem_fingerprint, write_cert_files
from lecentral.testing.daemons.dovecot import DovecotServer
from lecentral.testing.daemons.freeradius import FreeradiusServer
from lecentral.testing.daemons.nginx import NginxServer
from lecentral.testing.daemons.postfix import PostfixServer
from lecentral.testing.daemons.slapd import SlapdServer
from lecentral.testing.daemons.sshd import SshServer

__all__ = [
    "ApacheServer",
    "CertFiles",
    "DovecotServer",
    "FreeradiusServer",
    "NginxServer",
    "PostfixServer",
    "SlapdServer",
    "SshServer",
    "TlsServer",
    "pem_fingerprint",
    "write_cert_files",
]
