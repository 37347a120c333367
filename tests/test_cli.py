"""The `colora` command end to end: version, help, init, list (the command groups: test_cli_*.py).

Conventions checked everywhere (by `invoke`): no traceback and no unhandled exception, whatever
the exit code. Data (tables, JSON) is read from stdout, notes and errors from stderr.

The session's trained store (`trained`, conftest.py) is shared: tests that only read it use it in
place; tests that change it work on a copy (`copy_store`). Its pairs folder is shared too and is
never modified; tests that change images make their own pairs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cli_common import (
    RANDOM_LABEL,
    all_commands,
    as_json,
    backbones,
    fails,
    sha,
    task_info,
    tasks,
)

from colora.cli.main import __version__
from helpers import TINY_INIT, copy_store, err, invoke, ok, out

pytestmark = pytest.mark.usefixtures("one_torch_thread", "wide_console")


# ---------------------------------------------------------------- version and help


def test_version_prints_the_package_version():
    from importlib.metadata import version

    r = ok(invoke("--version"))
    assert out(r).strip() == f"colora {__version__}"
    assert __version__ == version("colora")


def test_help_lists_every_command():
    r = ok(invoke("--help"))
    for name in ("init", "list", "task", "backbone", "ranks", "train", "eval", "restore"):
        assert re.search(rf"^\s+{name}\b", out(r), re.M), f"{name} missing from --help:\n{out(r)}"
    assert "Example:" in out(r)


def test_command_tree_has_every_documented_command():
    expected = {
        ("init",),
        ("list",),
        ("ranks",),
        ("train",),
        ("eval",),
        ("restore",),
        ("task", "add"),
        ("task", "show"),
        ("task", "rm"),
        ("backbone", "list"),
        ("backbone", "show"),
        ("backbone", "pretrain"),
        ("backbone", "import"),
        ("backbone", "export"),
        ("backbone", "default"),
    }
    assert expected <= set(all_commands())


@pytest.mark.parametrize("command", all_commands(), ids=" ".join)
def test_every_command_help_has_an_example(command):
    r = invoke(*command, "--help")
    assert f"Usage: colora {' '.join(command)}" in out(r)
    assert "Example:" in out(r)
    assert "Example: colora " + command[0] in out(r)


def test_every_subcommand_help_exits_0_without_error():
    for command in all_commands():
        r = invoke(*command, "--help")
        assert r.exit_code == 0, f"{command}: exit {r.exit_code}, stderr {err(r)}"
        assert "Error" not in err(r), f"{command}: {err(r)}"


@pytest.mark.parametrize(
    "args",
    [("train",), ("train", "noise", "--steps", "0"), ("list", "--bogus"), ("task",)],
    ids=["missing-arg", "bad-value", "unknown-option", "group-no-args"],
)
def test_usage_errors_exit_2(store, args):
    r = invoke(*args)
    assert r.exit_code == 2, f"exit {r.exit_code}: {err(r)}"
    assert "unexpected" not in err(r)


# ---------------------------------------------------------------- init


def test_init_creates_the_store_with_a_labelled_random_backbone(isolated_home):
    assert not isolated_home.exists()
    r = ok(invoke(*TINY_INIT))
    assert (isolated_home / "colora.db").is_file()
    assert (isolated_home / "backbones" / "random-tiny.safetensors").is_file()
    assert f"Created the store at {isolated_home}" in err(r)
    assert RANDOM_LABEL in err(r)
    assert "colora task add" in err(r)
    assert out(r) == ""  # notes go to stderr


def test_init_twice_is_idempotent_and_says_so(store):
    file = store / "backbones" / "random-tiny.safetensors"
    before, rows_before = sha(file), backbones()
    r = ok(invoke(*TINY_INIT, "--seed", "5"))
    assert "already set up" in err(r)
    assert "random-tiny" in err(r)
    assert backbones() == rows_before
    assert sha(file) == before


def test_init_with_home_option_uses_that_folder(isolated_home, tmp_path):
    other = tmp_path / "elsewhere"
    r = ok(invoke(*TINY_INIT, "--home", other))
    assert (other / "colora.db").is_file()
    assert str(other) in err(r)
    assert not isolated_home.exists()
    assert backbones(other)[0]["name"] == "random-tiny"


def test_init_unknown_config_fails(isolated_home):
    fails(invoke("init", "--random-init", "--config", "huge"), "'huge' is not one of 'tiny'", code=2)
    assert not (isolated_home / "backbones" / "random-huge.safetensors").exists()
    ok(invoke(*TINY_INIT))  # the half-made store can still be initialised
    assert [b["name"] for b in backbones()] == ["random-tiny"]


def test_backbone_list_labels_the_random_backbone(store):
    r = ok(invoke("backbone", "list"))
    assert "random-tiny" in out(r)
    assert RANDOM_LABEL in out(r)
    [row] = backbones()
    assert row["name"] == "random-tiny" and row["default"] is True
    assert row["pretrained"] is False and row["label"] == RANDOM_LABEL
    assert row["params"] > 0 and re.fullmatch(r"[0-9a-f]{64}", row["sha256"])


# ---------------------------------------------------------------- before init


@pytest.mark.parametrize(
    "args",
    [
        ("list",),
        ("task", "add", "noise", "{pairs}"),
        ("task", "show", "noise"),
        ("task", "rm", "noise", "--yes"),
        ("ranks", "noise"),
        ("train", "noise"),
        ("eval", "noise"),
        ("restore", "--task", "noise", "{pairs}/input", "-o", "{tmp}/out"),
        ("backbone", "list"),
        ("backbone", "show"),
        ("backbone", "export", "random-tiny", "{tmp}/b.safetensors"),
        ("backbone", "import", "{tmp}/b.safetensors", "--name", "other"),
        ("backbone", "default", "random-tiny"),
        ("backbone", "pretrain", "{pairs}/target", "--config", "tiny", "--steps", "1"),
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_every_command_before_init_says_no_store(isolated_home, pairs_dir, tmp_path, args):
    argv = [a.format(pairs=pairs_dir, tmp=tmp_path) for a in args]
    r = fails(invoke(*argv), "no colora store", "colora init")
    assert str(isolated_home) in err(r)
    assert not isolated_home.exists()
    assert not (tmp_path / "out").exists() and not (tmp_path / "b.safetensors").exists()


# ---------------------------------------------------------------- list


def test_list_empty_store(store):
    r = ok(invoke("list"))
    assert "No tasks yet" in err(r) and "colora task add" in err(r)
    assert out(r) == ""
    assert tasks() == []


def test_list_after_train_and_eval(trained, tmp_path):
    from colora.core.text import human_bytes, human_count

    home = copy_store(trained.home, tmp_path / "home")
    [row] = tasks(home)
    assert row["adapter"] == "trained" and row["backbone"] == "random-tiny"
    assert row["trainable_params"] > 0 and row["size_bytes"] > 0
    assert row["psnr"] is None and row["ssim"] is None  # not evaluated yet
    adapter_file = home / task_info("noise", home)["adapter"]["file"]
    assert row["size_bytes"] == adapter_file.stat().st_size
    scores = {s["subject"]: s for s in as_json(invoke("eval", "noise", "--json", "--home", home))["results"]}
    [row] = tasks(home)
    assert row["psnr"] == scores["adapter"]["psnr"] and row["ssim"] == scores["adapter"]["ssim"]
    r = ok(invoke("list", "--home", home))
    line = next(ln for ln in out(r).splitlines() if "noise" in ln)
    for text in (
        "5/1",
        "trained",
        human_count(row["trainable_params"]),
        human_bytes(row["size_bytes"]),
        f"{row['psnr']}",
    ):
        assert text in line, f"{text!r} not in {line!r}"


# ---------------------------------------------------------------- process-level checks


def _run_python(code: str, home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLORA_HOME": str(home)}
    env.pop("COLORA_DEBUG", None)
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("args", [["list"], ["--help"], ["list", "--json"]], ids=" ".join)
def test_fast_commands_import_neither_torch_nor_sqlalchemy(trained, args):
    code = (
        "import sys; from typer.testing import CliRunner; from colora.cli.main import app; "
        f"r = CliRunner().invoke(app, {args!r}); print(r.exit_code, 'torch' in sys.modules, "
        "'sqlalchemy' in sys.modules)"
    )
    p = _run_python(code, trained.home)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["0", "False", "False"], p.stdout + p.stderr


def test_real_process_error_has_no_traceback(trained):
    p = _run_python("from colora.cli.main import run; run()", trained.home, "task", "show", "ghost")
    assert p.returncode == 1
    assert p.stderr.startswith("Error: no task named 'ghost'")
    assert "Hint:" in p.stderr and "Traceback" not in p.stderr + p.stdout
    assert p.stdout == ""
