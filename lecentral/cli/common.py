"""What both CLIs share: lazy sub-command loading, logging to stderr, errors, JSON output."""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

import click

from lecentral.errors import EXIT_CODES, CsrError, LecentralError, UnknownNameError

if TYPE_CHECKING:
    from lecentral.fleet.nagios import CheckResult

F = TypeVar("F", bound=Callable[..., Any])

#: exit status for "the command worked but something it did failed" (renew/install failures)
EXIT_FAILURES = 1

#: the two programs; messages on stderr start with the one that was run
PROGRAMS = ("lecentral", "lecentral-install")


def prog_name() -> str:
    """``lecentral`` or ``lecentral-install``: the root command of the click context running
    (both groups are named so), for the prefix of messages on stderr."""
    ctx = click.get_current_context(silent=True)
    name = ctx.find_root().command.name if ctx is not None else None
    return name if name in PROGRAMS else "lecentral"


def exit_status_epilog() -> str:
    """The short exit status table of both CLIs' ``--help``, made from
    :data:`lecentral.errors.EXIT_CODES` (docs/reference.md has the long one)."""
    lines = ["\b", "Exit status (check commands: the monitoring plugin's 0-3 instead):"]
    lines += [f"  {code}  {short}" for code, short, _ in EXIT_CODES]
    lines.append("  a NAME not in the database or not configured is 1 in every command")
    return "\n".join(lines)


def known_name(name: str) -> str:
    """A NAME typed to look a certificate up, lower-cased; one that is not even a DNS name can
    name no row either, so it is the same refusal as an unknown one (UnknownNameError, exit 1)."""
    from lecentral.certificates import check_name

    try:
        return check_name(name)
    except CsrError as exc:
        raise UnknownNameError(f"no certificate named {name!r} in the database: {exc}") from None


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported only when used, so ``--help`` stays fast.

    ``lazy`` maps a command name to ``("module:attribute", "one-line help")``; the help line is
    what ``--help`` lists, without importing the module. ``entry_point_group`` adds the commands
    other distributions register there (a ``click.Command`` each; a name of the core wins); one
    that fails to load is listed with its error and never breaks the others.
    """

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]] | None = None,
                 entry_point_group: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}
        self.entry_point_group = entry_point_group

    def _entry_points(self) -> dict[str, EntryPoint]:
        if not self.entry_point_group:
            return {}
        found = entry_points(group=self.entry_point_group)
        return {ep.name: ep for ep in found if ep.name not in self.lazy}

    def _load(self, ep: EntryPoint) -> click.Command | None:
        try:
            cmd = ep.load()
        except Exception as exc:  # noqa: BLE001 - another distribution's bug must not break ours
            dist = ep.dist.name if ep.dist is not None else "?"
            logging.getLogger(__name__).warning("command %s from %s failed to load: %s",
                                                ep.name, dist, exc)
            return None
        return cmd if isinstance(cmd, click.Command) else None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, help_) in self.lazy.items()]
        for name, ep in self._entry_points().items():
            cmd = self._load(ep)
            dist = f" [{ep.dist.name}]" if ep.dist is not None else ""
            rows.append((name, (cmd.get_short_help_str(60) if cmd else "(failed to load)") + dist))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(rows))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy, *self._entry_points()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, attr = self.lazy[cmd_name][0].split(":")
            cmd: click.Command = getattr(importlib.import_module(module), attr)
            return cmd
        ep = self._entry_points().get(cmd_name)
        if ep is not None:
            return self._load(ep)
        return super().get_command(ctx, cmd_name)


def setup_logging(verbose: int, quiet: bool = False, prog: str = "lecentral") -> None:
    """Logs go to stderr: warnings by default, info with -v, debug with -vv, errors only with -q;
    each line starts with ``prog`` (the program that was run)."""
    level = logging.ERROR if quiet else [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(asctime)s %(name)s %(levelname)s: %(message)s" if verbose else \
        f"{prog}: %(levelname)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "acme", "josepy"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def fail(exc: LecentralError) -> click.exceptions.Exit:
    """Print a LecentralError as one clear line on stderr and exit with its code."""
    click.echo(f"{prog_name()}: error: {exc}", err=True)
    return click.exceptions.Exit(exc.exit_code)


def guarded(func: F) -> F:
    """Decorator: turn LecentralError into a message and its exit code (no traceback)."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LecentralError as exc:
            raise fail(exc) from None

    return wrapper  # type: ignore[return-value]


def print_json(data: Any, *, compact: bool = False) -> None:
    """Machine-readable output on stdout; ``compact``: one line, keys in their given order (for
    documents of 100,000 entries, where indenting costs more than building them)."""
    if compact:
        click.echo(json.dumps(data, separators=(",", ":"), default=str))
    else:
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain aligned text table."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


#: what the text tables that can grow wide (lecentral plugins) fit in
TABLE_WIDTH = 100


def wrapped_table(rows: list[list[str]], headers: list[str], width: int = TABLE_WIDTH) -> str:
    """:func:`table`, its last column wrapped (at ", " and spaces) on continuation lines so that
    every line fits ``width`` when the other columns leave it at least 30 columns."""
    import textwrap

    widths = [max(len(str(x)) for x in col) for col in zip(headers, *[r[:-1] for r in rows])]
    indent = sum(widths) + 2 * len(widths)
    room = max(width - indent, 30)
    out = [list(headers)]
    for row in rows:
        parts = textwrap.wrap(str(row[-1]), room, break_on_hyphens=False) or [""]
        out.append([*row[:-1], parts[0]])
        out += [[""] * (len(row) - 1) + [part] for part in parts[1:]]
    return table(out[1:], out[0])


# --- monitoring plugins (lecentral check, lecentral-install check) ------------------------


class PluginCommand(click.Command):
    """A click command whose usage errors exit 3 (UNKNOWN), as monitoring plugins must: click's
    own 2 would read as CRITICAL."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            exc.exit_code = 3  # type: ignore[misc]  # UNKNOWN; click reads it per instance
            raise


def url_secrets(url: str | None) -> list[str]:
    """The password of a database URL, as written and percent-decoded (to mask in messages)."""
    if not url:
        return []
    _, sep, rest = url.partition("://")
    creds, at, _ = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return []
    password = creds.split(":", 1)[1]
    return [s for s in {password, unquote(password)} if s]


def emit(result: CheckResult, max_lines: int, json_out: bool) -> None:
    """Print a monitoring-plugin result and exit with its state."""
    from lecentral.fleet.nagios import as_json

    if json_out:
        print_json(as_json(result))
    else:
        for line in result.lines(max_lines):
            click.echo(line)
    sys.exit(result.status)
