"""The documentation stays true to the code: every hook, command and config key is documented."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import click
import pytest

from lecentral import hookspecs
from lecentral.config import CentralConfig

DOCS = Path(__file__).parents[1] / "docs"


def hook_names() -> list[str]:
    return [n for n in dir(hookspecs) if n.startswith("lecentral_")]


@pytest.mark.parametrize("hook", hook_names())
def test_every_hook_is_documented(hook: str) -> None:
    assert f"### `{hook}(" in (DOCS / "hooks.md").read_text()
    assert getattr(hookspecs, hook).__doc__, f"{hook} has no docstring"


def config_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            keys += config_keys(tp, f"{f.name}.")  # type: ignore[arg-type]
        else:
            keys.append(prefix + f.name)
    return keys


@pytest.mark.parametrize("key", config_keys(CentralConfig))
def test_every_central_config_key_is_in_the_reference(key: str) -> None:
    section, _, name = key.rpartition(".")
    text = (DOCS / "reference.md").read_text()
    assert f"[{section}]" in text and f"`{name}`" in text, f"{key} is not in docs/reference.md"


def commands(group: click.Group, prefix: str) -> list[str]:
    found = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None
        full = f"{prefix} {name}"
        found.append(full)
        if isinstance(cmd, click.Group):
            found += commands(cmd, full)
    return found


def all_commands() -> list[str]:
    from lecentral.cli.agent import main as agent_main
    from lecentral.cli.central import main

    return commands(main, "lecentral") + commands(agent_main, "lecentral-install")


@pytest.mark.parametrize("command", all_commands())
def test_every_command_is_in_the_reference(command: str) -> None:
    assert f"`{command}" in (DOCS / "reference.md").read_text(), f"{command} is not documented"


def agent_keys() -> list[str]:
    from lecentral.install.config import AgentConfig, CertEntry

    return [f"{cls.__name__}.{f.name}" for cls in (AgentConfig, CertEntry)
            for f in dataclasses.fields(cls) if not f.metadata.get("internal")]


@pytest.mark.parametrize("key", agent_keys())
def test_every_agent_config_key_is_in_the_agent_guide(key: str) -> None:
    name = key.split(".", 1)[1]
    assert f"`{name}`" in (DOCS / "agent.md").read_text(), f"{key} is not in docs/agent.md"


# -- the worked example of plugin-authors.md is the real plugin ------------------------------------

WORKED_EXAMPLE = Path(__file__).parents[1] / "plugins" / "lecentral-haproxy"
#: a file shown in full: its path in backquotes and a colon, a blank line, then a fenced block
SHOWN_FILE = re.compile(r"^`(plugins/[^`]+)`:\n\n```[a-z]*\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def shown_files(text: str) -> dict[str, str]:
    return {path: body for path, body in SHOWN_FILE.findall(text)}


def test_the_worked_example_shows_the_haproxy_plugin_exactly() -> None:
    """docs/plugin-authors.md shows the pyproject, the plugin module and the contract test of
    plugins/lecentral-haproxy in full: each block must be the file, byte for byte, so the doc
    cannot drift from the code that CI tests."""
    shown = shown_files((DOCS / "plugin-authors.md").read_text())
    assert set(shown) == {f"plugins/lecentral-haproxy/{name}" for name in (
        "pyproject.toml", "lecentral_haproxy/plugin.py", "tests/test_haproxy_contract.py")}
    for path, body in shown.items():
        assert body == (WORKED_EXAMPLE.parents[1] / path).read_text(), f"{path} differs from the doc"


def test_the_worked_example_check_sees_a_drift() -> None:
    doc = "`plugins/x/a.py`:\n\n```python\nA = 1\n```\n\ntext\n\n`plugins/x/b.toml`:\n\n```toml\nb = 2\n```\n"
    assert shown_files(doc) == {"plugins/x/a.py": "A = 1\n", "plugins/x/b.toml": "b = 2\n"}
