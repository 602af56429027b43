"""Fleet truth: the agents, deployments, runs, endpoints, probes and fleet states tables, and on
MariaDB/MySQL and PostgreSQL the triggers that make a report trustworthy.

The triggers (BEFORE INSERT/UPDATE on lecentral_deployments, BEFORE INSERT on lecentral_runs and
lecentral_events) do two things the client cannot be trusted with:

* ``db_user`` is set from the database server's own idea of the session user (MariaDB: the user
  part of ``USER()``; never ``CURRENT_USER()``, which inside a trigger is its definer; PostgreSQL:
  ``session_user``), whatever the client sent. lecentral_events has no such column.
* Authorisation. The account that made the triggers (the central account that ran
  ``lecentral init``/``upgrade``) writes anything. An account listed in
  ``lecentral_agents.db_user`` (an agent) writes only rows whose host is mapped to it, only
  runs of kind ``agent``, and only install events (``installed``, ``install-failed``,
  ``request-unsent``) of now (within an hour of the server's clock). Any other account (one
  never mapped, or removed with ``lecentral agent remove``) writes nothing. An UPDATE is checked
  on the old and the new host, and may not move a row to another host.

PostgreSQL runs the trigger functions as their owner (SECURITY DEFINER, fixed search_path), so an
agent needs no right on lecentral_agents. Every step is re-runnable (MariaDB commits each DDL).

Revision ID: 0002_fleet
Revises: 0001_baseline
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_fleet"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None

#: (trigger, table, event, what it checks): the names are the same on both servers
TRIGGERS = (
    ("lecentral_deployments_ins", "lecentral_deployments", "INSERT"),
    ("lecentral_deployments_upd", "lecentral_deployments", "UPDATE"),
    ("lecentral_runs_ins", "lecentral_runs", "INSERT"),
    ("lecentral_events_ins", "lecentral_events", "INSERT"),
)


def _id() -> sa.Column[int]:
    # SQLite autoincrements only an INTEGER PRIMARY KEY
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                     autoincrement=True)


def _tables() -> list[tuple[str, list[sa.schema.SchemaItem]]]:
    return [
        ("lecentral_agents", [
            sa.Column("host", sa.String(255), primary_key=True),
            sa.Column("db_user", sa.String(128), nullable=False),
            sa.Column("ts_added", sa.BigInteger(), nullable=False),
        ]),
        ("lecentral_deployments", [
            _id(),
            sa.Column("name", sa.String(250), nullable=False),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("entry", sa.String(250), nullable=False),
            sa.Column("service", sa.String(64), nullable=False),
            sa.Column("installed_fp", sa.String(64)),
            sa.Column("installed_not_after", sa.BigInteger()),
            sa.Column("served_fp", sa.String(64)),
            sa.Column("served_not_after", sa.BigInteger()),
            sa.Column("served_names", sa.Text()),
            sa.Column("served_key_md5", sa.String(64)),
            sa.Column("served_url", sa.String(500)),
            sa.Column("served_error", sa.Text()),
            sa.Column("ts_served", sa.BigInteger()),
            sa.Column("verify_urls", sa.Text(), nullable=False),
            sa.Column("paths", sa.Text(), nullable=False),
            sa.Column("result", sa.String(32), nullable=False),
            sa.Column("message", sa.Text(), nullable=False),
            sa.Column("agent_version", sa.String(32), nullable=False),
            sa.Column("ts_reported", sa.BigInteger(), nullable=False),
            sa.Column("db_user", sa.String(128)),
            sa.UniqueConstraint("name", "host", "entry", name="uq_lecentral_deployments"),
        ]),
        ("lecentral_runs", [
            _id(),
            sa.Column("kind", sa.String(16), nullable=False),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("ts_start", sa.BigInteger(), nullable=False),
            sa.Column("ts_end", sa.BigInteger(), nullable=False),
            sa.Column("exit_code", sa.Integer(), nullable=False),
            sa.Column("counts", sa.Text(), nullable=False),
            sa.Column("message", sa.Text(), nullable=False),
            sa.Column("version", sa.String(32), nullable=False),
            sa.Column("db_user", sa.String(128)),
        ]),
        ("lecentral_endpoints", [
            _id(),
            sa.Column("name", sa.String(250), nullable=False),
            sa.Column("url", sa.String(500), nullable=False),
            sa.Column("ts_added", sa.BigInteger(), nullable=False),
            sa.Column("added_by", sa.String(255), nullable=False),
            sa.UniqueConstraint("name", "url", name="uq_lecentral_endpoints"),
        ]),
        ("lecentral_probes", [
            _id(),
            sa.Column("name", sa.String(250), nullable=False),
            sa.Column("url", sa.String(500), nullable=False),
            sa.Column("source", sa.String(16), nullable=False),
            sa.Column("ts", sa.BigInteger(), nullable=False),
            sa.Column("prober", sa.String(255), nullable=False),
            sa.Column("fingerprint", sa.String(64)),
            sa.Column("not_after", sa.BigInteger()),
            sa.Column("names", sa.Text()),
            sa.Column("key_md5", sa.String(64)),
            sa.Column("error", sa.Text()),
            sa.Column("db_user", sa.String(128)),
            sa.UniqueConstraint("name", "url", name="uq_lecentral_probes"),
        ]),
        ("lecentral_fleet_states", [
            sa.Column("subject", sa.String(255), primary_key=True),
            sa.Column("name", sa.String(250), nullable=False),
            sa.Column("target", sa.String(800), nullable=False),
            sa.Column("state", sa.String(32), nullable=False),
            sa.Column("ts_since", sa.BigInteger(), nullable=False),
            sa.Column("detail", sa.Text(), nullable=False),
        ]),
    ]


#: (index, table, columns): the latest runs per (kind, host) and a host's deployments
INDEXES = (
    ("ix_lecentral_runs_kind_host_ts_end", "lecentral_runs", ["kind", "host", "ts_end"]),
    ("ix_lecentral_deployments_host", "lecentral_deployments", ["host"]),
)


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    existing = set(inspector.get_table_names())
    for name, items in _tables():
        if name not in existing:
            op.create_table(name, *items, mysql_charset="utf8mb4")
    for index, table, columns in INDEXES:
        if index not in {i["name"] for i in sa.inspect(bind).get_indexes(table)}:
            op.create_index(index, table, columns)
    dialect = bind.dialect.name
    if dialect in ("mysql", "mariadb"):
        for trigger, table, event in TRIGGERS:
            bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger}")
            bind.exec_driver_sql(mysql_trigger(trigger, table, event))
    elif dialect == "postgresql":
        schema = str(bind.exec_driver_sql("SELECT current_schema()").scalar_one())
        for trigger, table, event in TRIGGERS:
            bind.exec_driver_sql(postgresql_function(trigger, table, event, schema))
            bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
            bind.exec_driver_sql(f"CREATE TRIGGER {trigger} BEFORE {event} ON {table} "
                                 f"FOR EACH ROW EXECUTE FUNCTION {trigger}()")


def downgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    for trigger, table, _ in TRIGGERS:
        if dialect in ("mysql", "mariadb"):
            bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger}")
        elif dialect == "postgresql":
            bind.exec_driver_sql(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
            bind.exec_driver_sql(f"DROP FUNCTION IF EXISTS {trigger}()")
    for name, _ in reversed(_tables()):
        op.drop_table(name)


# -- the checks, written once per server --------------------------------------------------------

#: the event kinds an agent writes (lecentral/install/engine.py, request.py): nothing else
AGENT_EVENT_KINDS = "'installed', 'install-failed', 'request-unsent'"
#: seconds an agent's event time may differ from the database server's clock
EVENT_CLOCK_SKEW = 3600


def _hosts(table: str, event: str) -> list[str]:
    """The host values a row change must be allowed for (an UPDATE: where it was and where it goes)."""
    return ["OLD.host", "NEW.host"] if event == "UPDATE" else ["NEW.host"]


def _user_part(expression: str) -> str:
    """MariaDB: the user part of 'user@client-host' (a user name may itself hold an '@')."""
    return (f"LEFT({expression}, CHAR_LENGTH({expression}) - "
            f"CHAR_LENGTH(SUBSTRING_INDEX({expression}, '@', -1)) - 1)")


def _mysql_refuse(message: str) -> list[str]:
    return [f"SET msg = LEFT(CONCAT({message}), 128);",  # MESSAGE_TEXT holds 128 characters
            "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = msg;"]


def mysql_trigger(trigger: str, table: str, event: str) -> str:
    """A MariaDB/MySQL trigger. User names compare byte for byte (accounts are case-sensitive);
    host names as the column's collation does (DNS names ignore case)."""
    body = [
        f"CREATE TRIGGER {trigger} BEFORE {event} ON {table} FOR EACH ROW",
        "BEGIN",
        f"DECLARE who VARCHAR(128) CHARACTER SET utf8mb4 DEFAULT {_user_part('USER()')};",
        f"DECLARE central VARCHAR(128) CHARACTER SET utf8mb4 DEFAULT {_user_part('CURRENT_USER()')};",
        "DECLARE host_user VARCHAR(128) CHARACTER SET utf8mb4 DEFAULT NULL;",
        "DECLARE mine TEXT CHARACTER SET utf8mb4 DEFAULT NULL;",
        "DECLARE msg VARCHAR(128) CHARACTER SET utf8mb4 DEFAULT NULL;",
    ]
    if table != "lecentral_events":
        body.append("SET NEW.db_user = who;")
    body += [
        "IF who <> central COLLATE utf8mb4_bin THEN",
        ("SET mine = (SELECT GROUP_CONCAT(host ORDER BY host SEPARATOR ', ') FROM lecentral_agents "
         "WHERE db_user = who COLLATE utf8mb4_bin);"),
        # the message holds 128 characters: a long host list is shortened, the refused host stays
        "IF CHAR_LENGTH(mine) > 40 THEN SET mine = CONCAT(LEFT(mine, 37), '...'); END IF;",
    ]
    body += [  # neither the central account nor an agent's: nothing (a removed agent's too)
        "IF mine IS NULL THEN",
        *_mysql_refuse("'lecentral: database user ', who, ' is neither the central account nor "
                       "mapped to a host (lecentral agent add HOST --db-user USER)'"),
        "END IF;",
    ]
    for host in _hosts(table, event):
        body += [
            f"SET host_user = (SELECT db_user FROM lecentral_agents WHERE host = {host});",
            "IF host_user IS NULL OR host_user <> who COLLATE utf8mb4_bin THEN",
            *_mysql_refuse(f"'lecentral: database user ', who, ' may report only for host(s) ', "
                           f"mine, ', not ', {host}"),
            "END IF;",
        ]
    if event == "UPDATE":
        body += [
            "IF NEW.host <> OLD.host THEN",
            *_mysql_refuse("'lecentral: database user ', who, ' may not move a report of ', "
                           "OLD.host, ' to ', NEW.host"),
            "END IF;",
        ]
    if table == "lecentral_runs":
        body += [
            "IF NEW.kind <> 'agent' THEN",
            *_mysql_refuse("'lecentral: database user ', who, ' is an agent account: it may record "
                           "runs of kind agent only, not ', NEW.kind"),
            "END IF;",
        ]
    if table == "lecentral_events":  # an agent tells of its installs, now: no forged history
        body += [
            f"IF NEW.kind NOT IN ({AGENT_EVENT_KINDS}) THEN",
            *_mysql_refuse("'lecentral: database user ', who, ' is an agent account: it may log "
                           "install events only, not ', NEW.kind"),
            "END IF;",
            f"IF ABS(NEW.ts - UNIX_TIMESTAMP()) > {EVENT_CLOCK_SKEW} THEN",
            *_mysql_refuse("'lecentral: database user ', who, ' may log events of now only, not "
                           "of ', NEW.ts"),
            "END IF;",
        ]
    body += ["END IF;", "END"]
    return "\n".join(body)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pg_refuse(*parts: str) -> str:
    # concat(), not RAISE's '%' format: a driver may take '%' for a parameter placeholder
    return (f"RAISE EXCEPTION USING MESSAGE = concat({', '.join(parts)}), "
            "ERRCODE = 'insufficient_privilege';")


