"""``python -m lecentral.cli``: the central CLI (``lecentral``)."""

from lecentral.cli.start import central

central()
