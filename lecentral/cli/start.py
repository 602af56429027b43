"""The console scripts' entry points: ``lecentral`` and ``lecentral-install``.

A command's start is mostly imports (click, SQLAlchemy, cryptography, acme, dnspython: a few
hundred thousand objects), during which Python's cyclic garbage collector runs every 700 new
objects and walks them again and again for cycles that module loading does not make: about a
tenth of a cold start. So the collector is off from here until the command's start is done
(:func:`lecentral.cli.startup.started`: the store opened, the plugins loaded); then everything
loaded so far is frozen out of its scans (``gc.freeze``) and it runs as usual. A command that
never gets there (``--help``, ``version``) ends first; as a backstop the collector is back after
``BACKSTOP`` seconds whatever happens, so no long command runs without it.

Only the console scripts do this: ``lecentral.cli.central.main`` imported by a test or another
program leaves the collector alone (``started`` is then a no-op).
"""

from __future__ import annotations

from lecentral.cli.startup import pause


def central() -> None:
    """``lecentral``."""
    from lecentral import idle

    idle.mark()  # is a core free for a second renew process? (lecentral/idle.py)
    pause()
    from lecentral.cli.central import main
    from lecentral.cli.output import guard_stdout
    from lecentral.cli.quickexit import run

    guard_stdout()  # a broken pipe or a full disk: lecentral/cli/output.py
    run(main)


def agent() -> None:
    """``lecentral-install``: the same stdout guard and exit as ``lecentral``."""
    pause()
    from lecentral.cli.agent import main
    from lecentral.cli.output import guard_stdout
    from lecentral.cli.quickexit import run

    guard_stdout("lecentral-install")  # a broken pipe or a full disk: lecentral/cli/output.py
    run(main)
