"""The docs hold when tried: docs/configuration.md's options table says what `zcasgi.Config`
does (one row per option, no row for anything else, each with the option's default and the
core's range), and every relative link of README.md and docs/ reaches its file and heading."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

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


#: Markdown pages whose relative links must resolve: the README and every page under docs/.
PAGES = sorted([REPO_ROOT / "README.md", *(REPO_ROOT / "docs").rglob("*.md")])
#: ``[text](target)`` and ``![alt](target)``, the text possibly over several lines.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
#: Fenced code blocks, where neither ``#`` lines are headings nor brackets links.
FENCED = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
#: Inline code spans, where brackets are not links.
INLINE_CODE = re.compile(r"`[^`\n]+`")


def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the headings of ``page`` (lower case, punctuation dropped,
    spaces to hyphens, ``-1``, ``-2``... for repeats)."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in FENCED.sub("", page.read_text()).splitlines():
        if not (m := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).replace("`", "").lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _broken(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(INLINE_CODE.sub("", FENCED.sub("", page.read_text()))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path)).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no heading with that anchor")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link of the page reaches a file, and its #anchor a heading there."""
    assert _broken(page) == []


def test_link_check_sees_broken_links(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other page\n\n## The `x` option, in short\n")
    page.write_text(
        "[ok](other.md#the-x-option-in-short) [gone](missing.md)\n"
        "[bad anchor](other.md#nowhere) ![img](\nother.md) [web](https://example.com/x)\n"
        "`[not a link](missing.md)`\n"
    )
    assert _broken(page) == [
        "missing.md: no such file",
        "other.md#nowhere: no heading with that anchor",
    ]
