"""``lecentral plugin new NAME``: a ready service plugin package, from the template lecentral ships.

The template is package data (``lecentral/templates/plugin``): every ``*.tmpl`` file there is
rendered with :class:`string.Template` (``$name``, ``$package``...) to the same relative path in
the new package, ``package/`` becoming the package's directory. The package is written into a
temporary directory beside its destination and renamed into place at the end, so a failure
leaves nothing half-written.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

import click

from lecentral import __version__
from lecentral.cli.common import guarded
from lecentral.errors import ConfigError

#: a service name: lower case letters and digits, words joined by single hyphens
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
NAME_MAX = 40


def check_name(name: str) -> str:
    """``name`` if it can name a service, its distribution and its package, else ConfigError."""
    if len(name) > NAME_MAX or not NAME_RE.match(name):
        raise ConfigError(f"plugin name {name!r} is not usable: use lower case letters and digits, "
                          f"words joined by single hyphens, starting with a letter, at most "
                          f"{NAME_MAX} characters (e.g. 'haproxy', 'my-daemon')")
    if name == "lecentral" or name.startswith("lecentral-"):
        raise ConfigError(f"plugin name {name!r}: give the daemon's name only; the package is "
                          f"called lecentral-NAME already")
    return name


def series(version: str) -> str:
    """The requirement on lecentral's release series: ``>=0.1,<0.2`` for 0.1.x, ``>=1.2,<2`` for 1.2.x."""
    major, minor = (int(part) for part in version.split(".")[:2])
    upper = f"{major}.{minor + 1}" if major == 0 else str(major + 1)
    return f">={major}.{minor},<{upper}"


def substitutions(name: str) -> dict[str, str]:
    name_id = name.replace("-", "_")
    return {"name": name, "name_id": name_id, "package": f"lecentral_{name_id}",
            "distribution": f"lecentral-{name}", "series": series(__version__),
            "title": "".join(word.capitalize() for word in name.split("-"))}


def _render(source: Traversable, target: Path, values: dict[str, str], relative: str) -> None:
    for item in source.iterdir():
        if item.is_dir():
            _render(item, target, values, f"{relative}{item.name}/")
        elif item.name.endswith(".tmpl"):
            path = f"{relative}{item.name.removesuffix('.tmpl')}"
            path = path.replace("package/", f"{values['package']}/", 1)
            if path == "tests/test_contract.py":
                path = f"tests/test_{values['name_id']}_contract.py"
            out = target / path
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(Template(item.read_text()).substitute(values))


def _refuse_registered(name: str) -> None:
    """A service of that name installed already would clash with the new one (docs: a name
    registered twice is an error until one distribution is uninstalled)."""
    from lecentral.registry import Registry

    registry = Registry.load()
    plugin = registry.services.owner.get(name) or (name if name in registry.loaded.infos else None)
    if plugin is not None:
        info = registry.loaded.infos.get(plugin)
        by = f"plugin {plugin!r} of {info.distribution}" if info else f"plugin {plugin!r}"
        raise ConfigError(f"plugin name {name!r}: {by} is installed and registers that name "
                          "already (two would clash); choose another name")


def write_package(name: str, directory: Path) -> Path:
    """Write ``directory/lecentral-NAME`` from the template; return its path."""
    values = substitutions(check_name(name))
    if not directory.is_dir():
        raise ConfigError(f"--dir {directory}: no such directory; create it first")
    target = directory / values["distribution"]
    if os.path.lexists(target):
        raise ConfigError(f"{target} exists already; remove it or choose another --dir")
    _refuse_registered(name)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=directory))
    try:
        _render(files("lecentral") / "templates" / "plugin", temp, values, "")
        umask = os.umask(0)
        os.umask(umask)
        temp.chmod(0o777 & ~umask)  # mkdtemp made it 0700
        os.rename(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return target


@click.group()
def plugin() -> None:
    """Write plugins for lecentral (see docs/plugin-authors.md)."""


@plugin.command("new")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              default=Path("."), show_default=True, help="Where to create lecentral-NAME/.")
@guarded
def new(name: str, directory: Path) -> None:
    """Create DIR/lecentral-NAME/, a service plugin package for the daemon NAME.

    \b
    It holds:
      pyproject.toml                  the lecentral.plugins entry point NAME, lecentral's series
      README.md                       what is left to do before a first release
      lecentral_NAME/plugin.py        the NAME service (DEFAULTS, CommandService), lecentral.api only
      tests/test_NAME_contract.py     tests that pass now (the service is registered), and the
                                      harness to fill in for the service contract

    NAME is the daemon's name: lower case letters and digits, words joined by single hyphens
    (a hyphen becomes "_" in the package name). Refused, with exit status 2: an unusable NAME,
    a NAME that an installed plugin already registers, an existing DIR/lecentral-NAME.
    Then: pip install -e 'DIR/lecentral-NAME[test]' and pytest DIR/lecentral-NAME/tests.
    """
    target = write_package(name, directory)
    click.echo(f"created {target}: edit {substitutions(name)['package']}/plugin.py (its TODOs), "
               f"then: pip install -e '{target}[test]' && pytest {target}/tests")
