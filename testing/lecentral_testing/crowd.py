"""A crowd of agents waking in the same minute against one database (tests and bench/).

:class:`Crowd` fills a database as the central host does (``names`` certificates, each with its
key), then gives each of ``agents`` agents its own directory: ``install.toml`` (``[database]``
with the retry settings given, ``[agent] state_dir``, one ``[[cert]]`` with a ``files`` target and
no reload: a no-op service), its state directory and its copy of the key. :meth:`Crowd.run`
starts every agent in a thread of this process, each after a random delay within ``window``
seconds, through the real entry point (``lecentral-install --config ... run`` in-process:
config, registry, store, install), and returns each one's exit status, run time and retries.

Threads, not processes: a 2-core machine cannot start 2,000 Python processes (0.3 s of CPU each
for the interpreter and the imports) within a minute, but threads share the imports and still
open one database connection each, at the same time, which is what crowds the server.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import shutil
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lecentral.cli.common import setup_logging
from lecentral.registry import Registry
from lecentral_testing.agent import AgentWorld, TestCA
from lecentral_testing.tomlfile import write_toml

RETRY_LOGGER = "lecentral.store.retry"


@dataclass
class AgentRun:
    """One agent's run: exit status, seconds from its start to its end, retries it logged."""

    index: int
    exit_code: int
    seconds: float
    retries: int
    error: str = ""


@dataclass
class CrowdResult:
    runs: list[AgentRun]
    wall: float
    retry_reasons: Counter[str] = field(default_factory=Counter)
    stderr: str = ""

    @property
    def failed(self) -> list[AgentRun]:
        return [r for r in self.runs if r.exit_code != 0]

    @property
    def retries(self) -> int:
        return sum(r.retries for r in self.runs)

    def percentile(self, p: float) -> float:
        times = sorted(r.seconds for r in self.runs)
        if len(times) == 1:
            return times[0]
        return statistics.quantiles(times, n=100, method="inclusive")[max(0, min(98, round(p) - 1))]


