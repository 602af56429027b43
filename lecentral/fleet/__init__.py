"""Fleet truth: what every server really serves, seen centrally.

Agents with ``[agent] report = true`` write what they installed and what their service presented
(:mod:`lecentral.fleet.store`, tables ``lecentral_deployments`` and ``lecentral_runs``); the central
host probes the same endpoints itself (``lecentral probe``, table ``lecentral_probes``); and
:mod:`lecentral.fleet.states` compares both with the ``certs`` table into one
:class:`~lecentral.fleet.model.FleetView`, which ``lecentral fleet``, ``lecentral check`` and
``lecentral metrics`` show, and whose state changes go to the notifiers (docs/fleet.md).
"""

#: long output lines shown by default (NRPE truncates what it carries; the rest is counted); here,
#: not in :mod:`lecentral.fleet.nagios`, so that a command defining the option imports nothing else
MAX_LINES = 100
