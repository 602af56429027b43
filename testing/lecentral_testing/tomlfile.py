"""Write the TOML files tests, benchmarks and the demo hand to lecentral (tomllib only reads).

Enough TOML for ``lecentral.toml`` and ``install.toml``: tables of strings, numbers, booleans,
lists and inline tables; a mapping inside a table becomes a sub-table (``[dns.zones."a.test"]``);
``[[cert]]`` entries come last.

Example::

    write_toml(tmp_path / "lecentral.toml", {
        "database": {"url": "sqlite:///x.db"},
        "dns": {"server": "127.0.0.1:5353", "zones": {"a.example.test": {"tsig_key_file": "a.key"}}},
    })
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_key(key: str) -> str:
    """``key`` as a TOML key: bare when it may be, else quoted (zone names have dots)."""
    return key if _BARE_KEY.match(key) else json.dumps(key)


def toml_value(value: Any) -> str:
    """A TOML literal for a string, number, boolean, list or (inline) table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _table(path: Sequence[str], values: Mapping[str, Any]) -> list[str]:
    """``[path]`` with its plain keys, then each mapping value as a sub-table after it."""
    plain = [f"{toml_key(k)} = {toml_value(v)}" for k, v in values.items() if not isinstance(v, Mapping)]
    subtables = [(k, v) for k, v in values.items() if isinstance(v, Mapping)]
    lines = []
    if plain or not subtables:  # a header only of sub-tables is implied by theirs
        lines += ["[" + ".".join(toml_key(part) for part in path) + "]", *plain, ""]
    for key, value in subtables:
        lines += _table([*path, key], value)
    return lines


def dump_toml(tables: Mapping[str, Mapping[str, Any]], certs: Sequence[Mapping[str, Any]] = ()) -> str:
    """``[table]`` sections (with their sub-tables), then ``[[cert]]`` entries."""
    lines: list[str] = []
    for section, values in tables.items():
        lines += _table([section], values)
    for entry in certs:
        lines.append("[[cert]]")
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in entry.items()]
        lines.append("")
    return "\n".join(lines)


def write_toml(path: Path, tables: Mapping[str, Mapping[str, Any]],
               certs: Sequence[Mapping[str, Any]] = ()) -> Path:
    """Write :func:`dump_toml` of ``tables`` and ``certs`` to ``path``; return ``path``."""
    path.write_text(dump_toml(tables, certs))
    return path
