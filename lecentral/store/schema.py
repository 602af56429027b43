"""Table definitions for SQLAlchemy Core.

``certs`` is described here only to query it; it is created from the DDL files in ``ddl/`` (the
seed's own DDL on MySQL/MariaDB), never altered. lecentral's own data lives in its own tables,
which the migrations in :mod:`lecentral.store.migrations` create and evolve: these definitions are
what the head revision makes (tests/test_migrations.py compares them), used to query the tables.
Table options (MySQL's charset and collation) belong to the migrations only: naming one here
would import SQLAlchemy's MySQL dialect into every process, SQLite's included.
"""

from __future__ import annotations

from importlib.resources import files

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

certs = Table(
    "certs", metadata,
    Column("name", String(250), primary_key=True),
    Column("enable", String(1)),
    Column("comment", Text),
    Column("certbot", String(1)),
    Column("csr", LargeBinary, nullable=False),
    Column("ca", LargeBinary),
    Column("crt", LargeBinary),
    Column("md5_modulus", String(64), nullable=False),
    Column("md5_ca", String(64)),
    Column("ts_expire", BigInteger),
    Column("ts_last_update", BigInteger),
    Column("count_fail_update", Integer),
    Column("old_ca", LargeBinary),
    Column("old_crt", LargeBinary),
    Column("webroot_path", Text),
)

#: Every renewal attempt, install report and admin change, with its error text.
events = Table(
    "lecentral_events", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("ts", BigInteger, nullable=False, index=True),
    Column("name", String(250), nullable=False, index=True),
    Column("kind", String(32), nullable=False),
    Column("host", String(255), nullable=False),
    Column("message", Text, nullable=False),
)

