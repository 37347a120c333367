"""Bring your own NAFNet: BasicSR / spandrel checkpoints as colora backbones.

Checked against an independent implementation: spandrel's NAFNet (the loader behind chaiNNer),
built with random weights in the official layouts and saved the way BasicSR saves them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from colora.core.model.backbone import BackboneConfig, build_backbone
from helpers import TINY_INIT, err, invoke, make_pairs, ok, out

spandrel_nafnet = pytest.importorskip("spandrel.architectures.NAFNet", reason="spandrel (dev extra) checks the import")

SIDD_WIDTH32 = dict(width=32, middle_blk_num=12, enc_blk_nums=[2, 2, 4, 8], dec_blk_nums=[2, 2, 2, 2])
GOPRO_WIDTH32 = dict(width=32, middle_blk_num=1, enc_blk_nums=[1, 1, 1, 28], dec_blk_nums=[1, 1, 1, 1])
SMALL = dict(width=8, middle_blk_num=2, enc_blk_nums=[1, 2], dec_blk_nums=[2, 1])


def random_spandrel(layout: dict, seed: int = 0):
    """spandrel's NAFNet with every weight random (beta and gamma too: no block is the identity)."""
    torch.manual_seed(seed)
    net = spandrel_nafnet.NAFNet(img_channel=3, **layout)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
    return net.eval()


def backbone_of(home: Path, name: str):
    from colora.api.models import backbone_model
    from colora.store.store import Store

    store = Store.open(home)
    return backbone_model(store, store.backbone(name))


def backbone_files(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "backbones").iterdir())


@pytest.mark.parametrize("layout", [SIDD_WIDTH32, GOPRO_WIDTH32], ids=["sidd-width32", "gopro-width32"])
def test_basicsr_checkpoint_computes_what_spandrel_computes(layout, tmp_path, isolated_home):
    net = random_spandrel(layout)
    ckpt = tmp_path / "NAFNet-width32.pth"
    torch.save({"params": net.state_dict()}, ckpt)  # as BasicSR's save_network writes it
    ok(invoke(*TINY_INIT))
    r = ok(invoke("backbone", "import", ckpt, "--name", "nafnet"))
    assert "Imported backbone 'nafnet'" in err(r)
    model = backbone_of(isolated_home, "nafnet")
    config = model.config
    assert (config.width, list(config.enc_blocks), config.middle_blocks, list(config.dec_blocks)) == (
        32,
        layout["enc_blk_nums"],
        layout["middle_blk_num"],
        layout["dec_blk_nums"],
    )
    x = torch.rand(
        2, 3, 37, 53, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )  # sides not multiples of 16
    with torch.no_grad():
        ours, theirs = model.double()(x), net.double()(x)
    assert (ours - theirs).abs().max().item() <= 1e-10
    details = json.loads(out(ok(invoke("backbone", "show", "nafnet", "--json"))))
    assert "NAFNet checkpoint NAFNet-width32.pth ('params')" in details["label"] + json.dumps(details)


def test_the_inference_graph_of_an_imported_nafnet_matches_spandrel(tmp_path):
    from colora.core.interop.basicsr import nafnet_from_checkpoint
    from colora.core.model.fast import FastNAFNet

    net = random_spandrel(SIDD_WIDTH32, seed=3)
    ckpt = tmp_path / "sidd.pth"
    torch.save({"params": net.state_dict()}, ckpt)
    model, _ = nafnet_from_checkpoint(ckpt)
    x = torch.rand(1, 3, 40, 29, dtype=torch.float64)
    with torch.no_grad():
        fast = FastNAFNet(model.double())(x)
        assert (fast - net.double()(x)).abs().max().item() <= 1e-10


@pytest.mark.parametrize("wrap", ["params", "params_ema", "bare", "module", "safetensors"])
def test_checkpoint_variants_are_read_with_their_shapes_inferred(wrap, tmp_path):
    from safetensors.torch import save_file

    from colora.core.interop.basicsr import nafnet_from_checkpoint

    net = random_spandrel(SMALL, seed=4)
    state = net.state_dict()
    path = tmp_path / ("nafnet.safetensors" if wrap == "safetensors" else "nafnet.pth")
    if wrap == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    elif wrap == "module":
        torch.save({f"module.{k}": v for k, v in state.items()}, path)
    elif wrap == "bare":
        torch.save(state, path)
    else:  # BasicSR keeps both with EMA: the EMA weights are the ones to use
        other = {k: torch.zeros_like(v) for k, v in state.items()}
        torch.save(
            {wrap: state, ("params" if wrap == "params_ema" else "params_ema"): other}
            if wrap == "params_ema"
            else {wrap: state},
            path,
        )
    model, source = nafnet_from_checkpoint(path)
    assert source == (wrap if wrap.startswith("params") else "bare")
    assert model.config == BackboneConfig(
        width=8, enc_blocks=(1, 2), middle_blocks=2, dec_blocks=(2, 1), pad_mode="zeros"
    )
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v), k


