"""A real MariaDB server on 127.0.0.1:<dynamic port>, with real grants and a password user.

The data directory is made once by ``mariadb-install-db``; :meth:`MariaDBServer.stop` and
:meth:`MariaDBServer.start` keep it (and the port), so a test can take the database down and bring
it back with its data. As root, both run as the ``mysql`` system user (mariadbd refuses root).

Example::

    with MariaDBServer(tmp_path) as db:
        db.execute(Path("sql/mysql.sql").read_text(), database=db.database)
        engine = sqlalchemy.create_engine(db.url)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lecentral_testing.ports import LOOPBACK
from lecentral_testing.process import Daemon, find_executable, run_tool, sql_identifier
from lecentral_testing.sqlserver import SqlServer


class MariaDBServer(SqlServer):
    """mariadbd on 127.0.0.1:<port>, database ``database`` owned by ``user``/``password``.

    ``password`` is generated when not given. ``run_as`` is the account used when we are root.
    """

    kind = "mariadb"
    scheme = "mysql+pymysql"
    superuser = "root"

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        database: str = "lecentral",
        user: str = "lecentral",
        password: str | None = None,
        run_as: str = "mysql",
    ) -> None:
        # Executables first: a missing package must fail before any temp dir exists.
        self._mariadbd = find_executable("mariadbd", package="mariadb-server")
        self._install_db = find_executable("mariadb-install-db", package="mariadb-server")
        super().__init__(workdir, database=database, user=user, password=password, run_as=run_as)
        self.socket = self.dir / "mysqld.sock"

    def _connect(self, database: str | None = None, *, initial: bool = False) -> Any:
        import pymysql
        from pymysql.constants import CLIENT

        # Over the socket as root: it works before any TCP user exists (right after install-db).
        return pymysql.connect(
            unix_socket=str(self.socket),
            user="root",
            password="" if initial else self.root_password,
            database=database,
            client_flag=CLIENT.MULTI_STATEMENTS,
            connect_timeout=2,
            autocommit=True,
        )

    def execute(self, sql: str, *, database: str | None = None) -> list[tuple[Any, ...]]:
        """Run ``sql`` (one or more ``;``-separated statements) as root; rows of the last result.

        Meant for test set-up, e.g. loading the seed's DDL into :attr:`database`.
        """
        connection = self._connect(database)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql)
                rows: list[tuple[Any, ...]] = list(cursor.fetchall())
                while cursor.nextset():
                    rows = list(cursor.fetchall()) or rows
                return rows
        finally:
            connection.close()

    def create_database(self, name: str) -> str:
        """Create database ``name``, grant it to the application user; return its URL."""
        name = sql_identifier(name)
        self.execute(f"CREATE DATABASE `{name}`; GRANT ALL ON `{name}`.* TO '{self.user}'@'%'")
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` (waits at most 5 s for locks held by forgotten connections)."""
        self.execute(f"SET SESSION lock_wait_timeout = 5; DROP DATABASE IF EXISTS `{sql_identifier(name)}`")

    def _initialise(self) -> None:
        run_tool(
            [
                self._install_db,
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            what=f"mariadb-install-db into {self.datadir}",
            log_path=self.log_path,
            run_as=self.run_as,
            cwd=self.dir,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.dir)},
        )

    def _provision(self) -> None:
        """Set the root password and create the application database and user."""
        connection = self._connect(initial=True)
        try:
            with connection.cursor() as cursor:
                # install-db also made root@::1 and root@<hostname>; keep only the two we use.
                cursor.execute("SELECT host FROM mysql.user WHERE user = 'root'")
                for (host,) in cursor.fetchall():
                    if host in ("localhost", LOOPBACK):
                        cursor.execute("ALTER USER 'root'@%s IDENTIFIED BY %s", (host, self.root_password))
                    else:
                        cursor.execute("DROP USER 'root'@%s", (host,))
                cursor.execute(f"CREATE DATABASE `{self.database}`")
                cursor.execute(f"CREATE USER '{self.user}'@'%%' IDENTIFIED BY %s", (self.password,))
                cursor.execute(f"GRANT ALL ON `{self.database}`.* TO '{self.user}'@'%'")
        finally:
            connection.close()

    def _argv(self) -> list[str]:
        return [
            self._mariadbd,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            f"--pid-file={self.dir / 'mariadbd.pid'}",
            f"--tmpdir={self.dir}",
            f"--port={self.port}",
            f"--bind-address={LOOPBACK}",
            "--skip-name-resolve",
            # Throwaway data: trade durability for speed, and keep memory small.
            "--skip-log-bin",
            "--performance-schema=OFF",
            "--innodb-buffer-pool-size=32M",
            "--innodb-log-file-size=16M",
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
            "--innodb-temp-data-file-path=ibtmp1:1M:autoextend",
            # io_uring/libaio are often forbidden in containers; plain I/O always works.
            "--innodb-use-native-aio=0",
        ]

    def _new_daemon(self) -> Daemon:
        return Daemon("mariadbd", self._argv(), log_path=self.log_path, cwd=self.dir, run_as=self.run_as)
