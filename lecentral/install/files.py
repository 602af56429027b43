"""The built-in ``files`` service: write the files, run the entry's ``check`` and ``reload``.

It has no defaults: the entry names every path and command. Service plugins for real daemons
(apache, postfix...) are the same thing with defaults filled in (see docs/plugin-authors.md).
"""

from __future__ import annotations

from lecentral.hookspecs import hookimpl
from lecentral.types import ServiceType, lazy_service


@hookimpl
def lecentral_register_services() -> list[ServiceType]:
    return [ServiceType(
        name="files",
        factory=lazy_service("lecentral.install.service:CommandService"),
        description="write cert/chain/fullchain/combined files, run the entry's check and reload commands",
    )]
