"""`colora backbone ...` end to end (conventions: test_cli.py)."""

from __future__ import annotations

import math
import os
import re

import pytest
from cli_common import (
    RANDOM_LABEL,
    as_json,
    backbones,
    fails,
    save_image,
    sha,
    tree_digest,
)

from helpers import TINY_INIT, err, invoke, ok, out

pytestmark = pytest.mark.usefixtures("one_torch_thread", "wide_console")


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
