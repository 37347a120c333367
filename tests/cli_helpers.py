"""Running `colora` in-process for tests: every call fails on a traceback or an escaped exception."""
from __future__ import annotations

import re

from typer.testing import CliRunner

from colora_cli.main import app

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
runner = CliRunner()


def invoke(*args, input: str | None = None):
    """Run `colora ARGS`; fail on any traceback or exception that escaped the CLI's handler."""
    result = runner.invoke(app, [str(a) for a in args], input=input)
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), f"unhandled {result.exception!r}\n{text}"
    return result


def out(result) -> str:
    return ANSI.sub("", result.stdout)


def err(result) -> str:
    return ANSI.sub("", result.stderr)


def ok(result):
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result
