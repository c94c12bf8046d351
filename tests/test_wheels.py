"""The wheels users install (``make wheels``, scripts/wheels.sh) install and serve on two
CPython versions: the abi3 wheel on the newest CPython found (3.10 or later), and the CPython 3.9
wheel on 3.9.

The wheels are built once for the session with the ``ci`` cargo profile (the release profile's
tags and contents, built faster), into a temporary directory. Each is installed with
``pip --no-index`` into a fresh virtualenv of its Python, which then serves an HTTP request and
a WebSocket echo from ``tests/apps/echo.py``. The interpreters come from pyenv (or PATH): a
missing one skips its case, naming it, except under CI, where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from harness import REPO_ROOT, ZcasgiServer, server_env

#: Building two wheels from a cold cache takes minutes on two cores.
pytestmark = pytest.mark.timeout(1800)

#: (wheel tag fragment, interpreters to try in order)
CASES = {
    "abi3": ("-cp310-abi3-", ["3.14", "3.13", "3.12"]),
    "cp39": ("-cp39-cp39-", ["3.9"]),
}


def _python(version: str) -> str | None:
    """A CPython ``version`` interpreter from PATH or pyenv's versions, or None."""
    found = shutil.which(f"python{version}")
    if found and subprocess.run([found, "-c", ""], capture_output=True).returncode == 0:
        return found
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return None
    root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
    candidates = sorted(Path(root, "versions").glob(f"{version}.*/bin/python{version}"))
    return str(candidates[-1]) if candidates else None


@pytest.fixture(scope="session")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The wheels scripts/wheels.sh builds (``ci`` profile) into a temporary directory."""
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        ["bash", "scripts/wheels.sh", "--profile", "ci", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=1700,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert list(out.glob("zcasgi-*.tar.gz")), "no sdist"
    return sorted(out.glob("*.whl"))


@pytest.mark.parametrize("case", sorted(CASES))
async def test_wheel_installs_and_serves(
    case: str, wheels: list[Path], tmp_path: Path, backend: str
) -> None:
    """The wheel installs into a clean virtualenv and that environment serves HTTP and a
    WebSocket."""
    tag, versions = CASES[case]
    python = next((p for v in versions if (p := _python(v)) is not None), None)
    if python is None:
        message = f"no CPython {' or '.join(versions)} here (pyenv install {versions[-1]})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    [wheel] = [w for w in wheels if tag in w.name]
    assert "manylinux2014_x86_64" in wheel.name or "manylinux_2_17" in wheel.name, wheel.name

    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=300)
    venv_python = str(venv / "bin" / "python")
    install = subprocess.run(
        [venv_python, "-m", "pip", "install", "--no-index", "--quiet", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    where = subprocess.run(
        [venv_python, "-c", "import sys, zcasgi; print(zcasgi.__file__, *sys.version_info[:2])"],
        capture_output=True,
        text=True,
        env=server_env(),
        cwd=REPO_ROOT,
        timeout=60,
    )
    # The installed wheel, not the source tree, is what the server imports.
    assert str(venv) in where.stdout, where.stdout + where.stderr

    with ZcasgiServer("apps.echo:app", backend, ["--no-access-log"], python=venv_python) as server:
        async with httpx.AsyncClient() as http:
            response = await http.get(server.url("http", "/hello"), timeout=10)
        # The echo app answers every HTTP request with its own 404.
        assert (response.status_code, response.text) == (404, "not found")
        async with connect(server.url("ws", "/echo")) as ws:
            await ws.send("from " + case)
            assert await ws.recv() == "from " + case
    assert "Traceback" not in server.output(), server.output()
