"""lecentral: central ACME certificate management from CSRs, with a per-server install agent."""

__version__ = "0.1.0"
