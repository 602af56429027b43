"""HTTP-01 issuance for certbot='Y' rows: a site's webroot on this host proves its names.

* :mod:`lecentral.http01.webroot` — the row's ``webroot_path`` validated, challenge files written
  (0644, directories 0755) and removed whatever happens.
* :mod:`lecentral.http01.selfcheck` — fetching ``http://NAME/.well-known/acme-challenge/FILE``
  ourselves, as the CA will, before the CA is asked.
* :mod:`lecentral.http01.native` — the ``webroot`` issuer, on the shared ACME client.
* :mod:`lecentral.http01.certbot` — the ``certbot-webroot`` issuer, running the real certbot.
* :mod:`lecentral_testing.webroot` — nginx serving webroots, for tests, the demo and the benchmark.

Both issuers are registered by :mod:`lecentral.builtin.webroot`; ``[renew] http01_issuer`` picks one.
"""
