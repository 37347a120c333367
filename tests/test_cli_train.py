"""`colora ranks`, `train` and `eval` end to end (conventions: test_cli.py)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from cli_common import (
    RANDOM_LABEL,
    as_json,
    fails,
    save_image,
    sha,
    split_of,
    task_info,
    tasks,
)
from PIL import Image

from helpers import FAST_TRAIN, copy_store, err, invoke, ok, out

pytestmark = pytest.mark.usefixtures("one_torch_thread", "wide_console")


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
        assert (round(r["psnr"], 3), round(r["ssim"], 4)) == (r["psnr"], r["ssim"])  # JSON shows 3 and 4 places
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
