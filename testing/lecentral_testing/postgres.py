"""A real PostgreSQL server on 127.0.0.1:<dynamic port>, password (scram) logins only.

``initdb`` runs once; :meth:`PostgresServer.stop` / :meth:`PostgresServer.start` keep the data and
the port. As root, both run as the ``postgres`` system user (postgres refuses root). The unix
socket lives in the server's own directory, never in /run/postgresql.

Example::

    with PostgresServer(tmp_path) as pg:
        engine = sqlalchemy.create_engine(pg.url)
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from lecentral_testing.ports import LOOPBACK
from lecentral_testing.process import (
    Daemon,
    chown_to,
    find_executable,
    run_tool,
    sql_identifier,
)
from lecentral_testing.sqlserver import SqlServer

_PG_DIRS = ("/usr/lib/postgresql/*/bin",)
SUPERUSER = "postgres"
#: the environment of initdb and postgres: nothing of ours leaks in, messages in plain C
_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}


class PostgresServer(SqlServer):
    """postgres on 127.0.0.1:<port>, database ``database`` owned by ``user``/``password``.

    ``password`` is generated when not given. ``run_as`` is the account used when we are root.
    """

    kind = "postgres"
    scheme = "postgresql+psycopg"
    superuser = SUPERUSER
    superuser_database = "postgres"

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        database: str = "lecentral",
        user: str = "lecentral",
        password: str | None = None,
        run_as: str = "postgres",
    ) -> None:
        # Executables first: a missing package must fail before any temp dir exists.
        self._initdb = find_executable("initdb", package="postgresql", extra_dirs=_PG_DIRS)
        self._postgres = find_executable("postgres", package="postgresql", extra_dirs=_PG_DIRS)
        super().__init__(workdir, database=database, user=user, password=password, run_as=run_as)

    @property
    def superuser_password(self) -> str:
        """The ``postgres`` superuser's password (:attr:`root_password`)."""
        return self.root_password

    def _connect(self, database: str | None = None, *, initial: bool = False) -> Any:
        import psycopg

        # initdb set the superuser's password already: ``initial`` changes nothing here
        return psycopg.connect(
            host=LOOPBACK,
            port=self.port,
            user=SUPERUSER,
            password=self.root_password,
            dbname=database or self.superuser_database,
            connect_timeout=2,
            autocommit=True,
        )

    def execute(self, sql: str, *, database: str | None = None) -> list[tuple[Any, ...]]:
        """Run ``sql`` (one or more ``;``-separated statements, no parameters) as superuser.

        Returns the rows of the last statement (empty if it returns none).
        """
        with self._connect(database or self.database) as connection:
            cursor = connection.execute(sql)  # no parameters: simple protocol, several statements OK
            rows: list[tuple[Any, ...]] = cursor.fetchall() if cursor.description else []
            while cursor.nextset():
                rows = cursor.fetchall() if cursor.description else rows
            return rows

    def create_database(self, name: str) -> str:
        """Create database ``name`` owned by the application user; return its URL."""
        self.execute(f'CREATE DATABASE "{sql_identifier(name)}" OWNER "{self.user}"', database="postgres")
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, closing connections a test forgot to close."""
        self.execute(f'DROP DATABASE IF EXISTS "{sql_identifier(name)}" WITH (FORCE)', database="postgres")

    def _initialise(self) -> None:
        password_file = self.dir / "superuser-password"
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.root_password + "\n")
        chown_to(password_file, self.run_as)
        try:
            run_tool(
                [
                    self._initdb,
                    f"--pgdata={self.datadir}",
                    f"--username={SUPERUSER}",
                    f"--pwfile={password_file}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",  # throwaway data: skip the fsyncs, they are most of initdb's time
                    "--no-instructions",
                ],
                what=f"initdb of {self.datadir}",
                log_path=self.log_path,
                run_as=self.run_as,
                cwd=self.dir,
                env={**_ENV, "HOME": str(self.dir)},
            )
        finally:
            password_file.unlink()

    def _provision(self) -> None:
        from psycopg import sql

        with self._connect() as connection:
            role = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(self.user), sql.Literal(self.password))
            connection.execute(role)
            connection.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(self.database), sql.Identifier(self.user)))

    def _argv(self) -> list[str]:
        return [
            self._postgres,
            "-D", str(self.datadir),
            "-h", LOOPBACK,
            "-p", str(self.port),
            "-k", str(self.dir),
            # Throwaway data: durability off, small footprint, logs to stderr (our log file).
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "shared_buffers=16MB",
            "-c", "max_connections=100",
            "-c", "logging_collector=off",
        ]  # fmt: skip

    def _new_daemon(self) -> Daemon:
        # SIGINT is postgres's "fast shutdown"; SIGTERM would wait for every client to leave.
        return Daemon("postgres", self._argv(), log_path=self.log_path, cwd=self.dir, run_as=self.run_as,
                      stop_signal=signal.SIGINT, env={**_ENV, "HOME": str(self.dir)})
