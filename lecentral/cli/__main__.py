"""``python -m lecentral.cli``: the central CLI (``lecentral``)."""

from lecentral.cli.central import main

main()
