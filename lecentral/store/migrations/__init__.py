"""lecentral's own tables, evolved by Alembic migrations run from :class:`~lecentral.store.sql.SqlStore`.

Why Alembic: the own tables (event log, renew lock holder, leftovers, the fleet tables) change
from release to release, on SQLite, MariaDB/MySQL and PostgreSQL alike, and a database must be
brought from whatever release made it to the current one without losing rows. ``lecentral init``
and ``lecentral upgrade`` run the pending revisions of ``versions/``; the agents
(``lecentral-install``) never migrate, their least-privileged accounts could not anyway.

Rules every revision follows:

* ``certs`` is the seed's table (``ddl/``): never created, altered or dropped by a revision.
* The revision writes its columns out in full; it never imports :mod:`lecentral.store.schema`,
  whose tables describe the *current* head and will change after the revision is written.
* The version is kept in ``lecentral_alembic_version`` (:data:`VERSION_TABLE`), so that an
  ``alembic_version`` of the user's own in the same database is never read or changed.
* MariaDB/MySQL commit each DDL statement at once (no transactional DDL): a revision stays
  re-runnable after a failure half-way (tables and indexes made only if missing, triggers
  dropped before being made), so that the next ``lecentral upgrade`` finishes it.
* On SQLite, a change to an existing table goes through ``op.batch_alter_table`` (SQLite's
  ALTER TABLE cannot do most changes; batch mode copies the table).

A new revision is written by hand as ``versions/NNNN_what.py`` with ``revision = "NNNN_what"``
and ``down_revision`` the previous one; ``tests/test_migrations.py`` checks that head matches
:mod:`lecentral.store.schema`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, text

from lecentral.errors import StoreError

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

#: the table holding the revision a database is at (one row)
VERSION_TABLE = "lecentral_alembic_version"

#: the newest revision of ``versions/`` (tests/test_migrations.py checks it is Alembic's head):
#: every command checks the schema, and a database at HEAD needs no Alembic import (0.1 s)
HEAD = "0008_deployments_key"

_HERE = Path(__file__).resolve().parent


class NewerRevisionError(StoreError):
    """The database is at a revision this lecentral does not ship (a newer one upgraded it)."""


def scripts() -> ScriptDirectory:
    """The revisions shipped with this lecentral (no alembic.ini: the package is the location)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(_HERE), version_locations=[str(_HERE / "versions")])


def head() -> str:
    """The revision this lecentral's code expects."""
    return HEAD


def current(conn: Connection) -> str | None:
    """The revision the database is at; ``None`` when it has no version table (a new database,
    or one made by a lecentral from before migrations)."""
    if not conn.dialect.has_table(conn, VERSION_TABLE):
        return None
    found = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(found) > 1:  # pragma: no cover - one line of revisions: Alembic writes one row
        raise StoreError(f"{VERSION_TABLE} holds several revisions ({', '.join(found)}); "
                         "keep the newest only")
    return str(found[0]) if found else None


def is_known(revision: str) -> bool:
    """True if ``revision`` is one of the revisions shipped with this lecentral."""
    if revision == HEAD:
        return True
    from alembic.util.exc import CommandError

    try:
        return scripts().get_revision(revision) is not None
    except CommandError:
        return False


def upgrade(conn: Connection, target: str = "head") -> tuple[str | None, str]:
    """Run the pending revisions up to ``target`` on ``conn``; return (from, to) revisions.

    ``conn`` is inside the caller's transaction: on PostgreSQL and SQLite a failure undoes every
    revision of the call; on MariaDB/MySQL the revisions done before the failure stay done (see the
    module's docstring)."""
    from alembic.config import Config
    from alembic.runtime.environment import EnvironmentContext

    script = scripts()
    start = current(conn)
    if start is not None and not is_known(start):
        raise NewerRevisionError(unknown_revision(start))

    def steps(rev: Any, _context: Any) -> Any:
        return script._upgrade_revs(target, rev)  # what alembic's own upgrade command does

    env = EnvironmentContext(Config(), script, fn=steps, destination_rev=target)
    with env:
        env.configure(connection=conn, version_table=VERSION_TABLE, render_as_batch=True)
        with env.begin_transaction():
            env.run_migrations()
    end = current(conn)
    return start, end or ""


def unknown_revision(revision: str) -> str:
    """The message for a database upgraded by a newer lecentral than this one."""
    return (f"its lecentral tables are at revision {revision}, which this lecentral does not know "
            f"(its newest is {head()}): a newer lecentral upgraded them; upgrade lecentral on this "
            "host")
