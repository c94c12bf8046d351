"""docs/configuration.md's options table says what `zcasgi.Config` does: one row per option,
no row for anything else, each with the option's default and the core's range."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from harness import REPO_ROOT
from zcasgi import _zcasgi
from zcasgi.config import defaults, option_names

DOC = REPO_ROOT / "docs" / "configuration.md"
#: A row of the table: | `name` (`--alias`) | default | range | meaning |
ROW = re.compile(r"^\| `(?P<name>[a-z_0-9]+)`[^|]*\| (?P<default>[^|]*) \| (?P<range>[^|]*) \|")


def _rows() -> list[dict[str, str]]:
    return [m.groupdict() for line in DOC.read_text().splitlines() if (m := ROW.match(line))]


def _shown(value: Any) -> str:
    """How the table writes a default."""
    if value is None:
        return "—"
    if value == "":
        return '`""`'
    return f"`{value}`"


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_one_row_per_option() -> None:
    names = [row["name"] for row in _rows()]
    assert len(names) == len(set(names)), "an option has two rows"
    assert set(names) == set(option_names())


@pytest.mark.parametrize("row", _rows(), ids=lambda row: row["name"])
def test_default_is_configs(row: dict[str, str]) -> None:
    assert row["default"].strip() == _shown(defaults()[row["name"]])


@pytest.mark.parametrize("name", sorted(_zcasgi.server_limits()))
def test_range_is_the_cores(name: str) -> None:
    """The core validates these ranges (``ServerConfig::validate``); the table shows them."""
    low, high = _zcasgi.server_limits()[name]
    [row] = [r for r in _rows() if r["name"] == name]
    bounds = [_number(b) for b in re.findall(r"`([0-9.,]+)`", row["range"])]
    assert math.isclose(bounds[0], low) and math.isclose(bounds[-1], high), row["range"]
