"""One list of options (`zcasgi.options.OPTIONS`): the signatures of `Config` and `serve`, the
CLI flags and the ``ZCASGI_*`` variables all match it, and a type checker holds callers to it."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

import zcasgi
from harness import REPO_ROOT
from zcasgi.cli import build_parser
from zcasgi.config import Config
from zcasgi.options import OPTIONS, Cli, Kind, Option

#: A valid flag value or variable text of each kind.
SAMPLES = {
    Kind.TEXT: "x",
    Kind.INT: "7",
    Kind.OPTIONAL_INT: "none",
    Kind.SECONDS: "1.5",
    Kind.OPTIONAL_SECONDS: "off",
    Kind.BOOL: "Yes",
    Kind.OPTIONAL_BOOL: "0",
    Kind.LIST: "a",
    Kind.HEADERS: "x-a: 1",
}


def _sample(option: Option) -> str:
    return option.choices[-1] if option.choices else SAMPLES[option.kind]


@pytest.mark.parametrize("function", [Config, zcasgi.serve], ids=["Config", "serve"])
def test_the_signatures_are_the_list(function: Any) -> None:
    """Every keyword of `Config` and `serve` is an option, in order, with its type and its
    default (a ``ZCASGI_*`` variable applies when the keyword is not given)."""
    parameters = list(inspect.signature(function).parameters.values())
    assert parameters[0].name == "app"
    keywords = parameters[1:]
    assert [p.name for p in keywords] == [o.name for o in OPTIONS]
    for parameter, option in zip(keywords, OPTIONS):
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, option.name
        assert parameter.annotation == option.annotation, option.name
        assert repr(parameter.default) == repr(option.default), option.name
        assert getattr(parameter.default, "option", None) is option, option.name


def test_the_literal_types_are_the_choices() -> None:
    """An option with choices is typed as their `Literal` (a type checker rejects others)."""
    hints = typing.get_type_hints(Config.__init__)
    for option in OPTIONS:
        if typing.get_origin(hints[option.name]) is typing.Literal:
            assert typing.get_args(hints[option.name]) == option.choices, option.name
    assert {o.name for o in OPTIONS if o.choices} - {"log_level"} == {
        name for name, hint in hints.items() if typing.get_origin(hint) is typing.Literal
    }


def test_the_cli_is_the_list() -> None:
    """Each option has its flags (``--x``, or ``--x``/``--no-x``), and there are no others."""
    parser = build_parser()
    flags = {flag: action.dest for action in parser._actions for flag in action.option_strings}
    own = {"-h", "--help", "--version", "--app-dir"}
    expected = {flag: o.name for o in OPTIONS for flag in o.flags}
    assert {f: d for f, d in flags.items() if f not in own} == expected


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_flags_and_variables_read_the_same(option: Option, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flag and ``ZCASGI_<NAME>`` give an option the same value."""
    sample = _sample(option)
    parser = build_parser()
    if option.cli is Cli.TOGGLE:
        on = vars(parser.parse_args(["a:b", option.flags[0]]))[option.name]
        off = vars(parser.parse_args(["a:b", option.flags[1]]))[option.name]
        assert (on, off) == (True, False)
        sample = "no"
        from_cli: Any = False
    elif option.cli is Cli.FLAG:
        from_cli = vars(parser.parse_args(["a:b", option.flags[0]]))[option.name]
        sample = "true"
    else:
        from_cli = vars(parser.parse_args(["a:b", option.flags[0], sample]))[option.name]
    if option.cli is Cli.APPEND:
        assert from_cli == [option.parse(sample)]
    monkeypatch.setenv(option.variable, sample)
    assert option.from_environment() == (True if option.cli is Cli.FLAG else from_cli)


def test_list_variables_take_several_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZCASGI_HEADERS", "x-a: 1\nx-b:two, three\n")
    monkeypatch.setenv("ZCASGI_RELOAD_INCLUDES", "*.html, *.css")
    config = Config("a:b")
    assert config.headers == [("x-a", "1"), ("x-b", "two, three")]
    assert config.reload_includes == ["*.html", "*.css"]


