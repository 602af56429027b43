"""The public API (``lecentral.api``) is the only part of lecentral that plugins import.

Read statically (AST), so a lazy or conditional import cannot slip through: every ``import`` in the
source of every plugin under plugins/ that names lecentral must name ``lecentral.api``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import lecentral.api

ROOT = Path(__file__).parents[1]
PLUGIN_SOURCES = sorted(p for p in ROOT.glob("plugins/*/lecentral_*/**/*.py"))


def lecentral_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import of a lecentral module in a source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return sorted((line, m) for line, m in found if m == "lecentral" or m.startswith("lecentral."))


def test_every_plugin_imports_only_the_public_api() -> None:
    assert len(PLUGIN_SOURCES) > 20  # the seven plugins' modules were found
    private = [f"{path.relative_to(ROOT)}:{line}: {module}" for path in PLUGIN_SOURCES
               for line, module in lecentral_imports(path) if module != "lecentral.api"]
    assert private == [], "plugins must import from lecentral.api only:\n" + "\n".join(private)


def test_the_checker_sees_private_imports(tmp_path: Path) -> None:
    source = tmp_path / "plugin.py"
    source.write_text("import lecentral.store\ndef f():\n    from lecentral.install.config import CertEntry\n"
                      "from lecentral.api import hookimpl\nfrom lecentral_x import y\n")
    assert lecentral_imports(source) == [(1, "lecentral.store"), (3, "lecentral.install.config"),
                                         (4, "lecentral.api")]


def test_every_public_name_resolves_and_is_typed() -> None:
    """Each name in ``__all__`` imports, and the TYPE_CHECKING block (what mypy sees) re-exports
    exactly the same names from the same modules as the lazy table."""
    for name in lecentral.api.__all__:
        assert getattr(lecentral.api, name) is not None, name
    tree = ast.parse(Path(lecentral.api.__file__).read_text())
    typed = {alias.name: node.module for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom) and node.module != "__future__"
             and node.module is not None and node.module.startswith("lecentral.")
             for alias in node.names}
    assert typed == lecentral.api._WHERE
    assert sorted(lecentral.api.__all__) == sorted(lecentral.api._WHERE)


def test_an_unknown_name_is_a_clear_error() -> None:
    try:
        lecentral.api.Registry  # noqa: B018 - internal, on purpose not public
    except AttributeError as exc:
        assert "no public name 'Registry'" in str(exc)
    else:
        raise AssertionError("lecentral.api.Registry should not exist")


def test_the_light_names_do_not_import_heavy_libraries() -> None:
    """What every plugin module imports at load time (hookimpl, records, errors, interfaces)
    must not pull in cryptography, SQLAlchemy or the ACME library."""
    code = ("import sys; from lecentral.api import hookimpl, ServiceType, ConfigError, Service, "
            "IssuedCertificate; heavy = sorted(m for m in ('cryptography', 'sqlalchemy', 'acme', "
            "'josepy', 'dns') if m in sys.modules); print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --- the shape of the core ----------------------------------------------------------------------


def import_graph() -> dict[str, set[str]]:
    """Module -> the lecentral modules it imports, every import counted (module level, inside
    functions, under TYPE_CHECKING): a circle hidden in a function is still a circle."""
    package = ROOT / "lecentral"
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in package.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        found: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {resolve(a.name) for a in node.names if a.name.startswith("lecentral")}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                    node.module.startswith("lecentral"):
                found |= {resolve(f"{node.module}.{a.name}") for a in node.names}
        graph[module] = {m for m in found if m and m != module}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_core_has_no_import_circle() -> None:
    graph = import_graph()
    assert len(graph) > 60  # every module of the core was read
    assert circles(graph) == []
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_contract_depends_on_nothing_above_it() -> None:
    """errors and records are the bottom; the hook specs, the registration records and the
    interfaces use only them and the data modules they describe (never the engine, the registry,
    the plugins or the store's implementation)."""
    graph = import_graph()
    assert graph["lecentral.errors"] == set()
    assert graph["lecentral.records"] == set()
    allowed = {"lecentral.errors", "lecentral.records", "lecentral.types", "lecentral.interfaces",
               "lecentral.config", "lecentral.certificates", "lecentral.store.rows",
               "lecentral.leftovers", "lecentral.host",
               "lecentral.acme.client"}  # the type IssuerContext.acme returns
    for module in ("lecentral.hookspecs", "lecentral.types", "lecentral.interfaces"):
        assert graph[module] <= allowed, (module, graph[module] - allowed)


def test_the_product_never_imports_the_test_world() -> None:
    """lecentral_testing is a companion distribution (docs/testing.md): neither the core nor a
    plugin's code imports it, so a server never needs it."""
    product = sorted((ROOT / "lecentral").rglob("*.py")) + PLUGIN_SOURCES
    offenders = []
    for path in product:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names
                          if n.split(".")[0] == "lecentral_testing"]
    assert offenders == []
    assert not (ROOT / "lecentral" / "testing").exists()


def test_the_plugin_author_guide_lists_exactly_the_public_api() -> None:
    """docs/plugin-authors.md's table is the promise: every public name is in it, and every name
    in it is public."""
    doc = (ROOT / "docs" / "plugin-authors.md").read_text()
    table = doc[doc.index("## The public API"):doc.index("Every other module")]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    # the names listed are the items of the cell: "`Name`" or "`Name(...)`" after "| " or ", "
    listed = {name for row in rows
              for name in re.findall(r"(?:^ |, )`([A-Za-z_]\w*)(?:`|\()", row.split("|")[2])}
    assert listed == set(lecentral.api.__all__)