#: Who holds the renew lock (one row while a renew works), so that a run finding the lock taken
#: can say which host and process has it. The lock itself is GET_LOCK / an advisory lock; on a
#: Galera cluster the row is the lock (a lease: ``expires``, ``token``; revision 0005).
renew_lock = Table(
    "lecentral_renew_lock", metadata,
    Column("scope", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("since", BigInteger, nullable=False),
    Column("expires", BigInteger),
    Column("token", String(64)),
)

#: Challenge records an issuer published and could not remove (a TXT record, a webroot file):
#: ``lecentral renew`` retries removing each at the start of every run until it succeeds.
leftovers = Table(
    "lecentral_leftovers", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("ts", BigInteger, nullable=False),
    Column("name", String(250), nullable=False, index=True),
    Column("kind", String(32), nullable=False),
    Column("host", String(255), nullable=False),
    Column("target", Text, nullable=False),
    Column("data", Text, nullable=False),  # JSON: what a retry needs, never a secret
    Column("error", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("ts_last_try", BigInteger, nullable=False),
)

#: Per-certificate settings of lecentral's own (``certs`` stays the seed's table): the ACME
#: profile to order with (``lecentral set NAME --profile P``); no row: ``[acme] profile``; and
#: the CA that issued the stored certificate (its ``[[acme.ca]]`` name, "default" for ``[acme]``).
cert_settings = Table(
    "lecentral_cert_settings", metadata,
    Column("name", String(250), primary_key=True),  # lower case, as DNS compares names
    Column("profile", String(64)),  # NULL: [acme] profile applies
    Column("issuer_ca", String(64)),  # NULL: not recorded (issued before 0004, or not by renew)
    Column("issuer_ca_directory", String(500)),  # its directory URL when it issued
    Column("ts_changed", BigInteger, nullable=False),
)

#: What lecentral last derived from each row's stored certificate, CSR and chain, so that a renew
#: sweep parses only the rows that changed or may be due (lecentral/store/facts.py). One row per
#: ``certs`` row (its name exactly as stored), with the values it was derived from: the small
#: columns as read and a checksum of each blob. A row whose ``certs`` values differ from these
#: (any writer: download_cert.pl, populate.pl, a hand edit) is parsed again; ``certs`` is not
#: touched. ``state``: ``ok`` (valid row, good certificate), ``bad`` (the stored certificate is
#: bad), ``invalid`` (the row or its CSR is), ``none`` (no certificate yet), ``odd-name`` (a name
#: not as DNS compares it).
cert_facts = Table(
    "lecentral_cert_facts", metadata,
    Column("name", String(250), primary_key=True),  # certs.name exactly as stored
    Column("blobs_sum", BigInteger, nullable=False),  # of certs.crt, csr, ca (facts.blobs_sum)
    Column("certbot", String(1)),
    Column("md5_modulus", String(64)),
    Column("md5_ca", String(64)),
    Column("ts_expire", BigInteger),
    Column("webroot_path", Text),
    Column("state", String(16), nullable=False),
    Column("not_before", BigInteger),  # of the stored certificate (state ok/bad when it parses)
    Column("not_after", BigInteger),
    Column("fingerprint", String(64)),  # SHA-256 hex of the stored leaf
    Column("names", Text),  # JSON list of the CSR's names (state ok, bad, none)
    Column("ts_checked", BigInteger, nullable=False),
)

#: The renewal window each certificate's CA gave (ACME Renewal Information, RFC 9773), kept until
#: the CA's ``Retry-After`` (lecentral/renew/ariwindows.py). One row per ``certs`` row (its name
#: exactly as stored). Used only while ``ari_cert_id`` and ``fingerprint`` are still those of the
#: row's ``crt`` and before ``ts_retry``; a cache, safe to empty.
ari_windows = Table(
    "lecentral_ari_windows", metadata,
    Column("name", String(250), primary_key=True),  # certs.name exactly as stored
    Column("ari_cert_id", String(250), nullable=False),  # of the certificate asked about
    Column("fingerprint", String(64), nullable=False),  # its SHA-256 (as cert_facts.fingerprint)
    Column("window_start", BigInteger, nullable=False),  # the suggested window, epoch seconds
    Column("window_end", BigInteger, nullable=False),
    Column("due_at", BigInteger, nullable=False),  # the point in it this certificate renews at
    Column("explanation", String(500)),  # explanationURL, if any
    Column("ts_fetched", BigInteger, nullable=False),
    Column("ts_retry", BigInteger, nullable=False),  # not asked again before (Retry-After)
)

# --- fleet truth: what every server really serves ------------------------------------------------
# Written by the agents (deployments, runs) and the central host (runs, probes, endpoints, states).
# On MariaDB/MySQL and PostgreSQL, ``db_user`` is set by a trigger from the database server's own
# idea of the session user (never from the client), and the trigger refuses a report for a host
# that ``lecentral_agents`` does not map to that user (see contrib/sql/ and docs/fleet.md).

#: Which database user may report for which host (maintained on the central host:
#: ``lecentral agent add HOST --db-user USER``). Agents only read it (through the triggers).
agents = Table(
    "lecentral_agents", metadata,
    Column("host", String(255), primary_key=True),
    Column("db_user", String(128), nullable=False),
    Column("ts_added", BigInteger, nullable=False),
)

#: One current row per (name, host, entry): what an agent installed, and what the service
#: presented when the agent last looked.
deployments = Table(
    "lecentral_deployments", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("name", String(250), nullable=False),
    Column("host", String(255), nullable=False),
    Column("entry", String(250), nullable=False),  # the [[cert]] entry's id on that host
    Column("service", String(64), nullable=False),
    Column("installed_fp", String(64)),  # SHA-256 hex of the leaf in place, None: nothing installed
    Column("installed_not_after", BigInteger),
    Column("served_fp", String(64)),  # what the service presented at verify time
    Column("served_not_after", BigInteger),
    Column("served_names", Text),  # JSON list of its DNS names
    Column("served_key_md5", String(64)),  # md5_modulus of its key (as certs.md5_modulus)
    Column("served_url", String(500)),  # the verify URL that presented it (or failed)
    Column("served_error", Text),  # why nothing was seen there
    Column("ts_served", BigInteger),
    Column("verify_urls", Text, nullable=False),  # JSON list: what the central probe may ask too
    Column("paths", Text, nullable=False),  # JSON list of the files
    Column("result", String(32), nullable=False),  # the agent's status for the entry
    Column("message", Text, nullable=False),
    Column("agent_version", String(32), nullable=False),
    Column("ts_reported", BigInteger, nullable=False),
    Column("db_user", String(128)),  # set by the database server (trigger), not by the client
    UniqueConstraint("name", "host", "entry", name="uq_lecentral_deployments"),
    Index("ix_lecentral_deployments_host", "host"),
)

#: Every central ``renew`` and ``probe`` run and every reporting agent run (append-only history).
runs = Table(
    "lecentral_runs", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # renew, agent, probe
    Column("host", String(255), nullable=False),
    Column("ts_start", BigInteger, nullable=False),
    Column("ts_end", BigInteger, nullable=False),
    Column("exit_code", Integer, nullable=False),
    Column("counts", Text, nullable=False),  # JSON {status: count}
    Column("message", Text, nullable=False),
    Column("version", String(32), nullable=False),
    Column("db_user", String(128)),  # set by the database server (trigger)
    Index("ix_lecentral_runs_kind_host_ts_end", "kind", "host", "ts_end"),  # the latest runs
)

#: Endpoints an operator added by hand (``lecentral endpoint add NAME URL``), probed besides the
#: verify URLs the agents report.
endpoints = Table(
    "lecentral_endpoints", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("name", String(250), nullable=False),
    Column("url", String(500), nullable=False),
    Column("ts_added", BigInteger, nullable=False),
    Column("added_by", String(255), nullable=False),
    UniqueConstraint("name", "url", name="uq_lecentral_endpoints"),
)

#: The latest central probe of each (name, url): who probed, when, what was served.
probes = Table(
    "lecentral_probes", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("name", String(250), nullable=False),
    Column("url", String(500), nullable=False),  # as probed (loopback replaced by the agent's host)
    Column("source", String(16), nullable=False),  # "agent" (a reported verify URL) or "operator"
    Column("ts", BigInteger, nullable=False),
    Column("prober", String(255), nullable=False),  # the central host that probed
    Column("fingerprint", String(64)),
    Column("not_after", BigInteger),
    Column("names", Text),  # JSON list of the served leaf's DNS names
    Column("key_md5", String(64)),  # md5_modulus of the served key, compared with certs.md5_modulus
    Column("error", Text),  # unreachable, handshake failed... (fingerprint None)
    Column("db_user", String(128)),
    UniqueConstraint("name", "url", name="uq_lecentral_probes"),
)

#: The last state seen per fleet subject, so that a change (not every run) is notified.
fleet_states = Table(
    "lecentral_fleet_states", metadata,
    Column("subject", String(255), primary_key=True),  # sha256 hex of the subject key
    Column("name", String(250), nullable=False),
    Column("target", String(800), nullable=False),  # host/entry, an URL, or "renew-timer"
    Column("state", String(32), nullable=False),
    Column("ts_since", BigInteger, nullable=False),
    Column("detail", Text, nullable=False),
)

FLEET_TABLES = (agents, deployments, runs, endpoints, probes, fleet_states)

OWN_TABLES = (events, renew_lock, leftovers, *FLEET_TABLES, cert_settings, cert_facts,
              ari_windows)

#: SQLAlchemy dialect name -> folder of ``ddl/``
DDL_DIALECTS = {"mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite", "postgresql": "postgresql"}


def certs_ddl(dialect: str) -> str:
    """The CREATE TABLE for ``certs`` in a dialect (MySQL/MariaDB: the seed's DDL verbatim)."""
    folder = DDL_DIALECTS[dialect]
    return files("lecentral.store").joinpath("ddl", folder, "certs.sql").read_text("ascii")
