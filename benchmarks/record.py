"""A run's record: where it was made, and the results files every runner writes the same way.

Every runner (the suite, ``benchmarks.scale``, ``benchmarks.tls``, ``benchmarks.soak``) records
its command, date, commit, machine and pinning with :func:`meta`, writes
``OUT/results.json`` (``{"meta": ..., <its records>}``) and ``OUT/results.md`` with
:func:`write`, and opens its results page with :func:`opening`. A page rewritten from its JSON
(``--report-only``) is the page the run wrote.

Reproducible from a commit: a run that writes into ``docs/`` (the committed record) refuses to
start on a tree with uncommitted changes unless it is given ``--allow-dirty``
(:func:`require_clean`); a run that does start on one records the changes, and its page says in
bold that it cannot be reproduced from a commit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import REPO_ROOT

from . import env

#: Where committed records live: a run writing here must start from a clean commit.
DOCS = REPO_ROOT / "docs"
#: The benchmarks' guide: what each run measures, how, and how to read its page.
GUIDE = DOCS / "benchmarks" / "README.md"
#: Most uncommitted changes a page lists by name.
CHANGES_SHOWN = 8


@dataclass(frozen=True)
class Checkout:
    """The commit a run measures and the tree's uncommitted changes when it started."""

    #: Full commit hash, or ``"unknown"`` outside a git checkout.
    commit: str
    #: ``git status --porcelain`` lines (modified, added, deleted and untracked files).
    changes: tuple[str, ...]

    @property
    def reproducible(self) -> bool:
        """Whether checking out :attr:`commit` gives the tree that was measured."""
        return self.commit != "unknown" and not self.changes


@dataclass(frozen=True)
class Start:
    """When a run started and the machine then (its load average before the run loads it)."""

    date: dt.datetime
    machine: dict[str, object]

    @classmethod
    def now(cls) -> Start:
        """The present moment and machine."""
        return cls(dt.datetime.now(dt.timezone.utc), env.machine())


class DirtyTree(RuntimeError):
    """The tree has uncommitted changes and the run would write a committed record."""


def checkout(repo: Path = REPO_ROOT) -> Checkout:
    """The checked-out commit of ``repo`` and its uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=60, check=True
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        status = git("status", "--porcelain")
    except (OSError, subprocess.SubprocessError):
        return Checkout("unknown", ())
    return Checkout(commit, tuple(line for line in status.splitlines() if line.strip()))


def require_clean(out: Path, allow_dirty: bool) -> Checkout:
    """The checkout, after refusing a tree that cannot be reproduced when ``out`` is under docs/.

    Raises:
        DirtyTree: If the tree has uncommitted changes (or is not a git checkout), the results
            would go under ``docs/``, and ``allow_dirty`` is false.
    """
    state = checkout()
    committed = out.resolve().is_relative_to(DOCS)
    if not state.reproducible and committed and not allow_dirty:
        if state.commit == "unknown":
            why = "not a git checkout"
        else:
            listed = [f"  {line}" for line in state.changes[:CHANGES_SHOWN]]
            if len(state.changes) > CHANGES_SHOWN:
                listed.append(f"  ... {len(state.changes) - CHANGES_SHOWN} more")
            why = (
                "the tree has uncommitted changes, so the figures could not be reproduced "
                "from a commit:\n" + "\n".join(listed)
            )
        raise DirtyTree(
            f"refusing to write a record into {os.path.relpath(out, REPO_ROOT)}: {why}\n"
            "commit (or stash) them first, or pass --allow-dirty to record them"
        )
    return state


def begin(
    out: Path, args: argparse.Namespace, rewrite: Callable[[dict[str, Any]], None]
) -> Checkout | int:
    """Where every runner starts, from its parsed ``args`` (:func:`add_options`).

    With ``--report-only``: ``rewrite`` the record of ``out`` and return the exit status (0, or
    2 when there is no record). Otherwise: the checkout to record, or 2 (the reason printed)
    when the tree is refused (:func:`require_clean`).
    """
    if args.report_only:
        data = read(out)
        if data is None:
            return 2
        rewrite(data)
        print(f"==> rewrote {out / 'results.md'}", flush=True)
        return 0
    try:
        return require_clean(out, args.allow_dirty)
    except DirtyTree as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options every runner has: ``--allow-dirty`` and ``--report-only``."""
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="run on a tree with uncommitted changes even when writing under docs/ "
        "(the record lists them and its page says it cannot be reproduced from a commit)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: rewrite results.md and the plots from OUT/results.json",
    )


