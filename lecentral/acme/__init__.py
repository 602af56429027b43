"""The ACME client lecentral's issuers share, on the ``acme`` + ``josepy`` libraries.

* :mod:`lecentral.acme.account` — the account key (created 0600 atomically on first use).
* :mod:`lecentral.acme.network` — a thread-safe ClientNetwork with bounded badNonce retries.
* :mod:`lecentral.acme.client` — :class:`~lecentral.acme.client.AcmeClient` (order, challenges,
  polling with Retry-After, finalize, ARI); a renew run makes one and hands it to its issuers
  (:class:`~lecentral.types.IssuerContext`).
* :mod:`lecentral.acme.problems` — ACME problem documents as IssueErrors.

Importing this package imports ``acme`` and ``requests``: do it inside the functions that need it.
"""
