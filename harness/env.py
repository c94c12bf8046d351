"""Where the checkout is, and the environment server processes run in."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

#: The repository root (this package lives in it).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: The pytest directory; its ``apps`` package holds the test applications.
TESTS_DIR = REPO_ROOT / "tests"


def server_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a server process, with ``extra`` on top.

    ``PYTHONPATH`` starts with the repository root and ``tests/``, so ``examples.chat:app``,
    ``tests.apps.echo:app`` and ``apps.echo:app`` all import; output is unbuffered, so the
    output file holds what the server printed as soon as it printed it; ``VIRTUAL_ENV`` is
    dropped, since a server may run under another virtualenv's interpreter.
    """
    env = dict(os.environ)
    paths = [str(REPO_ROOT), str(TESTS_DIR)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("VIRTUAL_ENV", None)
    if extra:
        env.update(extra)
    return env
