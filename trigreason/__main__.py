"""``python -m trigreason``: the command line."""

from .cli import main

main()