class _RunsCode:
    """Unpickling this runs a shell command: what a full-pickle load of a hostile .pth would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pth_that_needs_full_pickle_is_refused_without_running_it(tmp_path, isolated_home):
    marker = tmp_path / "code-ran"
    ckpt = tmp_path / "hostile.pth"
    torch.save({"params": random_spandrel(SMALL).state_dict(), "hook": _RunsCode(marker)}, ckpt)
    ok(invoke(*TINY_INIT))
    before = backbone_files(isolated_home)
    r = invoke("backbone", "import", ckpt, "--name", "hostile")
    assert r.exit_code != 0
    assert "hostile.pth cannot be read as plain weights" in err(r) and "weights_only=True" in err(r)
    assert not marker.exists()
    assert backbone_files(isolated_home) == before


@pytest.mark.parametrize(
    "damage, message",
    [
        ("drop", "1 missing, 0 unexpected, 0 mis-shaped"),
        ("reshape", "0 missing, 0 unexpected, 1 mis-shaped"),
        ("extra", "0 missing, 1 unexpected, 0 mis-shaped"),
        ("other", "is not a NAFNet checkpoint"),
        ("ints", "is torch.int64, not floating point"),
    ],
)
def test_a_mismatched_or_partial_checkpoint_gives_one_clear_error(damage, message, tmp_path, isolated_home):
    state = dict(random_spandrel(SMALL).state_dict())
    if damage == "drop":
        del state["decoders.1.0.conv3.weight"]
    elif damage == "reshape":
        state["middle_blks.1.conv4.weight"] = torch.zeros(7, 32, 1, 1)
    elif damage == "extra":
        state["encoders.0.0.conv9.weight"] = torch.zeros(1)
    elif damage == "other":
        state = {"conv.weight": torch.zeros(4, 3, 3, 3)}
    else:
        state["intro.bias"] = torch.zeros(8, dtype=torch.int64)
    ckpt = tmp_path / "broken.pth"
    torch.save({"params": state}, ckpt)
    ok(invoke(*TINY_INIT))
    r = invoke("backbone", "import", ckpt, "--name", "broken")
    assert r.exit_code != 0 and message in err(r)
    assert len([line for line in err(r).splitlines() if line.startswith("Error:")]) == 1
    assert backbone_files(isolated_home) == ["random-tiny.safetensors"]


def test_a_nafnet_of_a_size_no_preset_has_works_end_to_end(tmp_path, isolated_home, wide_console):
    """ranks, train, eval, restore and recycle on an imported NAFNet of a layout colora never made."""
    config = BackboneConfig(width=8, enc_blocks=(1, 2), middle_blocks=3, dec_blocks=(2, 1))
    net = build_backbone(
        config, seed=5
    )  # blocks start near the identity, as a trained NAFNet's output is near its input
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.normal_(0, 0.01)
        net.ending.weight.mul_(0.05)  # a trained restorer's output is close to its input
    ckpt = tmp_path / "lab-nafnet.pth"
    torch.save({"params_ema": {f"module.{k}": v for k, v in net.state_dict().items()}}, ckpt)
    ok(invoke(*TINY_INIT))
    ok(invoke("backbone", "import", ckpt, "--name", "lab", "--default"))
    for name, seed in (("noise-a", 0), ("noise-b", 1)):
        ok(invoke("task", "add", name, make_pairs(tmp_path / name, n=5, seed=seed, noise=40)))
    ok(invoke("ranks", "noise-a", "--probe-steps", "3", "--path-steps", "2"))
    for name in ("noise-a", "noise-b"):
        ok(invoke("train", name, "--steps", "80", "--patch-size", "24", "--batch-size", "4", "--lr", "1e-2"))
    rows = json.loads(out(ok(invoke("list", "--json"))))
    assert {r["task"]: r["backbone"] for r in rows} == {"noise-a": "lab", "noise-b": "lab"}
    assert "adapter" in out(ok(invoke("eval", "noise-a")))
    restored = tmp_path / "restored"
    ok(invoke("restore", "--task", "noise-a", tmp_path / "noise-a" / "input", "-o", restored))
    assert len(list(restored.iterdir())) == 5
    ok(invoke("task", "add", "fresh", make_pairs(tmp_path / "fresh", n=2, seed=9, noise=40)))
    r = ok(invoke("adapt", "fresh"))
    assert "Recycled adapter for 'fresh'" in err(r)


def test_a_small_pth_that_would_unpack_to_gigabytes_is_refused_before_allocating(tmp_path, isolated_home):
    """Expanded views (one number standing for a whole tensor) and compressed archive entries."""
    import zipfile

    config = BackboneConfig(width=64, enc_blocks=(1,) * 6, middle_blocks=6, dec_blocks=(1,) * 6)
    from colora.core.model.weights import expected_shapes

    views = {k: torch.full((1,), 1e-3).expand(shape) for k, shape in expected_shapes(config).items()}
    bomb = tmp_path / "views.pth"
    torch.save({"params": views}, bomb)
    assert bomb.stat().st_size < 200_000
    ok(invoke(*TINY_INIT))
    r = invoke("backbone", "import", bomb, "--name", "bomb")
    assert r.exit_code == 1 and "not plain dense data" in err(r)

    plain = tmp_path / "plain.pth"
    torch.save({"params": random_spandrel(SMALL).state_dict()}, plain)
    squeezed = tmp_path / "squeezed.pth"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(squeezed, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            dst.writestr(item.filename, src.read(item.filename))
    r = invoke("backbone", "import", squeezed, "--name", "squeezed")
    assert r.exit_code == 1 and "has compressed entries" in err(r)
    assert backbone_files(isolated_home) == ["random-tiny.safetensors"]
    assert not [p for p in isolated_home.iterdir() if p.name.startswith("tmp")]


def test_an_adapter_file_given_as_a_backbone_says_where_it_belongs(trained_store, tmp_path, isolated_home):
    adapter = next((trained_store.home / "tasks" / "noise").glob("adapter-*.safetensors"))
    ok(invoke(*TINY_INIT))
    r = invoke("backbone", "import", adapter, "--name", "x")
    assert r.exit_code == 1 and "is a colora adapter, not a backbone" in err(r) and "colora adapter import" in err(r)


def test_pretraining_continues_from_an_imported_nafnet(tmp_path, isolated_home):
    from PIL import Image

    from helpers import textured

    ckpt = tmp_path / "lab.pth"
    torch.save({"params": random_spandrel(SMALL).state_dict()}, ckpt)
    clean = tmp_path / "clean"
    clean.mkdir()
    rng = __import__("numpy").random.default_rng(0)
    for i in range(2):
        Image.fromarray(textured(rng, 40, 40)).save(clean / f"{i}.png")
    ok(invoke(*TINY_INIT))
    ok(invoke("backbone", "import", ckpt, "--name", "lab"))
    ok(
        invoke(
            "backbone",
            "pretrain",
            clean,
            "--name",
            "lab-prod",
            "--init-from",
            "lab",
            "--steps",
            "3",
            "--patch-size",
            "16",
            "--batch-size",
            "2",
        )
    )
    details = json.loads(out(ok(invoke("backbone", "show", "lab-prod", "--json"))))
    assert details["recipe"]["started_from"]["imported_from"] == "lab.pth"
    assert details["recipe"]["config_name"] == "custom" and details["recipe"]["total_steps"] == 3
    assert "starting from lab.pth" in details["label"]


def test_the_same_tensors_with_another_padding_are_another_backbone():
    from colora.core.model.weights import backbone_fingerprint, state_fingerprint

    net = build_backbone(BackboneConfig(width=8, enc_blocks=(1,), middle_blocks=1, dec_blocks=(1,)))
    state = net.state_dict()
    zeros = BackboneConfig(width=8, enc_blocks=(1,), middle_blocks=1, dec_blocks=(1,), pad_mode="zeros")
    assert backbone_fingerprint(state, net.config) == state_fingerprint(state)  # colora's own: unchanged
    assert backbone_fingerprint(state, zeros) != state_fingerprint(state)
