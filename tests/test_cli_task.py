"""`colora task add | show | rm` end to end (conventions: test_cli.py)."""

from __future__ import annotations

import math
import sqlite3

import pytest
from cli_common import (
    fails,
    save_image,
    split_of,
    task_info,
    tasks,
    tree_digest,
)

from helpers import copy_store, err, invoke, make_pairs, ok, out

pytestmark = pytest.mark.usefixtures("one_torch_thread", "wide_console")


# ---------------------------------------------------------------- task add


def test_task_add_reports_counts(store, pairs_dir):
    r = ok(invoke("task", "add", "noise", pairs_dir))
    assert "Added task 'noise': 5 training and 1 validation pairs." in err(r)
    assert "colora train noise" in err(r)
    [row] = tasks()
    assert (row["task"], row["train_pairs"], row["val_pairs"], row["adapter"]) == ("noise", 5, 1, "untrained")
    info = task_info("noise")
    assert info["folder"] == str(pairs_dir.resolve())
    assert info["split"] == "seed 0, val fraction 0.2"
    assert info["files"] == "unchanged since task add"


def test_task_add_split_is_seeded(store, tmp_path):
    pairs = make_pairs(tmp_path / "ten", n=10)
    for name, seed in (("a", "3"), ("b", "3")):
        ok(invoke("task", "add", name, pairs, "--val-fraction", "0.3", "--seed", seed))
    assert task_info("a")["split"] == task_info("b")["split"] == "seed 3, val fraction 0.3"
    a, b = split_of(store, "a"), split_of(store, "b")
    assert a == b
    assert sorted(a.values()).count("val") == 3
    # the seed matters: over a few seeds the held-out stems are not always the same
    splits = set()
    for seed in range(4):
        ok(invoke("task", "add", f"s{seed}", pairs, "--val-fraction", "0.3", "--seed", seed))
        splits.add(frozenset(k for k, v in split_of(store, f"s{seed}").items() if v == "val"))
    assert len(splits) > 1


@pytest.mark.parametrize("name", ["Bad Name", "../x", "UPPER", "_lead", "all"])
def test_task_add_invalid_name_adds_nothing(store, pairs_dir, name):
    r = fails(invoke("task", "add", name, pairs_dir), "name", repr(name))
    assert "invalid task name" in err(r) or "reserved" in err(r)
    assert tasks() == []
    assert list((store / "tasks").iterdir()) == []
    assert not (store.parent / "x").exists()


def test_task_add_missing_folder(store, tmp_path):
    fails(invoke("task", "add", "noise", tmp_path / "nope"), "folder not found", str(tmp_path / "nope"))
    assert tasks() == []


def test_task_add_unpaired_files_are_named_and_counted(store, pairs_dir):
    (pairs_dir / "target" / "002.png").unlink()
    (pairs_dir / "target" / "004.png").unlink()
    fails(invoke("task", "add", "noise", pairs_dir), "2 problems", "unpaired input/002.png", "unpaired input/004.png")
    assert tasks() == []


def test_task_add_corrupt_image(store, pairs_dir):
    (pairs_dir / "input" / "003.png").write_bytes(b"\x89PNG not really a png" + bytes(range(200)))
    fails(invoke("task", "add", "noise", pairs_dir), "1 problem", "unreadable input/003.png")
    assert tasks() == []


def test_task_add_size_mismatch(store, pairs_dir):
    save_image(pairs_dir / "target" / "001.png", 30, 20)
    fails(invoke("task", "add", "noise", pairs_dir), "size mismatch 001", "40x32", "30x20")
    assert tasks() == []


