"""A real three-node MariaDB Galera cluster on 127.0.0.1, each node in its own temp dir.

Each node is a :class:`~lecentral_testing.mariadb.MariaDBServer` with the wsrep settings added:
Debian's ``galera-4`` provider (``/usr/lib/galera/libgalera_smm.so``), its own ports for SQL,
group communication (``gmcast.listen_addr``), IST (``ist.recv_addr``) and SST
(``wsrep_sst_receive_address``), SST by rsync. The first node makes its data directory with
``mariadb-install-db`` and bootstraps the cluster (``--wsrep-new-cluster``); the others join it
and receive its data by SST, so the application database, user and root password exist on every
node. :meth:`GaleraNode.stop` / :meth:`GaleraNode.start` take one node down and bring it back
(it rejoins by IST or SST), as a crash or a maintenance would.

Example::

    with GaleraCluster(tmp_path) as cluster:
        urls = [node.url for node in cluster.nodes]   # the same database, through each node
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Self

from lecentral_testing.mariadb import MariaDBServer
from lecentral_testing.ports import LOOPBACK, free_port
from lecentral_testing.process import (
    Daemon,
    ManagedServer,
    ServerStartError,
    find_executable,
    start_retrying_ports,
)

PROVIDER = "/usr/lib/galera/libgalera_smm.so"


class GaleraNode(MariaDBServer):
    """One node of a :class:`GaleraCluster`; ``peers`` gives the group-communication addresses."""

    kind = "galera"

    def __init__(self, workdir: Path, *, cluster: GaleraCluster, index: int, database: str,
                 user: str, password: str | None, root_password: str | None,
                 run_as: str) -> None:
        super().__init__(workdir, database=database, user=user, password=password, run_as=run_as)
        if root_password is not None:  # joiners get the first node's accounts by SST
            self.root_password = root_password
        self.cluster = cluster
        self.index = index
        self.name = f"node{index + 1}"
        self.gmcast_port = 0
        self.ist_port = 0
        self.sst_port = 0
        self.bootstrap = False

    def _pick_ports(self) -> None:
        self.port = free_port()
        self.gmcast_port = free_port()
        self.ist_port = free_port()
        self.sst_port = free_port()

    def start(self) -> Self:
        """Start this node: bootstrap the cluster (first node, first start) or join it; wait
        until it accepts logins and is a synced member of the primary component."""
        if self.running:
            return self
        first_start = not (self.datadir / "mysql").exists()
        if first_start and self.bootstrap:
            self._initialise()
        elif first_start:
            self.datadir.mkdir(parents=True, exist_ok=True)  # filled by SST from a donor
            os.chmod(self.datadir, 0o700)
            if self.run_as is not None:
                import shutil
                shutil.chown(self.datadir, self.run_as, self.run_as)

        def attempt() -> None:
            if self.port == 0:
                self._pick_ports()
            self._daemon = self._new_daemon()
            # a joiner's first start copies the whole data directory (SST): give it time
            self._daemon.start(lambda: self._ready(initial=first_start and self.bootstrap),
                               timeout=120)

        start_retrying_ports(attempt, attempts=1)
        if first_start and self.bootstrap:
            self._provision()
        return self

    def _ready(self, *, initial: bool) -> bool:
        connection = self._connect(initial=initial)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SHOW STATUS WHERE Variable_name IN "
                               "('wsrep_ready', 'wsrep_local_state_comment')")
                status = dict(cursor.fetchall())
        finally:
            connection.close()
        return bool(status.get("wsrep_ready") == "ON"
                    and status.get("wsrep_local_state_comment") == "Synced")

    def wsrep_status(self) -> dict[str, str]:
        """``SHOW STATUS LIKE 'wsrep%'`` of this node (as root)."""
        rows = self.execute("SHOW STATUS LIKE 'wsrep%'")
        return {str(k): str(v) for k, v in rows}

    def _argv(self) -> list[str]:
        nodes = ",".join(f"{LOOPBACK}:{n.gmcast_port}" for n in self.cluster.nodes
                         if n.gmcast_port)
        provider_options = ";".join([
            f"gmcast.listen_addr=tcp://{LOOPBACK}:{self.gmcast_port}",
            f"ist.recv_addr={LOOPBACK}:{self.ist_port}",
            f"base_host={LOOPBACK}",
            f"base_port={self.gmcast_port}",
            "gcache.size=32M",
            # loopback: notice a stopped node within seconds, not the WAN defaults
            "evs.suspect_timeout=PT3S",
            "evs.inactive_timeout=PT6S",
            "evs.keepalive_period=PT1S",
            "evs.inactive_check_period=PT1S",
        ])
        argv = [
            *super()._argv(),
            "--wsrep-on=ON",
            f"--wsrep-provider={PROVIDER}",
            f"--wsrep-cluster-address=gcomm://{nodes}",
            f"--wsrep-cluster-name={self.cluster.name}",
            f"--wsrep-node-name={self.name}",
            f"--wsrep-node-address={LOOPBACK}:{self.gmcast_port}",
            f"--wsrep-node-incoming-address={LOOPBACK}:{self.port}",
            f"--wsrep-sst-receive-address={LOOPBACK}:{self.sst_port}",
            f"--wsrep-provider-options={provider_options}",
            "--wsrep-sst-method=rsync",
            "--binlog-format=ROW",
            "--default-storage-engine=InnoDB",
            "--innodb-autoinc-lock-mode=2",
            # wsrep logs like a binary log: without this, an account without SUPER cannot create
            # lecentral's triggers (error 1419); docs/ha.md says so to operators
            "--log-bin-trust-function-creators=1",
        ]
        if self.bootstrap:
            argv.append("--wsrep-new-cluster")
        return argv

    def _new_daemon(self) -> Daemon:
        # the SST scripts (wsrep_sst_rsync) run rsync, ss/lsof, my_print_defaults from PATH
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.dir)}
        return Daemon(f"mariadbd ({self.name})", self._argv(), log_path=self.log_path,
                      cwd=self.dir, run_as=self.run_as, env=env)


class GaleraCluster(ManagedServer):
    """Three (``size``) :class:`GaleraNode` s forming one cluster; the database ``database`` and
    its user exist on every node (:attr:`urls`: one URL per node)."""

    kind = "galera"

    def __init__(self, workdir: Path | str | None = None, *, size: int = 3,
                 database: str = "lecentral", user: str = "lecentral",
                 run_as: str = "mysql") -> None:
        if not os.path.exists(PROVIDER):
            raise ServerStartError(f"{PROVIDER} not found; install it: apt-get install galera-4")
        find_executable("rsync", package="rsync")  # the SST method
        super().__init__(workdir)
        self.name = f"lecentral_{os.getpid()}"
        self.nodes: list[GaleraNode] = []
        first = GaleraNode(self.workdir / "node1", cluster=self, index=0, database=database,
                           user=user, password=None, root_password=None, run_as=run_as)
        self.nodes.append(first)
        for index in range(1, size):
            self.nodes.append(GaleraNode(
                self.workdir / f"node{index + 1}", cluster=self, index=index, database=database,
                user=user, password=first.password, root_password=first.root_password,
                run_as=run_as))
        for node in self.nodes:  # every node's ports are known before any starts
            node._pick_ports()

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> Self:
        """Bootstrap the first node, then join the others one at a time (SST from a donor)."""
        first = self.nodes[0]
        first.bootstrap = True
        first.start()
        first.bootstrap = False  # a restart joins the running cluster
        for node in self.nodes[1:]:
            node.start()
        size = first.wsrep_status().get("wsrep_cluster_size")
        if size != str(len(self.nodes)):
            raise ServerStartError(f"Galera cluster has {size} node(s), expected "
                                   f"{len(self.nodes)}; see {self.workdir}/node*/galera.log")
        return self

    def sync(self) -> None:
        """Return once every running node applied all that the cluster committed so far (DDL
        included): a test that wrote through one node then reads the same through every node."""
        for node in self.nodes:
            if node.running:
                node.execute("SET SESSION wsrep_sync_wait = 15; SELECT 1")

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()

    def close(self) -> None:
        try:
            for node in reversed(self.nodes):
                node.close()
        finally:
            super().close()