BOOLEAN_OPTIONS = [o for o in OPTIONS if o.kind in (Kind.BOOL, Kind.OPTIONAL_BOOL)]


@pytest.mark.parametrize("option", BOOLEAN_OPTIONS, ids=lambda o: o.name)
@pytest.mark.parametrize("raw", ["maybe", "on", "2", "", "tru"])
def test_boolean_variables_are_strict(
    option: Option, raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(option.variable, raw)
    with pytest.raises(ValueError, match=rf"^{option.variable}: expected true/false"):
        Config("a:b")


@pytest.mark.parametrize("option", BOOLEAN_OPTIONS, ids=lambda o: o.name)
@pytest.mark.parametrize(("raw", "value"), [("TRUE", True), ("1", True), ("No", False)])
def test_boolean_variables(
    option: Option, raw: str, value: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(option.variable, raw)
    assert option.from_environment() is value


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zcasgi", "apps.echo:app", "--port", "0", *args],
        cwd=REPO_ROOT / "tests",
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ws-per-message-deflate", "maybe"], "argument --ws-per-message-deflate: expected"),
        (["--header", "no-colon"], "argument --header: expected NAME:VALUE, got 'no-colon'"),
        (["--header", "x y:1"], 'headers: "x y" has a name that is not an HTTP token'),
        (["--port", "eighty"], "argument --port: expected an integer, got 'eighty'"),
        (["--env-file", "no-such.env"], "env_file: 'no-such.env' is not a file"),
        (["--reload", "--workers", "2"], "reload and workers=2 cannot be combined"),
        (["--reload", "--reload-dir", "no-such-dir"], "reload_dirs: 'no-such-dir' is not a dir"),
    ],
)
def test_cli_bad_values_exit_2_naming_the_option(args: list[str], message: str) -> None:
    result = _cli(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_cli_bad_boolean_variable_exits_2() -> None:
    result = _cli(env={"ZCASGI_SERVER_HEADER": "on"})
    assert result.returncode == 2
    assert "ZCASGI_SERVER_HEADER: expected true/false, 1/0 or yes/no, got 'on'" in result.stderr


def test_bad_values_from_python_name_the_option() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(ValueError, match="reload needs the application as an import string"):
        Config(app, reload=True)
    with pytest.raises(TypeError, match="headers must be a list of"):
        Config(app, headers=["x-a: 1"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match='headers: "x-a" has a control character'):
        Config(app, headers=[("x-a", "1\r\nx-b: 2")])
    with pytest.raises(TypeError, match="server_header must be a bool"):
        Config(app, server_header="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="workers must be an int, not str"):
        zcasgi.serve(app, workers="2")  # type: ignore[arg-type]


SNIPPET = """\
import zcasgi

async def app(scope: object, receive: object, send: object) -> None: ...

zcasgi.serve(app, workers=2, ws_ping_interval=None, headers=[("x-a", "1")])
zcasgi.serve(app, wokers=2)
zcasgi.serve(app, workers="2")
zcasgi.Config(app, use_colors="yes")
zcasgi.serve(app, backend="epoll")
"""


def test_a_type_checker_catches_wrong_keywords(tmp_path: Path) -> None:
    """mypy --strict on a caller: a misspelt keyword and a wrong type are errors, a right call
    is not."""
    (tmp_path / "caller.py").write_text(SNIPPET)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "caller.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert [line.split(":")[1] for line in errors] == ["6", "7", "8", "9"], result.stdout
    assert 'Unexpected keyword argument "wokers" for "serve"' in errors[0]
    assert 'Argument "workers" to "serve" has incompatible type "str"; expected "int"' in errors[1]
    assert 'Argument "use_colors" to "Config" has incompatible type "str"' in errors[2]
    assert 'Argument "backend" to "serve" has incompatible type' in errors[3]