class _RetryCounter(logging.Handler):
    """Counts the retry warnings of each thread (each agent runs in its own thread)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.agent = threading.local()  # the agent the thread is running
        self.by_agent: Counter[int] = Counter()
        self.reasons: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.by_agent[getattr(self.agent, "index", -1)] += 1
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) > 2:
            self.reasons[str(args[2])] += 1


class Crowd:
    """``agents`` agents with their own install.toml and state directory, ``names`` certificates
    in the database at ``db_url`` (agent *i* installs name *i* mod ``names``)."""

    def __init__(self, workdir: Path, db_url: str, *, agents: int, names: int = 20,
                 database: Mapping[str, Any] | None = None) -> None:
        self.workdir = workdir
        self.db_url = db_url
        self.central = AgentWorld(workdir / "central", db_url=db_url, ca=TestCA())
        self.names = [f"host{n}.crowd.example.test" for n in range(names)]
        self.fingerprints: dict[str, str] = {}
        for name in self.names:
            self.central.add(name, key="ec256")
            self.fingerprints[name] = self.central.issue(name).fingerprint
        self.configs: list[Path] = []
        self.write_configs(agents, database or {})

    def write_configs(self, agents: int, database: Mapping[str, Any]) -> None:
        """(Re)write every agent's directory and install.toml, with ``database`` settings."""
        self.configs = []
        for index in range(agents):
            home = self.workdir / "agents" / str(index)
            if home.exists():
                shutil.rmtree(home)
            (home / "certs").mkdir(parents=True)
            (home / "private").mkdir(mode=0o700)
            name = self.names[index % len(self.names)]
            key = home / "private" / f"{name}.key"
            shutil.copyfile(self.central.key_path(name), key)
            os.chmod(key, 0o600)
            entry = {"name": name, "key": str(key), "cert": str(home / "certs" / f"{name}.crt"),
                     "chain": str(home / "certs" / f"{name}.ca"),
                     "fullchain": str(home / "certs" / f"{name}.full")}
            tables = {"database": {"url": self.db_url, **database},
                      "agent": {"state_dir": str(home / "state")}}
            self.configs.append(write_toml(home / "install.toml", tables, [entry]))

    def installed(self, index: int) -> bool:
        """True if agent ``index`` has the database's certificate in place."""
        from lecentral.certificates import Certificate

        name = self.names[index % len(self.names)]
        path = self.configs[index].parent / "certs" / f"{name}.crt"
        return path.exists() and Certificate.load(path.read_bytes()).fingerprint == \
            self.fingerprints[name]

    def run(self, window: float, *, workers: int = 400, agents: Sequence[int] | None = None,
            seed: int = 16) -> CrowdResult:
        """Run the agents (all, or those numbered in ``agents``), each starting after a random
        delay in [0, ``window``) seconds, on ``workers`` threads (an agent whose start time has
        come waits for a free thread: 2,000 threads fighting for one interpreter lock spend
        more time switching than running); wait for all of them."""
        chosen = list(range(len(self.configs))) if agents is None else list(agents)
        rng = random.Random(seed)
        delays = {i: rng.uniform(0, window) for i in chosen}
        counter = _RetryCounter()
        retry_log = logging.getLogger(RETRY_LOGGER)
        retry_log.addHandler(counter)
        runs: dict[int, AgentRun] = {}
        registry = Registry.load()
        begin = 0.0
        order = sorted(chosen, key=lambda i: delays[i])
        shares = [order[w::workers] for w in range(min(workers, len(order)))]
        ready = threading.Barrier(len(shares) + 1)

        def worker(mine: list[int]) -> None:
            ready.wait()  # every thread made first: the start times are the agents' own
            for index in mine:
                counter.agent.index = index
                time.sleep(max(0.0, begin + delays[index] - time.monotonic()))
                started = time.monotonic()
                code, error = run_agent(self.configs[index], registry=registry)
                runs[index] = AgentRun(index, code, time.monotonic() - started, 0, error)

        out, err = io.StringIO(), io.StringIO()
        old_stack = threading.stack_size(1024 * 1024)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                setup_logging(0, prog="lecentral-install")  # as the console script does first
                threads = [threading.Thread(target=worker, args=(share,), name=f"agents-{w}",
                                            daemon=True) for w, share in enumerate(shares)]
                for thread in threads:
                    thread.start()
                threading.stack_size(old_stack)
                begin = time.monotonic()
                ready.wait()
                for thread in threads:
                    thread.join()
        finally:
            threading.stack_size(old_stack)
            retry_log.removeHandler(counter)
            _quiet_logging()
        wall = time.monotonic() - begin
        for index, run in runs.items():
            run.retries = counter.by_agent.get(index, 0)
        return CrowdResult([runs[i] for i in chosen], wall, counter.reasons, err.getvalue())

    def close(self) -> None:
        self.central.close()


def _quiet_logging() -> None:
    """The agents' logging wrote to the stderr the run caught: back to this process's stderr."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setStream(sys.stderr)


def run_agent(config: Path, *args: str, registry: Registry | None = None) -> tuple[int, str]:
    """``lecentral-install --config CONFIG run ARGS`` in this thread: the ``run`` command of the
    console script, given the process's plugin ``registry`` (a real agent loads it once per
    process too; loaded here when not given); (exit status, "" or the exception that crashed
    it). Output goes to this process's stdout and stderr (:meth:`Crowd.run` catches them)."""
    from lecentral.cli.agent import AgentApp
    from lecentral.cli.agent_commands import run

    app = AgentApp(str(config))
    if registry is not None:
        app._registry = registry
    try:
        result = run.main(list(args), obj=app, prog_name="lecentral-install run",
                          standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except Exception as exc:  # noqa: BLE001 - a crash is that agent's failure, reported
        return 99, f"{type(exc).__name__}: {exc}"
    return code, ""
