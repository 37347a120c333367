"""Every top-level command, where it lives and its one-line help, without importing any of them.

The root group builds only the command that is invoked (colora/cli/main.py), and `colora
--help` is drawn from this table (colora/cli/fastpath.py), so neither pays for Typer building
the parameters of all commands. tests/test_startup.py checks that each `summary` is the
first paragraph of the command's own help, and that both renderings match Typer's.
"""

from __future__ import annotations

from typing import NamedTuple


class Entry(NamedTuple):
    module: str
    attribute: str  # a command function, or a typer.Typer group
    summary: str  # the first paragraph of its help


COMMANDS: dict[str, Entry] = {  # in the order `colora --help` lists them
    "init": Entry(
        "colora.cli.cmd_store",
        "init",
        "Create the store (database and folders) with the default backbone and its starter adapters.",
    ),
    "list": Entry("colora.cli.cmd_store", "list_tasks", "Every task with its pairs, adapter, size and last quality."),
    "ranks": Entry(
        "colora.cli.cmd_ranks",
        "ranks",
        "Measure each layer's contribution to the task (FAIG) and store a rank plan for `colora train`.",
    ),
    "train": Entry("colora.cli.cmd_train", "train", "Train the task's LoRA adapter on the frozen backbone."),
    "eval": Entry(
        "colora.cli.cmd_eval",
        "eval_task",
        "PSNR and SSIM on the task's validation pairs: input, backbone alone, backbone + adapter.",
    ),
    "adapt": Entry(
        "colora.cli.cmd_recycle",
        "adapt",
        "Build a task's adapter from the other tasks' adapters, fitted on its few pairs; no training.",
    ),
    "restore": Entry(
        "colora.cli.cmd_restore",
        "restore",
        "Restore images with a task's adapter; results keep their names and formats.",
    ),
    "compare": Entry(
        "colora.cli.cmd_compare",
        "compare",
        "Restore one image with several tasks' adapters: the input and one labelled tile per task in one grid PNG.",
    ),
    "export-onnx": Entry(
        "colora.cli.cmd_export",
        "export_onnx",
        "Write a task's model (backbone + adapter, merged) as one ONNX file, checked in onnxruntime.",
    ),
    "export-model": Entry(
        "colora.cli.cmd_export",
        "export_model",
        "Write a task's model as a NAFNet checkpoint that spandrel, chaiNNer and BasicSR load, with a card.",
    ),
    "doctor": Entry(
        "colora.cli.cmd_doctor", "doctor", "Check the store's index against its files; exit code 1 if errors remain."
    ),
    "task": Entry(
        "colora.cli.cmd_task", "app", "Register, inspect and remove tasks (folders of degraded/clean pairs)."
    ),
    "backbone": Entry(
        "colora.cli.cmd_backbone", "app", "The store's backbones: list, show, pre-train, import and export."
    ),
    "adapter": Entry(
        "colora.cli.cmd_adapter",
        "app",
        "Share adapters: export and import them (colora or PEFT format); add the bundled starters.",
    ),
    "recycle": Entry("colora.cli.cmd_recycle", "app", "LoRA Recycle: reuse the zoo of stored adapters for new tasks."),
    "store": Entry("colora.cli.cmd_index", "app", "The store's index: copy it between SQLite and PostgreSQL."),
}

ROOT_HELP = (
    "One frozen image-restoration backbone, many small LoRA adapters (one per task).\n\n"
    "Example: colora init && colora task add rain ./pairs && colora train rain && colora eval rain"
)


DB_HELP = (
    "The index's database: a PostgreSQL URL shared by a team (postgresql+psycopg://user@host/db); "
    "weights stay in the --home folder. Default: $COLORA_DB_URL, else the store's own SQLite file."
)


def short_help(text: str, limit: int) -> str:
    """The first paragraph of `text`, shortened to `limit` characters the way click does it
    (at a sentence end when one fits, else with "...")."""
    end = text.find("\n\n")
    words = (text if end == -1 else text[:end]).split()
    if not words:
        return ""
    total, last = 0, len(words) - 1
    for i, word in enumerate(words):
        total += len(word) + (i > 0)
        if total > limit:
            break
        if word[-1] == ".":
            return " ".join(words[: i + 1])
        if total == limit and i != last:
            break
    else:
        return " ".join(words)
    total += len("...")
    while i > 0:
        total -= len(words[i]) + (i > 0)
        if total <= limit:
            break
        i -= 1
    return " ".join(words[:i]) + "..."
