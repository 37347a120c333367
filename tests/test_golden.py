"""Golden output: `--help` of every command and the main error messages, byte for byte.

Written before the architecture change (issue 12) so that moving code around cannot change
what a user sees. Regenerate deliberately, after a user-visible change, with

    COLORA_REGEN_GOLDEN=1 python -m pytest tests/test_golden.py

and review the diff of tests/golden/ like any other change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import ANSI, make_pairs, runner

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("COLORA_REGEN_GOLDEN") == "1"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _app():
    from colora.cli.main import app

    return app


def _command_paths() -> list[tuple[str, ...]]:
    with open(GOLDEN / "commands.json", encoding="utf-8") as f:
        return [tuple(c) for c in json.load(f)]


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if REGEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.is_file(), f"no golden file {path}; generate it with COLORA_REGEN_GOLDEN=1"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"output of {name} changed:\n--- expected\n{expected}\n--- got\n{text}"


@pytest.fixture
def narrow(monkeypatch):
    """Help is wrapped at the terminal width: pin it."""
    monkeypatch.setenv("COLUMNS", "100")


@pytest.mark.parametrize(
    "command",
    [()] + _command_paths() if (GOLDEN / "commands.json").is_file() else [()],
    ids=lambda c: " ".join(c) or "colora",
)
def test_help_is_unchanged(command, narrow):
    result = runner.invoke(_app(), [*command, "--help"])
    assert result.exit_code == 0, result.output
    _check(f"help/{'_'.join(command) or 'colora'}.txt", ANSI.sub("", result.stdout))


def test_the_command_tree_is_unchanged():
    """Every leaf command (the list the help goldens are made from)."""
    from helpers import command_paths

    groups = [["task"], ["backbone"], ["adapter"], ["recycle"]]
    tree = [list(p) for p in command_paths()] + groups
    _check("commands.json", json.dumps(sorted(tree), indent=1) + "\n")


# Each case: a name, the arguments (HOME, PAIRS and TMP are replaced by this test's folders),
# and whether it runs on an initialised store with task 'noise' or on no store at all.
ERROR_CASES = [
    ("no_store_list", ["list"], False),
    ("no_store_train", ["train", "noise"], False),
    ("init_bad_config", ["init", "--random-init", "--config", "huge"], False),
    ("bad_task_name", ["task", "add", "Bad Name", "PAIRS"], True),
    ("task_exists", ["task", "add", "noise", "PAIRS"], True),
    ("task_folder_missing", ["task", "add", "other", "TMP/nowhere"], True),
    ("task_val_and_fraction", ["task", "add", "other", "PAIRS", "--val", "PAIRS", "--val-fraction", "0.5"], True),
    ("unknown_task", ["train", "rain"], True),
    ("unknown_backbone", ["backbone", "show", "nope"], True),
    ("ranks_bad_method", ["ranks", "noise", "--method", "magic"], True),
    ("train_bad_loss", ["train", "noise", "--loss", "l7"], True),
    ("train_cuda", ["train", "noise", "--device", "cuda"], True),
    ("train_zero_steps", ["train", "noise", "--steps", "0"], True),
    ("restore_no_adapter", ["restore", "--task", "noise", "PAIRS/input", "-o", "TMP/out"], True),
    ("adapt_empty_zoo", ["adapt", "noise"], True),
    ("eval_overwrite_without_report", ["eval", "noise", "--overwrite"], True),
    ("adapter_import_not_safetensors", ["adapter", "import", "PAIRS/input/000.png", "--task", "x"], True),
    ("adapter_export_untrained", ["adapter", "export", "noise", "TMP/a.safetensors"], True),
    ("compare_not_png", ["compare", "PAIRS/input/000.png", "--tasks", "noise", "-o", "TMP/grid.jpg"], True),
    ("recycle_show_none", ["recycle", "show"], True),
    ("backbone_import_not_safetensors", ["backbone", "import", "PAIRS/input/000.png", "--name", "b"], True),
    ("unknown_option", ["list", "--colour"], True),
    ("missing_argument", ["task", "add"], True),
]


@pytest.mark.parametrize("name,args,with_store", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_error_message_is_unchanged(name, args, with_store, isolated_home, tmp_path, narrow):
    pairs = make_pairs(tmp_path / "pairs")
    if with_store:
        assert runner.invoke(_app(), ["init", "--random-init", "--config", "tiny"]).exit_code == 0
        assert runner.invoke(_app(), ["task", "add", "noise", str(pairs)]).exit_code == 0
    subs = {"HOME": str(isolated_home), "PAIRS": str(pairs), "TMP": str(tmp_path)}

    def fill(a: str) -> str:
        for key, value in subs.items():
            a = a.replace(key, value) if a.startswith(key) else a
        return a

    result = runner.invoke(_app(), [fill(a) for a in args])
    text = ANSI.sub("", result.stderr)
    for key, value in sorted(subs.items(), key=lambda kv: -len(kv[1])):
        text = text.replace(value, f"<{key}>")
    assert "Traceback" not in text
    _check(f"errors/{name}.txt", f"exit {result.exit_code}\nstdout: {ANSI.sub('', result.stdout)!r}\n{text}")
