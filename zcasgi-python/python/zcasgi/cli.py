"""The ``zcasgi`` command line, with uvicorn's conventions: ``zcasgi MODULE:APP [options]``.

Every `Config` option is a flag (``ws_max_size`` → ``--ws-max-size``), made from
`zcasgi.options.OPTIONS`; environment variables ``ZCASGI_<OPTION>`` give defaults. Invalid values
are reported with the option's name and exit code 2 before anything starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._zcasgi import __version__
from .config import Config
from .options import OPTIONS, Cli, Option
from .server import run

__all__ = ["build_parser", "main"]


def _reader(option: Option) -> Callable[[str], Any]:
    """Reads a flag's value as the option's `Option.parse` does; argparse reports the error."""

    def read(raw: str) -> Any:
        try:
            return option.parse(raw)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return read


def _add(parser: argparse.ArgumentParser, option: Option) -> None:
    """Adds the flags of one option (`Option.cli` says which)."""
    flags = option.flags
    if option.cli is Cli.TOGGLE:
        parser.add_argument(flags[0], action="store_true", dest=option.name, help=option.help)
        parser.add_argument(flags[1], action="store_false", dest=option.name)
        return
    if option.cli is Cli.FLAG:
        parser.add_argument(flags[0], action="store_true", dest=option.name, help=option.help)
        return
    parser.add_argument(
        flags[0],
        action="append" if option.cli is Cli.APPEND else "store",
        dest=option.name,
        type=_reader(option),
        choices=option.choices or None,
        metavar=option.metavar or None,
        help=option.help,
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, one flag (or a ``--x``/``--no-x`` pair) per `zcasgi.options.OPTIONS`
    entry (exposed for documentation and tests)."""
    p = argparse.ArgumentParser(
        prog="zcasgi",
        description="Serve an ASGI application with zcasgi (WebSocket-first, Rust I/O).",
        argument_default=argparse.SUPPRESS,
        # `--http h11` must not be taken for `--http-max-body-size`.
        allow_abbrev=False,
    )
    p.add_argument("app", help="the ASGI application, as MODULE:ATTRIBUTE")
    p.add_argument("--version", action="version", version=f"zcasgi {__version__}")
    for option in OPTIONS:
        _add(p, option)
    p.add_argument("--app-dir", default=".", help="directory added to sys.path (default .)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``zcasgi`` and ``python -m zcasgi``."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    app_dir = os.path.abspath(args.pop("app_dir", "."))
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    app: Any = args.pop("app")
    try:
        config = Config(app, **args)
        if config.workers == 1 and not config.reload:
            config.load_app()
        else:
            # Each worker imports the application after the fork (zcasgi.supervisor), and the
            # reloader's server process imports it afresh each time (zcasgi.reload).
            config.find_app()
    except (ValueError, TypeError) as exc:
        parser.exit(2, f"zcasgi: error: {exc}\n")
    run(config)


if __name__ == "__main__":
    main()
