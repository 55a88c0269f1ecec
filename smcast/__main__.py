"""``python -m smcast``: the command line (used by the daemon to start each job)."""

from smcast.cli import main

main()
