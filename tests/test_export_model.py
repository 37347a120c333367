"""`colora export-model`: a task's model as a NAFNet checkpoint that spandrel (chaiNNer's loader) runs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import copy_store, invoke, ok, textured

spandrel = pytest.importorskip("spandrel", reason="spandrel (dev extra) is the independent loader")


def spandrel_restores(checkpoint, image: np.ndarray) -> np.ndarray:
    """spandrel's NAFNet on an 8-bit RGB image, quantised as colora writes 8-bit outputs."""
    loaded = spandrel.ModelLoader().load_from_file(str(checkpoint))
    assert loaded.architecture.id == "NAFNet"
    x = torch.from_numpy(image.astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = loaded.model.eval()(x)
    return np.round(y[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.int16)


def colora_restores(home, image: np.ndarray, tmp_path) -> np.ndarray:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir(exist_ok=True)
    Image.fromarray(image).save(src / "held-out.png")
    ok(
        invoke(
            "restore",
            "--task",
            "noise",
            str(src),
            "-o",
            str(out),
            "--tile",
            "0",
            "--engine",
            "torch",
            "--overwrite",
            "--home",
            str(home),
        )
    )
    return np.asarray(Image.open(out / "held-out.png").convert("RGB")).astype(np.int16)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_spandrel_runs_the_exported_model_as_colora_does(suffix, trained_store, tmp_path):
    home = copy_store(trained_store.home, tmp_path / "home")
    file = tmp_path / f"noise{suffix}"
    result = ok(invoke("export-model", "noise", str(file), "--home", str(home)))
    assert "NAFNet width" in result.stderr
    card = json.loads((tmp_path / f"noise{suffix}.json").read_text())
    assert card["task"] == "noise" and card["architecture"]["name"] == "NAFNet"
    assert card["backbone"] == "random-tiny" and len(card["backbone_sha256"]) == 64
    # a size the network needs no padding for: the same image, within 8-bit rounding, everywhere
    image = textured(np.random.default_rng(7), 48, 64)
    assert np.abs(spandrel_restores(file, image) - colora_restores(home, image, tmp_path)).max() <= 1


def test_a_size_that_needs_padding_differs_only_near_the_padded_borders(trained_store, tmp_path):
    home = copy_store(trained_store.home, tmp_path / "home")
    file = tmp_path / "noise.pth"
    ok(invoke("export-model", "noise", str(file), "--home", str(home)))
    image = textured(np.random.default_rng(8), 45, 61)  # padded at the bottom and the right
    diff = np.abs(spandrel_restores(file, image) - colora_restores(home, image, tmp_path))
    band = 8
    assert diff[:-band, :-band].max() <= 1  # away from the padded borders: colora's output
    assert "padding" in json.loads((tmp_path / "noise.pth.json").read_text())


def test_export_model_refuses_what_it_must_not_write(trained_store, tmp_path):
    home = copy_store(trained_store.home, tmp_path / "home")
    bad = invoke("export-model", "noise", str(tmp_path / "noise.onnx"), "--home", str(home))
    assert bad.exit_code == 1 and ".pth or .safetensors" in bad.stderr
    file = tmp_path / "noise.pth"
    ok(invoke("export-model", "noise", str(file), "--home", str(home)))
    again = invoke("export-model", "noise", str(file), "--home", str(home))
    assert again.exit_code == 1 and "already exists" in again.stderr and "--overwrite" in again.stderr
    fifo = tmp_path / "fifo.pth"
    os.mkfifo(fifo)
    refused = invoke("export-model", "noise", str(fifo), "--overwrite", "--home", str(home))
    assert refused.exit_code == 1 and "regular files" in refused.stderr and fifo.is_fifo()
    untrained = invoke("export-model", "nope", str(tmp_path / "x.pth"), "--home", str(home))
    assert untrained.exit_code == 1 and "nope" in untrained.stderr
