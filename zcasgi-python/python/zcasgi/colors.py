"""Coloured level names for the console handler zcasgi gives its loggers (``use_colors``)."""

from __future__ import annotations

import copy
import logging
from typing import TextIO

__all__ = ["LevelFormatter", "wants_colors"]

#: ANSI SGR colour of each level's name: uvicorn's choice (trace blue, debug cyan, info green,
#: warning yellow, error red, critical bright red).
_COLOURS = {5: "34", 10: "36", 20: "32", 30: "33", 40: "31", 50: "91"}
#: Width of the level name column (``%(levelname)-9s``).
_WIDTH = 9


def wants_colors(use_colors: bool | None, stream: TextIO) -> bool:
    """Whether to colour: as ``use_colors`` says, or (None) when ``stream`` is a terminal."""
    if use_colors is not None:
        return use_colors
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class LevelFormatter(logging.Formatter):
    """A `logging.Formatter` whose ``%(levelname)s`` is coloured by level when ``colors``;
    the name keeps its column of 9 characters either way.

    Args:
        fmt: The format, using ``%(levelname)-9s``.
        colors: Whether to colour the level names.
    """

    def __init__(self, fmt: str, colors: bool) -> None:
        super().__init__(fmt)
        self.colors = colors

    def formatMessage(self, record: logging.LogRecord) -> str:
        colour = _COLOURS.get(record.levelno)
        if not self.colors or colour is None:
            return super().formatMessage(record)
        shown = copy.copy(record)
        name = record.levelname
        shown.levelname = f"\x1b[{colour}m{name}\x1b[0m" + " " * max(0, _WIDTH - len(name))
        return super().formatMessage(shown)