def test_task_add_empty_folder(store, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    fails(invoke("task", "add", "noise", empty), "no input subfolder", "no target subfolder")
    (empty / "input").mkdir()
    (empty / "target").mkdir()
    fails(invoke("task", "add", "noise", empty), "no images in input/", "no images in target/")
    assert tasks() == []


def test_task_add_duplicate_name(store_with_task, tmp_path):
    other = make_pairs(tmp_path / "other", n=4, seed=3)
    fails(invoke("task", "add", "noise", other), "task 'noise' already exists", "colora task rm noise")
    [row] = tasks()
    assert row["train_pairs"] + row["val_pairs"] == 6
    assert task_info("noise")["folder"] != str(other.resolve())


def test_task_add_with_separate_val_folder(store, pairs_dir, tmp_path):
    val = make_pairs(tmp_path / "val", n=3, seed=9)
    r = ok(invoke("task", "add", "noise", pairs_dir, "--val", val))
    assert "6 training and 3 validation pairs" in err(r)
    info = task_info("noise")
    assert (info["train_pairs"], info["val_pairs"]) == (6, 3)
    assert info["val_folder"] == str(val.resolve())
    assert info["split"] == "separate folder"


def test_task_add_val_and_val_fraction_exit_nonzero_and_add_nothing(store, pairs_dir, tmp_path):
    val = make_pairs(tmp_path / "val", n=2, seed=9)
    r = invoke("task", "add", "noise", pairs_dir, "--val", val, "--val-fraction", "0.3")
    assert r.exit_code != 0
    assert "--val" in err(r) and "not both" in err(r)
    assert tasks() == []


def test_task_add_val_and_val_fraction_is_a_usage_error(store, pairs_dir, tmp_path):
    val = make_pairs(tmp_path / "val", n=2, seed=9)
    r = invoke("task", "add", "noise", pairs_dir, "--val", val, "--val-fraction", "0.3")
    assert r.exit_code == 2, f"exit {r.exit_code}: {err(r)}"
    assert "Usage:" in err(r) and "unexpected" not in err(r)


def test_task_add_prefixed_names_in_rain_norain(store, tmp_path):
    folder = make_pairs(tmp_path / "rain100", n=4, input_dir="rain", target_dir="norain")
    for sub in ("rain", "norain"):
        for f in sorted((folder / sub).iterdir()):
            f.rename(f.with_name(f"{sub}-{f.name}"))
    assert (folder / "rain" / "rain-001.png").is_file() and (folder / "norain" / "norain-001.png").is_file()
    r = ok(invoke("task", "add", "rain", folder, "--val-fraction", "0.25"))
    assert "3 training and 1 validation pairs" in err(r)
    assert sorted(split_of(store, "rain")) == ["000", "001", "002", "003"]


# ---------------------------------------------------------------- task show / rm


def test_task_show_text_and_json(trained):
    info = task_info("noise", trained.home)
    assert {
        "task",
        "folder",
        "val_folder",
        "train_pairs",
        "val_pairs",
        "split",
        "files",
        "rank_plan",
        "adapter",
        "last_run",
        "eval",
        "created",
    } <= set(info)
    assert (info["task"], info["train_pairs"], info["val_pairs"]) == ("noise", 5, 1)
    assert info["files"] == "unchanged since task add"
    adapter = info["adapter"]
    assert adapter["file"].startswith("tasks/noise/") and adapter["file"].endswith(".safetensors")
    assert adapter["trainable_params"] > 0 and adapter["backbone"] == "random-tiny"
    assert 0 < adapter["percent_of_backbone"] < 100
    assert info["last_run"]["status"] == "done" and info["last_run"]["steps"] == trained.steps
    assert math.isfinite(info["last_run"]["final_loss"])
    r = ok(invoke("task", "show", "noise", "--home", trained.home))
    for text in ("task noise", "train_pairs", "unchanged since task add", adapter["file"], "status: done"):
        assert text in out(r), text


def test_task_show_reports_changed_and_missing_files(store_with_task, pairs_dir):
    save_image(pairs_dir / "target" / "000.png", 40, 32, seed=42)
    info = task_info("noise")
    assert info["files"] == "1 changed: changed target 000.png"
    (pairs_dir / "input" / "001.png").unlink()
    info = task_info("noise")
    assert info["files"].startswith("2 changed:")
    assert "missing input 001.png" in info["files"] and "changed target 000.png" in info["files"]
    r = ok(invoke("task", "show", "noise"))
    assert "changed target 000.png" in out(r)


def test_task_rm_yes_removes_rows_and_folder(trained, tmp_path):
    home = copy_store(trained.home, tmp_path / "home")
    ok(invoke("eval", "noise", "--home", home))
    assert (home / "tasks" / "noise").is_dir()
    r = ok(invoke("task", "rm", "noise", "--yes", "--home", home))
    assert "Removed task 'noise'" in err(r)
    assert tasks(home) == []
    assert not (home / "tasks" / "noise").exists()
    with sqlite3.connect(home / "colora.db") as db:
        for table in ("tasks", "pairs", "adapters", "train_runs", "eval_results"):
            assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
    assert len(list((trained.pairs / "input").iterdir())) == 6  # the user's images are untouched
    fails(invoke("task", "show", "noise", "--home", home), "no task named 'noise'")


def test_task_rm_answer_no_keeps_the_task(trained, tmp_path):
    home = copy_store(trained.home, tmp_path / "home")
    before = tree_digest(home / "tasks")
    # CliRunner echoes the typed answer to stdout, as a terminal would
    r = fails(invoke("task", "rm", "noise", "--home", home, input="n\n"), "not removed", "--yes", stdout_empty=False)
    assert "Remove task 'noise'" in err(r)
    assert [t["task"] for t in tasks(home)] == ["noise"]
    assert tree_digest(home / "tasks") == before


def test_task_rm_answer_yes_removes(store_with_task):
    ok(invoke("task", "rm", "noise", input="y\n"))
    assert tasks() == []


@pytest.mark.parametrize(
    "args",
    [
        ("task", "show", "ghost"),
        ("task", "rm", "ghost", "--yes"),
        ("ranks", "ghost"),
        ("train", "ghost"),
        ("eval", "ghost"),
        ("restore", "--task", "ghost", "{pairs}/input", "-o", "{tmp}/o"),
    ],
    ids=lambda a: " ".join(a[:2]),
)
def test_unknown_task(store, pairs_dir, tmp_path, args):
    argv = [a.format(pairs=pairs_dir, tmp=tmp_path) for a in args]
    fails(invoke(*argv), "no task named 'ghost'", "colora task add ghost")
    assert not (tmp_path / "o").exists()