def postgresql_function(trigger: str, table: str, event: str, schema: str) -> str:
    """A PostgreSQL trigger function, run as its owner (the central account) with a search_path
    that names only lecentral's schema: an agent can neither read lecentral_agents nor slip a
    table of its own in front of it."""
    body = [
        f"CREATE OR REPLACE FUNCTION {trigger}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER",
        f"SET search_path = {_quote_ident(schema)}, pg_temp AS $lecentral$",
        "DECLARE",
        "who text = session_user;",
        "host_user text;",
        "mine text;",
        "BEGIN",
    ]
    if table != "lecentral_events":
        body.append("NEW.db_user = who;")
    body += [
        "IF who <> current_user THEN",  # current_user: the owner, who made the triggers
        ("SELECT string_agg(host, ', ' ORDER BY host) INTO mine FROM lecentral_agents "
         "WHERE db_user = who;"),
    ]
    body += [  # neither the central account nor an agent's: nothing (a removed agent's too)
        "IF mine IS NULL THEN",
        _pg_refuse("'lecentral: database user '", "who", "' is neither the central account nor "
                   "mapped to a host (lecentral agent add HOST --db-user USER)'"),
        "END IF;",
    ]
    for host in _hosts(table, event):
        body += [
            f"SELECT db_user INTO host_user FROM lecentral_agents WHERE host = {host};",
            "IF host_user IS DISTINCT FROM who THEN",
            _pg_refuse("'lecentral: database user '", "who", "' may report only for host(s) '",
                       "mine", "', not '", host),
            "END IF;",
        ]
    if event == "UPDATE":
        body += [
            "IF NEW.host IS DISTINCT FROM OLD.host THEN",
            _pg_refuse("'lecentral: database user '", "who", "' may not move a report of '",
                       "OLD.host", "' to '", "NEW.host"),
            "END IF;",
        ]
    if table == "lecentral_runs":
        body += [
            "IF NEW.kind <> 'agent' THEN",
            _pg_refuse("'lecentral: database user '", "who", "' is an agent account: it may "
                       "record runs of kind agent only, not '", "NEW.kind"),
            "END IF;",
        ]
    if table == "lecentral_events":  # an agent tells of its installs, now: no forged history
        body += [
            f"IF NEW.kind NOT IN ({AGENT_EVENT_KINDS}) THEN",
            _pg_refuse("'lecentral: database user '", "who", "' is an agent account: it may "
                       "log install events only, not '", "NEW.kind"),
            "END IF;",
            f"IF abs(NEW.ts - extract(epoch from now())::bigint) > {EVENT_CLOCK_SKEW} THEN",
            _pg_refuse("'lecentral: database user '", "who", "' may log events of now only, "
                       "not of '", "NEW.ts"),
            "END IF;",
        ]
    body += ["END IF;", "RETURN NEW;", "END", "$lecentral$"]
    return "\n".join(body)
