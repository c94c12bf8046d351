"""The benchmark's environment: repository, peer virtualenv, load generator, machine facts.

The suite installs the servers it compares against into its own virtualenv
(``benchmarks/.venv-peers`` by default, git-ignored) with pip, one group at a time, so a peer
that fails to install is skipped with a note instead of stopping the run. Versions are pinned
here so that anyone re-running the suite measures the same releases.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import venv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness import procfs

#: Prints one progress or setup line.
PrintFn = Callable[[str], None]

#: pip requirements of each peer group, pinned (the versions measured in docs/benchmarks/).
PEER_GROUPS: dict[str, tuple[str, ...]] = {
    # The chat app's dependency and the event loop every peer runs on.
    "base": ("python-socketio==5.18.1", "uvloop==0.23.0"),
    "uvicorn": ("uvicorn[standard]==0.54.0", "websockets==17.4", "wsproto==1.3.2"),
    "hypercorn": ("hypercorn==0.18.0",),
    "granian": ("granian==2.8.7",),
    "gunicorn": ("gunicorn==27.0.1",),
    "socketify": ("socketify==0.0.31",),
}

#: A statement each group must be able to run after installing (catches missing system libs).
PEER_CHECKS: dict[str, str] = {
    "base": "import socketio, uvloop",
    "uvicorn": "import uvicorn, websockets, wsproto, httptools",
    "hypercorn": "import hypercorn",
    "granian": "import granian",
    # `-k asgi` is gunicorn's own ASGI worker (gunicorn >= 25).
    "gunicorn": "import gunicorn.workers.gasgi",
    "socketify": "import socketify",
}

#: Hints printed when a group installs but does not import.
PEER_HINTS: dict[str, str] = {
    "socketify": "socketify loads libuv.so.1 at import: apt-get install libuv1",
}


class SetupError(RuntimeError):
    """The environment could not be prepared (no cargo, a build failed)."""


def _run(argv: Sequence[str], *, cwd: Path | None = None, timeout: float = 1800) -> str:
    """Run ``argv``; return its output, or raise SetupError with the output's tail."""
    try:
        proc = subprocess.run(
            list(argv),
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SetupError(f"{' '.join(argv)}: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-15:])
        raise SetupError(f"{' '.join(argv)} failed ({proc.returncode}):\n{tail}")
    return proc.stdout


@dataclass
class PeerEnv:
    """The peer virtualenv and which groups in it work."""

    path: Path
    python: Path
    ok: set[str] = field(default_factory=set)
    notes: dict[str, str] = field(default_factory=dict)

    def versions(self) -> dict[str, str]:
        """Installed versions of the measured distributions."""
        names = [
            "uvicorn",
            "websockets",
            "wsproto",
            "uvloop",
            "httptools",
            "hypercorn",
            "granian",
            "gunicorn",
            "socketify",
            "python-socketio",
            "python-engineio",
            "zcasgi",
        ]
        code = (
            "import json, importlib.metadata as m\n"
            "out = {}\n"
            f"for n in {names!r}:\n"
            "    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))"
        )
        try:
            found: dict[str, str] = json.loads(_run([str(self.python), "-c", code], timeout=60))
        except (SetupError, json.JSONDecodeError):
            return {}
        return found


def _python_in(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "python"


def prepare_peers(venv_dir: Path, groups: Sequence[str], log: PrintFn) -> PeerEnv:
    """Create ``venv_dir`` if needed and install ``groups`` (plus ``base``) into it.

    A group whose pins did not change since the last successful install is not reinstalled.
    Failures are recorded in ``PeerEnv.notes`` and the group left out of ``PeerEnv.ok``.
    """
    python = _python_in(venv_dir)
    if not python.exists():
        log(f"creating the peer virtualenv {venv_dir}")
        venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    env = PeerEnv(path=venv_dir, python=python)
    stamp_path = venv_dir / ".zcasgi-bench-groups.json"
    try:
        stamps: dict[str, str] = json.loads(stamp_path.read_text())
    except (OSError, json.JSONDecodeError):
        stamps = {}
    wanted = ["base", *[g for g in groups if g != "base"]]
    for group in wanted:
        pins = PEER_GROUPS[group]
        digest = hashlib.sha256("\n".join(pins).encode()).hexdigest()[:16]
        if stamps.get(group) != digest:
            log(f"pip install {' '.join(pins)}")
            try:
                _run(
                    [
                        str(python),
                        "-m",
                        "pip",
                        "install",
                        "--quiet",
                        "--disable-pip-version-check",
                        *pins,
                    ],
                    timeout=900,
                )
            except SetupError as exc:
                env.notes[group] = f"pip install failed: {str(exc).splitlines()[-1]}"
                stamps.pop(group, None)
                continue
            stamps[group] = digest
        try:
            _run([str(python), "-c", PEER_CHECKS[group]], timeout=120)
        except SetupError as exc:
            last = str(exc).splitlines()[-1]
            hint = PEER_HINTS.get(group)
            env.notes[group] = f"installed but does not import ({last})" + (
                f"; {hint}" if hint else ""
            )
            continue
        env.ok.add(group)
    stamp_path.write_text(json.dumps(stamps, indent=1, sort_keys=True))
    return env


def cargo_target_dir(repo: Path) -> Path:
    """The workspace's cargo target directory (honours ``CARGO_TARGET_DIR``)."""
    out = _run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=repo, timeout=300)
    return Path(json.loads(out)["target_directory"])


def build_loadgen(repo: Path, log: PrintFn) -> Path:
    """Build ``zcasgi-loadgen`` (cargo, release profile) and return the binary's path.

    Raises:
        SetupError: If cargo is missing or the build fails.
    """
    if shutil.which("cargo") is None:
        raise SetupError("cargo is not on PATH: the load generator is a Rust binary")
    log("cargo build --release -p zcasgi-loadgen")
    _run(["cargo", "build", "--release", "--quiet", "-p", "zcasgi-loadgen"], cwd=repo)
    binary = cargo_target_dir(repo) / "release" / "zcasgi-loadgen"
    if not binary.exists():
        raise SetupError(f"built, but {binary} does not exist")
    return binary


def install_release_zcasgi(repo: Path, peers: PeerEnv, log: PrintFn) -> None:
    """Build zcasgi with the release profile (fat LTO) and install it into the peer venv.

    Raises:
        SetupError: If maturin is missing or the build fails.
    """
    maturin = shutil.which("maturin", path=str(Path(sys.executable).parent)) or shutil.which(
        "maturin"
    )
    if maturin is None:
        raise SetupError("maturin not found (it is in requirements-dev.txt)")
    out_dir = peers.path / "wheels"
    shutil.rmtree(out_dir, ignore_errors=True)
    log("maturin build --release (zcasgi, fat LTO) -> peer virtualenv")
    _run(
        [
            maturin,
            "build",
            "--release",
            "--quiet",
            "--interpreter",
            str(peers.python),
            "--out",
            str(out_dir),
        ],
        cwd=repo,
    )
    wheels = sorted(out_dir.glob("zcasgi-*.whl"))
    if not wheels:
        raise SetupError(f"maturin produced no wheel in {out_dir}")
    _run(
        [
            str(peers.python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--force-reinstall",
            "--no-deps",
            str(wheels[-1]),
        ],
        timeout=300,
    )


def machine() -> dict[str, object]:
    """Facts about this machine for the report."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    try:
        import resource

        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError):
        nofile = -1
    return {
        "cpu": model,
        "cores": os.cpu_count() or 1,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "open_files": nofile,
        "loadavg_at_start": procfs.loadavg(),
        "hypervisor": _hypervisor(),
    }


def _hypervisor() -> str:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return "virtual machine" if " hypervisor" in flags else "bare metal"


def default_log(message: str) -> None:
    """Print a setup step."""
    print(f"==> {message}", flush=True)
