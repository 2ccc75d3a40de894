"""``python -m cli``: the ``mesh`` command, for when the console script is not on the PATH."""

from cli.app import main

main()
