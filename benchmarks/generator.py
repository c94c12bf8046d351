"""Running ``zcasgi-loadgen`` (benchmarks/loadgen) and reading its JSON reports."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from harness import pinned

#: Source addresses the load generator spreads connections over (past one address's ports).
SOURCES = ",".join(f"127.0.0.{i}" for i in range(1, 9))

Report = dict[str, Any]


class LoadgenError(RuntimeError):
    """The load generator failed, reported an error, or ran out of time."""


def _last_json(text: str) -> Report:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(line)
                if isinstance(value, dict):
                    return value
    raise LoadgenError(f"no JSON report in the load generator's output: {text[-500:]!r}")


@dataclass
class Loadgen:
    """The load generator binary, and the CPU it is pinned to."""

    binary: Path
    cpu: int | None

    def argv(self, subcommand: str, args: list[str]) -> list[str]:
        """The pinned command line of ``subcommand``."""
        return pinned([str(self.binary), subcommand, *args], self.cpu)

    def run(self, subcommand: str, args: list[str], timeout: float) -> Report:
        """Run ``subcommand`` to completion and return its JSON report.

        Raises:
            LoadgenError: On a non-zero exit, an ``error`` report or a timeout.
        """
        try:
            proc = subprocess.run(
                self.argv(subcommand, args),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LoadgenError(f"{subcommand} still running after {timeout:.0f} s") from exc
        report = _last_json(proc.stdout)
        if proc.returncode != 0 or "error" in report:
            raise LoadgenError(f"{subcommand}: {report.get('error') or proc.stderr[-500:]}")
        return report

    def hold(self, args: list[str]) -> Hold:
        """Start ``hold`` with ``args``; see :class:`Hold`."""
        proc = subprocess.Popen(
            self.argv("hold", args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        return Hold(proc)


@dataclass
class Hold:
    """A running ``hold``: wait for its "open" line, then :meth:`release` the connections."""

    proc: subprocess.Popen[bytes]
    opened: Report = field(default_factory=dict)
    _buffer: bytes = b""

    def wait_open(self, timeout: float) -> Report:
        """Wait for the "open" report.

        Raises:
            LoadgenError: If the process exits or ``timeout`` passes first.
        """
        stdout: IO[bytes] | None = self.proc.stdout
        if stdout is None:
            raise LoadgenError("hold has no stdout pipe")
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise LoadgenError(f"hold: connections not open after {timeout:.0f} s")
                if not selector.select(timeout=min(left, 1.0)):
                    continue
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    raise LoadgenError(f"hold exited: {self._buffer.decode(errors='replace')}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        self.opened = _last_json(line.decode())
        if "error" in self.opened:
            raise LoadgenError(f"hold: {self.opened['error']}")
        return self.opened

    def release(self, timeout: float = 30.0) -> Report:
        """Close stdin (the connections close) and return the final report."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return {}
        with contextlib.suppress(LoadgenError):
            return _last_json((self._buffer + out).decode(errors="replace"))
        return {}

    def kill(self) -> None:
        """Kill the process by PID if it is still running."""
        if self.proc.poll() is None:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
