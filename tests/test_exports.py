"""The public API: ``zcasgi.__all__`` matches what the package and its stubs provide."""

from __future__ import annotations

import ast
from pathlib import Path

import zcasgi
import zcasgi._zcasgi as compiled

STUB = Path(zcasgi.__file__).with_name("_zcasgi.pyi")


def test_all_names_exist() -> None:
    for name in zcasgi.__all__:
        assert hasattr(zcasgi, name), name


def test_every_compiled_name_is_stubbed() -> None:
    tree = ast.parse(STUB.read_text())
    stubbed = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            stubbed.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            stubbed.add(node.target.id)
        elif isinstance(node, ast.Assign):
            stubbed.update(t.id for t in node.targets if isinstance(t, ast.Name))
    public = {n for n in dir(compiled) if not n.startswith("__") or n == "__version__"}
    assert public - stubbed == set()


def test_exceptions() -> None:
    assert issubclass(zcasgi.ProtocolError, zcasgi.ZcasgiError)
    assert issubclass(zcasgi.HandshakeError, zcasgi.ZcasgiError)
    assert issubclass(zcasgi.ClientDisconnected, OSError)
    assert zcasgi.BACKENDS == ["mio", "tokio"]


def test_py_typed() -> None:
    assert Path(zcasgi.__file__).with_name("py.typed").exists()
