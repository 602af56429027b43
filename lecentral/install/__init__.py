"""The server-side agent: compare, check, back up, switch files atomically, activate, verify, roll back.

Plugin authors use :class:`lecentral.install.service.CommandService` and
:func:`lecentral.install.service.run_command`; the engine is :class:`lecentral.install.engine.Agent`.
"""
