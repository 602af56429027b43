"""What MariaDBServer and PostgresServer share: one application database, its user, one start.

A subclass says how to make the data directory (:meth:`SqlServer._initialise`, once), how to
start the daemon (:meth:`SqlServer._new_daemon`), how to connect as the superuser, and how to
create the application database and user (:meth:`SqlServer._provision`, after the first start).
The data directory and the port survive :meth:`~SqlServer.stop` / :meth:`~SqlServer.start`, so a
test can take the database down and bring it back with its data.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Self

from lecentral_testing.ports import LOOPBACK, free_port
from lecentral_testing.process import (
    Daemon,
    DaemonServer,
    daemon_user,
    sql_identifier,
    start_retrying_ports,
)


class SqlServer(DaemonServer):
    """A database server on 127.0.0.1:<port>, database ``database`` owned by ``user``/``password``.

    ``password`` is generated when not given, and so is the superuser's (:attr:`root_password`).
    ``run_as`` is the account the server runs as when we are root.
    """

    address = LOOPBACK
    stop_timeout = 30.0
    #: SQLAlchemy URL scheme (dialect+driver)
    scheme = ""
    #: the server's superuser and the database :attr:`root_url` names
    superuser = ""
    superuser_database = ""

    def __init__(self, workdir: Path | str | None, *, database: str, user: str, password: str | None,
                 run_as: str) -> None:
        super().__init__(workdir)
        self.database = sql_identifier(database)
        self.user = sql_identifier(user)
        self.password = password or secrets.token_urlsafe(16)
        self.root_password = secrets.token_urlsafe(16)
        self.run_as = daemon_user(run_as)
        self.port = 0
        self.dir = self.state_dir(self.kind, self.run_as)
        self.datadir = self.dir / "data"
        self.log_path = self.workdir / f"{self.kind}.log"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the application database as the application user."""
        return self.url_for(self.database)

    @property
    def root_url(self) -> str:
        """SQLAlchemy URL as the superuser (MariaDB: no default database; PostgreSQL: ``postgres``)."""
        return (f"{self.scheme}://{self.superuser}:{self.root_password}@{LOOPBACK}:{self.port}/"
                f"{self.superuser_database}")

    def url_for(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` as the application user."""
        return f"{self.scheme}://{self.user}:{self.password}@{LOOPBACK}:{self.port}/{database}"

    def start(self) -> Self:
        """Start the server (making the data directory the first time); wait until it accepts logins."""
        if self.running:
            return self
        first_start = not self.datadir.exists()
        if first_start:
            self._initialise()

        def attempt() -> None:
            if self.port == 0 or first_start:
                self.port = free_port()
            self._daemon = self._new_daemon()
            self._daemon.start(lambda: self._accepts_logins(initial=first_start), timeout=60)

        # a later start keeps its port: the URLs tests hold must stay valid
        start_retrying_ports(attempt, attempts=3 if first_start else 1)
        if first_start:
            self._provision()
        return self

    def _accepts_logins(self, *, initial: bool) -> bool:
        self._connect(initial=initial).close()
        return True

    # -- what each server does its own way ---------------------------------------------------------

    def _initialise(self) -> None:
        """Make :attr:`datadir` (mariadb-install-db, initdb)."""
        raise NotImplementedError

    def _new_daemon(self) -> Daemon:
        """The server process on :attr:`port`, not started yet."""
        raise NotImplementedError

    def _connect(self, database: str | None = None, *, initial: bool = False) -> Any:
        """A DB-API connection as the superuser (``initial``: before :meth:`_provision` ran)."""
        raise NotImplementedError

    def _provision(self) -> None:
        """After the first start: the superuser's password, the application database and user."""
        raise NotImplementedError
