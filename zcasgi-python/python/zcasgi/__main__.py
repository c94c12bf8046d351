"""``python -m zcasgi`` runs the command line."""

from .cli import main

# Guarded: the reloader's server process (multiprocessing, spawn) imports this module again.
if __name__ == "__main__":
    main()
