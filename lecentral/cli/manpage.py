"""Man pages of ``lecentral`` and ``lecentral-install``, written from their click commands.

The pages say what ``--help`` says (one source: the commands' docstrings and options), plus the
exit status table of :data:`lecentral.errors.EXIT_CODES` and how to turn shell completion on.
Only lecentral's own commands are included (not those other distributions add), so a page
does not depend on what else is installed. Run ``python -m lecentral.cli.manpage DIR`` to write
``DIR/lecentral.1`` and ``DIR/lecentral-install.1`` (the systemd units' ``Documentation=``).
"""

from __future__ import annotations

import inspect
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from lecentral import __version__
from lecentral.errors import exit_code_rows

#: the pages, by program: (the group's module:attribute, one-line description)
PAGES = {
    "lecentral": ("lecentral.cli.central:main", "central ACME certificate management"),
    "lecentral-install": ("lecentral.cli.agent:main",
                          "install certificates from the central lecentral database"),
}


def _esc(text: str) -> str:
    """Text safe in roff: backslashes escaped, hyphens unbreakable minus signs, and no line
    starting with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line
                     for line in text.split("\n"))


def _paragraphs(help_text: str) -> list[str]:
    """A click docstring as roff: ``\\b`` paragraphs kept as written, the others filled."""
    out: list[str] = []
    for para in inspect.cleandoc(help_text).split("\n\n"):
        para = para.split("\f")[0]
        if para.startswith("\b"):
            out += [".PP", ".nf", _esc(para[1:].lstrip("\n")), ".fi"]
        elif para.strip():
            out += [".PP", _esc(" ".join(para.split()))]
    return out


def _options(cmd: click.Command, ctx: click.Context) -> list[str]:
    out: list[str] = []
    for param in cmd.get_params(ctx):
        if not isinstance(param, click.Option):
            continue  # arguments are in the usage line
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_ = record
        out += [".TP", f"\\fB{_esc(names)}\\fR", _esc(help_) or "\\&"]
    return out


def _context(cmd: click.Command, name: str, parent: click.Context | None) -> click.Context:
    return click.Context(cmd, info_name=name, parent=parent, **cmd.context_settings)


def _command(cmd: click.Command, ctx: click.Context, path: str) -> list[str]:
    """One sub-command's section: usage, help, options; a group's sub-commands after it."""
    usage = " ".join(cmd.collect_usage_pieces(ctx))
    out = [f'.SS "{_esc(path)}"', f"\\fB{_esc(path)}\\fR {_esc(usage)}",
           *_paragraphs(cmd.help or cmd.short_help or "")]
    out += _options(cmd, ctx)
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                out += _command(sub, _context(sub, name, ctx), f"{path} {name}")
    return out


def render(prog: str, group: click.Group) -> str:
    """The whole man page of ``prog`` as roff text."""
    from lecentral.cli.common import LazyGroup

    ctx = _context(group, prog, None)
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    lines = [f'.TH "{prog.upper()}" "1" "{date}" "lecentral {__version__}" "lecentral manual"',
             ".SH NAME", f"{_esc(prog)} \\- {_esc(PAGES[prog][1])}",
             ".SH SYNOPSIS", f"\\fB{_esc(prog)}\\fR [OPTIONS] COMMAND [ARGS]...",
             ".SH DESCRIPTION", *_paragraphs(group.help or ""),
             ".SH OPTIONS", *_options(group, ctx), ".SH COMMANDS"]
    names = list(group.lazy) if isinstance(group, LazyGroup) else group.list_commands(ctx)
    for name in sorted(names):
        cmd = group.get_command(ctx, name)
        if cmd is not None and not cmd.hidden:
            lines += _command(cmd, _context(cmd, name, ctx), f"{prog} {name}")
    lines += [".SH EXIT STATUS", ("The check commands are monitoring plugins: 0 OK, 1 WARNING, "
              "2 CRITICAL, 3 UNKNOWN. Every other command:")]
    for code, meaning in exit_code_rows():
        lines += [".TP", f"\\fB{code}\\fR", _esc(meaning)]
    var = f"_{prog.upper().replace('-', '_')}_COMPLETE"
    lines += [".SH SHELL COMPLETION", "For bash, in ~/.bashrc:", ".PP", ".nf",
              _esc(f'eval "$({var}=bash_source {prog})"'), ".fi", ".PP",
              _esc(f"zsh: {var}=zsh_source; fish: {var}=fish_source {prog} | source."),
              ".SH SEE ALSO",
              "\\fBlecentral\\fR(1), \\fBlecentral\\-install\\fR(1); docs/reference.md of lecentral."]
    return "\n".join(lines) + "\n"


def write(directory: Path) -> list[Path]:
    """Write ``lecentral.1`` and ``lecentral-install.1`` in ``directory`` (made if missing)."""
    import importlib

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for prog, (target, _) in PAGES.items():
        module, attr = target.split(":")
        group = getattr(importlib.import_module(module), attr)
        path = directory / f"{prog}.1"
        path.write_text(render(prog, group), encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m lecentral.cli.manpage DIR  (writes DIR/lecentral.1 and "
              "DIR/lecentral-install.1)", file=sys.stderr)
        return 2
    for path in write(Path(args[0])):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
