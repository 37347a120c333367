"""The `colora` command end to end, through Typer's CliRunner, on tiny models and tiny images.

Conventions checked everywhere (by `invoke`): no traceback and no unhandled exception, whatever
the exit code. Data (tables, JSON) is read from stdout, notes and errors from stderr.

The session's trained store (`trained`, conftest.py) is shared: tests that only read it use it in
place; tests that change it work on a copy (`copy_store`). Its pairs folder is shared too and is
never modified; tests that change images make their own pairs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colora.cli.main import __version__
from helpers import FAST_TRAIN, TINY_INIT, command_paths, copy_store, err, invoke, make_pairs, ok, out, textured

pytestmark = pytest.mark.usefixtures("one_torch_thread", "wide_console")


RANDOM_LABEL = "random init, not pre-trained"


# ---------------------------------------------------------------- helpers


def fails(result, *fragments: str, code: int = 1, stdout_empty: bool = True):
    """Exit code `code`, every fragment in stderr, and no data on stdout."""
    assert result.exit_code == code, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    message = err(result)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in stderr: {message}"
    if code == 1:
        assert "Error: " in message, message
    if stdout_empty:
        assert out(result) == "", f"data on stdout in an error case: {result.stdout}"
    return result


def as_json(result):
    ok(result)
    return json.loads(out(result))


def tasks(home: Path | None = None) -> list[dict]:
    return as_json(invoke("list", "--json", *(("--home", home) if home else ())))


def task_info(name: str, home: Path | None = None) -> dict:
    return as_json(invoke("task", "show", name, "--json", *(("--home", home) if home else ())))


def backbones(home: Path | None = None) -> list[dict]:
    return as_json(invoke("backbone", "list", "--json", *(("--home", home) if home else ())))


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under folder."""
    return {p.relative_to(folder).as_posix(): sha(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def save_image(path: Path, w: int, h: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(textured(np.random.default_rng(seed), h, w)).save(path)
    return path


def split_of(home: Path, task: str) -> dict[str, str]:
    """stem -> "train"/"val", read from the store's index."""
    from colora.store.store import Store

    store = Store.open(home)
    try:
        return {p.stem: p.split for p in store.pairs(store.task(task))}
    finally:
        store.engine.dispose()


@pytest.fixture
def store(isolated_home) -> Path:
    """An initialised store at $COLORA_HOME (tiny random backbone)."""
    ok(invoke(*TINY_INIT))
    return isolated_home


@pytest.fixture
def store_with_task(store, pairs_dir) -> Path:
    """`store` with task 'noise' (6 pairs: 5 train, 1 val) from this test's own pairs."""
    ok(invoke("task", "add", "noise", pairs_dir))
    return store


@pytest.fixture
def trained(trained_store):
    """The session's store with task 'noise' (5 train / 1 val pairs), its adapter trained (FAST_TRAIN)."""
    return trained_store


def all_commands() -> list[tuple[str, ...]]:
    return command_paths()


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


# ---------------------------------------------------------------- train


def test_train_success(trained):
    r = trained.train
    ok(r)
    assert f"Trained 'noise': {trained.steps} steps" in err(r)
    assert f"train noise: {trained.steps}/{trained.steps}" in err(r)  # progress goes to stderr
    assert out(r) == ""
    info = task_info("noise", trained.home)
    adapter = trained.home / info["adapter"]["file"]
    assert adapter.is_file() and adapter.parent == trained.home / "tasks" / "noise"
    assert adapter.read_bytes()[:8] != b"\x80\x02"  # not a pickle
    assert not list((trained.home / "tasks" / "noise").glob("checkpoint*"))
    # the backbone stays frozen
    assert sha(trained.home / "backbones" / "random-tiny.safetensors") == trained.backbone_sha_before


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_train_device_cuda_without_gpu(store_with_task):
    fails(invoke("train", "noise", "--device", "cuda", *FAST_TRAIN), "--device cuda", "no CUDA GPU", "--device cpu")
    assert task_info("noise")["last_run"] is None
    assert tasks()[0]["adapter"] == "untrained"


@pytest.mark.parametrize(
    "option, message",
    [
        (("--loss", "l3"), "'l3' is not one of 'l1', 'psnr'"),
        (("--device", "tpu"), "'tpu' is not one of 'auto', 'cpu', 'cuda'"),
    ],
)
def test_train_bad_option_value(store_with_task, option, message):
    fails(invoke("train", "noise", *option, *FAST_TRAIN), "Invalid value for", message, code=2)
    assert task_info("noise")["last_run"] is None
    assert not (store_with_task / "tasks" / "noise").exists() or not any(
        (store_with_task / "tasks" / "noise").iterdir()
    )


def test_train_refuses_changed_training_images(store, pairs_dir):
    ok(invoke("task", "add", "noise", pairs_dir, "--val-fraction", "0"))
    save_image(pairs_dir / "input" / "000.png", 40, 32, seed=77)
    fails(
        invoke("train", "noise", *FAST_TRAIN),
        "changed since it was added",
        "changed input 000.png",
        "colora task rm noise",
    )
    assert task_info("noise")["last_run"] is None
    assert tasks()[0]["adapter"] == "untrained"


def test_ranks_stores_a_plan_that_train_uses(store_with_task):
    data = as_json(invoke("ranks", "noise", "--probe-steps", "2", "--path-steps", "2", "--json"))
    assert data["task"] == "noise"
    assert data["ranks"] and all(isinstance(r, int) and r >= 0 for r in data["ranks"].values())
    plan = task_info("noise")["rank_plan"]
    assert plan is not None and plan.startswith("faig")
    r = ok(invoke("train", "noise", "--steps", "2", "--patch-size", "32", "--batch-size", "2"))
    assert "computing it" not in err(r)  # the stored plan is used, not recomputed
    assert "faig LoRA" in err(r)
    [row] = tasks()
    assert row["adapter"] == "trained" and row["plan_method"] == "faig"


def test_ranks_unknown_method_stores_nothing(store_with_task):
    fails(invoke("ranks", "noise", "--method", "magic"), "'magic' is not one of 'faig', 'uniform'", code=2)
    assert task_info("noise")["rank_plan"] is None


# ---------------------------------------------------------------- eval


def test_eval_table(trained, tmp_path):
    home = copy_store(trained.home, tmp_path / "home")
    r = ok(invoke("eval", "noise", "--home", home))
    text = out(r)
    assert "noise: 1 validation pairs" in text and RANDOM_LABEL in text
    for subject in ("input", "backbone", "adapter"):
        assert re.search(rf"^\W*{subject}\s+\W\s*\d+\.\d\d\b", text, re.M), f"no {subject} row:\n{text}"
    assert "eval noise: 1/1" in err(r)


def test_eval_json(trained, tmp_path):
    home = copy_store(trained.home, tmp_path / "home")
    data = as_json(invoke("eval", "noise", "--json", "--home", home))
    assert data["task"] == "noise" and data["backbone"] == "random-tiny"
    rows = {r["subject"]: r for r in data["results"]}
    assert list(rows) == ["input", "backbone", "adapter"]
    for r in rows.values():
        assert isinstance(r["psnr"], float) and 0 < r["psnr"] < 100
        assert -1 <= r["ssim"] <= 1 and r["pairs"] == 1
        assert r["delta_psnr_vs_input"] == pytest.approx(r["psnr"] - rows["input"]["psnr"], abs=2e-3)
    # "input" is the PSNR of the held-out pair itself, computed here independently
    [stem] = [s for s, split in split_of(home, "noise").items() if split == "val"]
    x, y = (
        np.asarray(Image.open(trained.pairs / d / f"{stem}.png"), dtype=np.float64) / 255 for d in ("input", "target")
    )
    assert rows["input"]["psnr"] == pytest.approx(10 * math.log10(1 / np.mean((x - y) ** 2)), abs=0.01)
    info = task_info("noise", home)
    assert info["eval"]["adapter"]["psnr"] == rows["adapter"]["psnr"]


def test_eval_before_train_scores_input_and_backbone(store_with_task):
    r = ok(invoke("eval", "noise", "--json"))
    assert [s["subject"] for s in json.loads(out(r))["results"]] == ["input", "backbone"]
    assert "has no adapter yet" in err(r) and "colora train noise" in err(r)
    r = ok(invoke("eval", "noise"))
    assert "input" in out(r) and "backbone" in out(r) and "adapter" not in out(r)


def test_eval_without_validation_pairs(store, pairs_dir):
    ok(invoke("task", "add", "noise", pairs_dir, "--val-fraction", "0"))
    fails(invoke("eval", "noise"), "task 'noise' has no validation pairs", "--val-fraction")
    assert task_info("noise")["eval"] == {}


# ---------------------------------------------------------------- restore


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    save_image(folder / "a.png", 40, 32, seed=1)
    save_image(folder / "b.png", 24, 36, seed=2)
    Image.fromarray(textured(np.random.default_rng(3), 30, 44)).save(folder / "c.jpg", quality=90)
    return folder


def test_restore_folder_keeps_names_formats_and_sizes(trained, photos, tmp_path):
    before = tree_digest(photos)
    dest = tmp_path / "restored"
    r = ok(invoke("restore", "--task", "noise", photos, "-o", dest, "--home", trained.home))
    assert "Restored 3 image(s)" in err(r)
    assert sorted(p.name for p in dest.iterdir()) == ["a.png", "b.png", "c.jpg"]
    for name in ("a.png", "b.png", "c.jpg"):
        with Image.open(photos / name) as src, Image.open(dest / name) as res:
            assert res.format == src.format and res.size == src.size, name
    assert tree_digest(photos) == before


def test_restore_single_file(trained, photos, tmp_path):
    dest = tmp_path / "one"
    ok(invoke("restore", "--task", "noise", photos / "c.jpg", "-o", dest, "--home", trained.home))
    assert [p.name for p in dest.iterdir()] == ["c.jpg"]
    with Image.open(dest / "c.jpg") as res:
        assert res.format == "JPEG" and res.size == (44, 30)


def test_restore_existing_output_needs_overwrite(trained, photos, tmp_path):
    dest = tmp_path / "restored"
    dest.mkdir()
    (dest / "a.png").write_bytes(b"precious")
    fails(
        invoke("restore", "--task", "noise", photos, "-o", dest, "--home", trained.home),
        "already exist",
        "a.png",
        "--overwrite",
    )
    assert (dest / "a.png").read_bytes() == b"precious"
    assert sorted(p.name for p in dest.iterdir()) == ["a.png"]  # nothing else written either
    ok(invoke("restore", "--task", "noise", photos, "-o", dest, "--overwrite", "--home", trained.home))
    with Image.open(dest / "a.png") as res:
        assert res.format == "PNG" and res.size == (40, 32)


def test_restore_into_an_input_folder_is_refused(trained, photos):
    before = tree_digest(photos)
    fails(
        invoke("restore", "--task", "noise", photos, "-o", photos, "--home", trained.home), "is one of the inputs", "-o"
    )
    fails(
        invoke("restore", "--task", "noise", photos / "a.png", "-o", photos, "--overwrite", "--home", trained.home),
        "refusing to overwrite the input",
    )
    assert tree_digest(photos) == before


def test_restore_missing_input(trained, tmp_path):
    fails(
        invoke("restore", "--task", "noise", tmp_path / "nope.png", "-o", tmp_path / "o", "--home", trained.home),
        "input not found",
        "nope.png",
    )
    assert not (tmp_path / "o").exists()


def test_restore_without_adapter(store_with_task, pairs_dir, tmp_path):
    fails(
        invoke("restore", "--task", "noise", pairs_dir / "input", "-o", tmp_path / "o"),
        "task 'noise' has no adapter yet",
        "colora train noise",
    )
    assert not (tmp_path / "o").exists()


def test_restore_non_image_inputs(trained, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    fails(
        invoke("restore", "--task", "noise", notes, "-o", tmp_path / "o", "--home", trained.home),
        "not an image file",
        "notes.txt",
    )
    assert not (tmp_path / "o").exists()
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"garbage" * 20)
    fails(
        invoke("restore", "--task", "noise", fake, "-o", tmp_path / "o", "--home", trained.home),
        "cannot read image",
        "fake.png",
    )
    assert not (tmp_path / "o" / "fake.png").exists()


def test_restore_checks_every_input_before_writing_anything(trained, tmp_path):
    folder = tmp_path / "mixed"
    save_image(folder / "a.png", 40, 32, seed=1)
    (folder / "b.png").write_bytes(b"")  # empty file with an image name
    save_image(folder / "c.png", 40, 32, seed=2)
    fails(
        invoke("restore", "--task", "noise", folder, "-o", tmp_path / "o", "--home", trained.home),
        "not readable images",
        "b.png",
    )
    assert not (tmp_path / "o").exists()


def test_restore_tiled_keeps_the_size(trained, tmp_path):
    src = save_image(tmp_path / "big" / "big.png", 80, 72, seed=5)
    dest = tmp_path / "tiled"
    ok(invoke("restore", "--task", "noise", src, "-o", dest, "--tile", "32", "--home", trained.home))
    with Image.open(dest / "big.png") as res:
        assert res.size == (80, 72) and res.format == "PNG"
        assert np.asarray(res).std() > 0


# ---------------------------------------------------------------- backbone


def test_backbone_show(store):
    [row] = backbones()
    info = as_json(invoke("backbone", "show", "--json"))
    assert info["name"] == "random-tiny" and info["pretrained"] is False and info["label"] == RANDOM_LABEL
    assert info["sha256"] == row["sha256"] and info["params"] == row["params"]
    assert info["config"]["width"] == 8
    assert info["file"] == "backbones/random-tiny.safetensors"
    r = ok(invoke("backbone", "show", "random-tiny"))
    assert "random-tiny" in out(r) and RANDOM_LABEL in out(r)
    fails(invoke("backbone", "show", "ghost"), "no backbone named 'ghost'", "colora backbone list")


def test_backbone_export(store, tmp_path):
    dest = tmp_path / "exported.safetensors"
    r = ok(invoke("backbone", "export", "random-tiny", dest))
    assert "Exported 'random-tiny'" in err(r)
    assert sha(dest) == sha(store / "backbones" / "random-tiny.safetensors")
    dest.write_bytes(b"mine")
    fails(invoke("backbone", "export", "random-tiny", dest), "already exists", "--overwrite")
    assert dest.read_bytes() == b"mine"
    ok(invoke("backbone", "export", "random-tiny", dest, "--overwrite"))
    assert sha(dest) == sha(store / "backbones" / "random-tiny.safetensors")
    fails(invoke("backbone", "export", "ghost", tmp_path / "g.safetensors"), "no backbone named 'ghost'")
    assert not (tmp_path / "g.safetensors").exists()


def test_backbone_import_from_another_store_and_default(store, tmp_path):
    other = tmp_path / "other-store"
    ok(invoke(*TINY_INIT, "--seed", "1", "--home", other))
    file = tmp_path / "from-other.safetensors"
    ok(invoke("backbone", "export", "random-tiny", file, "--home", other))
    r = ok(invoke("backbone", "import", file, "--name", "imported"))
    assert "Imported backbone 'imported'" in err(r)
    rows = {b["name"]: b for b in backbones()}
    assert set(rows) == {"random-tiny", "imported"}
    assert rows["imported"]["sha256"] == backbones(other)[0]["sha256"] != rows["random-tiny"]["sha256"]
    assert rows["imported"]["default"] is False and rows["random-tiny"]["default"] is True
    assert rows["imported"]["label"] == RANDOM_LABEL
    fails(invoke("backbone", "import", file, "--name", "imported"), "backbone 'imported' already exists")
    assert len(backbones()) == 2
    r = ok(invoke("backbone", "default", "imported"))
    assert "'imported' is now the default backbone" in err(r)
    assert {b["name"]: b["default"] for b in backbones()} == {"random-tiny": False, "imported": True}
    fails(invoke("backbone", "default", "ghost"), "no backbone named 'ghost'")
    assert {b["name"]: b["default"] for b in backbones()} == {"random-tiny": False, "imported": True}


def test_backbone_import_rejects_what_is_not_a_backbone(store, tmp_path):
    before = tree_digest(store / "backbones")
    pt = tmp_path / "weights.pt"
    pt.write_bytes(b"\x80\x02}q\x00.")  # a raw pickle, not a torch.save file
    fails(invoke("backbone", "import", pt, "--name", "pickled"), "weights.pt cannot be read as plain weights")
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\x80\x02}q\x00.")
    fails(invoke("backbone", "import", other, "--name", "other"), "weights.bin is not a .safetensors or .pth file")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(300))
    fails(invoke("backbone", "import", junk, "--name", "junk"), "junk.safetensors")
    fails(invoke("backbone", "import", tmp_path / "absent.safetensors", "--name", "absent"), "absent.safetensors")
    assert [b["name"] for b in backbones()] == ["random-tiny"]
    assert tree_digest(store / "backbones") == before


def test_backbone_pretrain_registers_a_pretrained_backbone(store, tmp_path):
    clean = tmp_path / "clean"
    for i in range(3):
        save_image(clean / f"{i}.png", 40, 32, seed=i)
    r = ok(
        invoke(
            "backbone",
            "pretrain",
            clean,
            "--name",
            "prod-test",
            "--config",
            "tiny",
            "--steps",
            "4",
            "--batch-size",
            "2",
            "--patch-size",
            "16",
            "--checkpoint-every",
            "2",
        )
    )
    assert "Pre-trained 'prod-test'" in err(r)
    rows = {b["name"]: b for b in backbones()}
    assert rows["prod-test"]["pretrained"] is True
    assert "random init" not in rows["prod-test"]["label"] and "PROD" in rows["prod-test"]["label"]
    assert rows["random-tiny"]["default"] is True  # not made the default without --default
    assert not (store / "pretrain" / "prod-test" / "checkpoint.safetensors").exists()
    info = as_json(invoke("backbone", "show", "prod-test", "--json"))
    assert info["recipe"]["data"]["images"] == 3 and math.isfinite(info["final_loss"])
    r = ok(invoke("backbone", "list"))
    assert re.search(r"prod-test.*PROD pre-trained", out(r))


def test_backbone_pretrain_with_images_smaller_than_the_patch(store, tmp_path):
    clean = tmp_path / "clean"
    save_image(clean / "0.png", 40, 32)
    fails(
        invoke("backbone", "pretrain", clean, "--name", "p", "--config", "tiny", "--steps", "2", "--patch-size", "64"),
        "no clean images of at least 64x64",
    )
    assert [b["name"] for b in backbones()] == ["random-tiny"]


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
