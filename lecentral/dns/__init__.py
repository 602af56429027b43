"""DNS for DNS-01: TSIG keys, zone discovery, RFC 2136 updates, propagation checks.

The issuer uses :class:`lecentral.dns.challenge.DnsChallenges`; ``lecentral dns`` uses the rest.
Modules import dnspython inside their functions so ``lecentral --help`` stays fast.
"""