def shown(arg: str) -> str:
    """``arg``, relative to the repository root if it is an absolute path inside it (a record
    names no path of the machine it was made on)."""
    path = Path(arg)
    if path.is_absolute() and Path(os.path.normpath(path)).is_relative_to(REPO_ROOT):
        return os.path.relpath(path, REPO_ROOT)
    return arg


def command(module: str, argv: Sequence[str] | None) -> str:
    """The command line as run from the repository root, paths inside it made relative."""
    args = list(argv if argv is not None else sys.argv[1:])
    return shlex.join(["python", "-m", module, *map(shown, args)])


def meta(
    module: str,
    argv: Sequence[str] | None,
    state: Checkout,
    pinning: str,
    *,
    started: Start | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The run's conditions: command, date and machine (as of ``started``, else now), commit
    and changes, pinning and ``extra``."""
    when = started or Start.now()
    return {
        "command": command(module, argv),
        "date": when.date.strftime("%Y-%m-%d %H:%M UTC"),
        "commit": state.commit,
        "changes": list(state.changes),
        "machine": when.machine,
        "pinning": pinning,
        **extra,
    }


def machine_text(m: dict[str, Any]) -> str:
    """The machine of a record in one line."""
    return (
        f"{m['cpu']}, {m['cores']} cores ({m['hypervisor']}), {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}, Python {m['python']}, open-file limit {m['open_files']}, "
        f"load average {m['loadavg_at_start']} at the start"
    )


def commit_text(meta: dict[str, Any]) -> str:
    """The record's commit, and either how to reproduce it or, in bold, why it cannot be.

    Records made before the changes were recorded carry ``"<hash>-dirty"`` instead.
    """
    commit = str(meta.get("commit", "unknown"))
    changes: list[str] = list(meta.get("changes", []))
    old_dirty = commit.endswith("-dirty")
    commit = commit.removesuffix("-dirty")
    if commit == "unknown":
        return "**unknown (not a git checkout): the figures cannot be reproduced from a commit**"
    short = commit[:12]
    if not changes and not old_dirty:
        return f"`{short}` (reproduce: `git checkout {short}`, `make dev`, then the command)"
    if changes:
        names = [line[3:] for line in changes[:CHANGES_SHOWN]]
        more = len(changes) - CHANGES_SHOWN
        what = ", ".join(f"`{n}`" for n in names) + (f" and {more} more" if more > 0 else "")
    else:
        what = "the changed files were not recorded"
    return (
        f"`{short}` **with uncommitted changes** ({what}): **the figures cannot be reproduced "
        "exactly from a commit**"
    )


def opening(
    title: str, summary: str, meta: dict[str, Any], out: Path, guide: Path, extra: Sequence[str]
) -> list[str]:
    """The head of a results page: title, what was measured, a link to ``guide`` (relative to
    ``out``) and the run's conditions, followed by the runner's ``extra`` bullet lines."""
    link = os.path.relpath(guide, out)
    return [
        f"# {title}",
        "",
        f"{summary} How it is measured and how to read it: [{guide.name}]({link}).",
        "",
        f"- Command (from the repository root): `{str(meta['command']).strip()}`",
        f"- Commit: {commit_text(meta)}",
        f"- Date: {meta['date']}",
        f"- Machine: {machine_text(meta['machine'])}",
        f"- Pinning: {meta['pinning']}",
        *extra,
        "",
    ]


def write(out: Path, data: dict[str, Any], page: str) -> None:
    """``out/results.json`` (``data``: the meta and every record) and ``out/results.md``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    (out / "results.md").write_text(page.rstrip() + "\n")


def read(out: Path) -> dict[str, Any] | None:
    """``out/results.json``, or None (the reason printed) when it cannot be read."""
    try:
        data: dict[str, Any] = json.loads((out / "results.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"cannot read {out / 'results.json'}: {exc}", file=sys.stderr)
        return None
    return data
