"""Adapters travel as safetensors files; imports are checked before anything is stored."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import helpers
from helpers import copy_store


@pytest.fixture(scope="module")
def exported(trained_store, tmp_path_factory):
    """A copy of the session's trained store (home/), its pairs (p/), and its backbone and adapter exported as files."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("exp")
    home = copy_store(trained_store.home, tmp / "home")
    (tmp / "p").symlink_to(trained_store.pairs, target_is_directory=True)
    assert invoke(home, "adapter", "export", "noise", tmp / "noise.safetensors").exit_code == 0
    assert invoke(home, "backbone", "export", "random-tiny", tmp / "bb.safetensors").exit_code == 0
    return tmp


def invoke(home, *args):
    return helpers.invoke(*args, "--home", home)


def test_export_import_round_trip_restores_identically(exported, tmp_path):
    home = tmp_path / "other"
    assert invoke(home, "init", "--random-init", "--config", "tiny", "--seed", 7).exit_code == 0
    r = invoke(home, "adapter", "import", exported / "noise.safetensors", "--task", "shared")
    assert r.exit_code == 1 and "does not have" in r.stderr and "colora backbone import" in r.stderr
    assert invoke(home, "backbone", "import", exported / "bb.safetensors", "--name", "bb").exit_code == 0
    r = invoke(home, "adapter", "import", exported / "noise.safetensors", "--task", "shared")
    assert r.exit_code == 0, r.output
    rows = json.loads(invoke(home, "list", "--json").stdout)
    assert rows[0]["task"] == "shared" and rows[0]["adapter"] == "trained"
    src = exported / "p" / "input" / "000.png"
    assert invoke(exported / "home", "restore", "--task", "noise", src, "-o", tmp_path / "a").exit_code == 0
    assert invoke(home, "restore", "--task", "shared", src, "-o", tmp_path / "b").exit_code == 0
    assert (tmp_path / "a" / "000.png").read_bytes() == (tmp_path / "b" / "000.png").read_bytes()


def tampered(exported, tmp_path, change) -> str:
    tensors = load_file(str(exported / "noise.safetensors"))
    with safe_open(str(exported / "noise.safetensors"), "pt") as f:
        meta = dict(f.metadata())
    change(tensors, meta)
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path), metadata=meta)
    return path


def nan_values(t, m):
    t["intro.lora_B"] = torch.full_like(t["intro.lora_B"], float("nan"))


def wrong_shape(t, m):
    t["intro.lora_A"] = torch.zeros(5, 3, 3, 3)


def int_dtype(t, m):
    t["intro.lora_A"] = t["intro.lora_A"].to(torch.int32)


def unknown_layer(t, m):
    plan = json.loads(m["rank_plan"])
    plan["encoders.7.0.conv1"] = 2
    m["rank_plan"] = json.dumps(plan)


def newer_format(t, m):
    m["format_version"] = "99"


@pytest.mark.parametrize(
    "change, message",
    [
        (nan_values, "NaN"),
        (wrong_shape, "shape"),
        (int_dtype, "dtype"),
        (unknown_layer, "not LoRA targets"),
        (newer_format, "newer than this colora"),
    ],
)
def test_tampered_adapters_are_refused_and_nothing_is_stored(exported, tmp_path, change, message):
    home = exported / "home"
    before = json.loads(invoke(home, "list", "--json").stdout)
    files_before = sorted(p.name for p in (home / "tasks").rglob("*"))
    r = invoke(home, "adapter", "import", tampered(exported, tmp_path, change), "--task", "evil")
    assert r.exit_code == 1 and message in r.stderr and "Traceback" not in r.output
    assert json.loads(invoke(home, "list", "--json").stdout) == before
    assert sorted(p.name for p in (home / "tasks").rglob("*")) == files_before


def test_pickle_is_never_loaded(exported, tmp_path):
    evil = tmp_path / "evil.safetensors"
    torch.save({"x": torch.zeros(1)}, evil)
    r = invoke(exported / "home", "adapter", "import", evil, "--task", "evil")
    assert r.exit_code == 1 and "not a valid safetensors" in r.stderr
    torch.save({"x": torch.zeros(1)}, tmp_path / "x.pt")
    r = invoke(exported / "home", "adapter", "import", tmp_path / "x.pt", "--task", "evil")
    assert r.exit_code == 1 and "not a .safetensors file" in r.stderr
