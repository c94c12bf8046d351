"""Reading processes from ``/proc``: process trees, CPU time, resident memory, open files,
machine load.

Servers such as gunicorn, granian and hypercorn serve from child processes, so every figure
here is taken over a process *tree*: the PID the suite started and all its descendants.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` from field 3 (state) on, or None if the process is gone."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(")") + 1 :].split()


def parent_of(pid: int) -> int | None:
    """The parent PID of ``pid``, or None if it is gone."""
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot), to tell it from a later reuse of the PID."""
    fields = _stat_fields(pid)
    # starttime is field 22: index 19 after the state field.
    return int(fields[19]) if fields else None


def _children_by_parent() -> dict[int, list[int]]:
    by_parent: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        parent = parent_of(int(entry.name))
        if parent is not None:
            by_parent.setdefault(parent, []).append(int(entry.name))
    return by_parent


def tree(root: int) -> list[int]:
    """``root`` and all its living descendants (``root`` first)."""
    by_parent = _children_by_parent()
    found = [root]
    for pid in found:
        found.extend(by_parent.get(pid, []))
    return [pid for pid in found if (_PROC / str(pid)).exists()]


def stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` is stopped (by SIGSTOP: state ``T``); False if it is
    gone. A stop signal takes effect on each thread when the kernel next schedules it."""
    try:
        tasks = list((_PROC / str(pid) / "task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            raw = (task / "stat").read_text()
        except OSError:
            continue  # a thread that just ended
        if raw[raw.rfind(")") + 1 :].split()[0] not in ("T", "t"):
            return False
    return True


def children(parent: int) -> list[int]:
    """The living child processes of ``parent``."""
    return sorted(_children_by_parent().get(parent, []))


def cpu_seconds(pids: list[int]) -> float:
    """Summed user + system CPU seconds of ``pids`` (``/proc/PID/stat`` utime + stime)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            # utime and stime are fields 14 and 15: indexes 11 and 12 after the state field.
            total += int(fields[11]) + int(fields[12])
    return total / _CLOCK_TICKS


def rss_kib(pids: list[int]) -> int:
    """Summed resident set size (``VmRSS``) of ``pids`` in KiB."""
    total = 0
    for pid in pids:
        try:
            status = (_PROC / str(pid) / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
                break
    return total


def open_fds(pids: list[int]) -> int:
    """Summed count of open file descriptors of ``pids`` (entries of ``/proc/PID/fd``)."""
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(_PROC / str(pid) / "fd"))
        except OSError:
            continue
    return total


def busy_cpu_seconds() -> float:
    """CPU seconds all cores spent running tasks since boot (``/proc/stat`` user, nice,
    system and steal; interrupt time is left out, since loopback traffic lands there)."""
    try:
        first = (_PROC / "stat").read_text().splitlines()[0].split()
    except OSError:
        return 0.0
    values = [int(v) for v in first[1:]] + [0] * 8
    user, nice, system, steal = values[0], values[1], values[2], values[7]
    return (user + nice + system + steal) / _CLOCK_TICKS


def loadavg() -> float:
    """The one-minute load average."""
    try:
        return float((_PROC / "loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
