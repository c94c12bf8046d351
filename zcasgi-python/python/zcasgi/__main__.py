"""``python -m zcasgi`` runs the command line."""

from .cli import main

main()
