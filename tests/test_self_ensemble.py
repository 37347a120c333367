"""The x8 self-ensemble (core/inference/ensemble.py) and its options on `restore` and `eval`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from colora.core.inference.ensemble import SelfEnsemble, _dihedral, _undo
from colora.core.inference.tiles import restore_tensor
from helpers import copy_store, err, invoke, ok, out, textured


def _numpy_average(model, x: torch.Tensor) -> torch.Tensor:
    """The ensemble written independently: numpy's rot90/fliplr on H x W x C images."""
    img = x[0].permute(1, 2, 0).numpy()
    total = np.zeros_like(img, dtype=np.float64)
    for turns in range(4):
        for flip in (False, True):
            t = np.rot90(img, turns)
            t = np.fliplr(t) if flip else t
            y = model(torch.from_numpy(np.ascontiguousarray(t)).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
            y = np.fliplr(y) if flip else y
            total += np.rot90(y, -turns)
    return torch.from_numpy(total / 8).permute(2, 0, 1)[None].float()


def test_transforms_are_the_eight_symmetries_and_undo_them():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    seen = set()
    for k in range(8):
        t = _dihedral(x, k)
        assert t.shape[-2:] == ((5, 7) if k % 2 == 0 else (7, 5))
        assert torch.equal(_undo(t, k), x)
        seen.add(tuple(t.flatten().tolist()))
    assert len(seen) == 8


def test_an_equivariant_model_is_unchanged():
    pointwise = torch.nn.Conv2d(3, 3, 1)
    x = torch.rand(1, 3, 12, 20)
    with torch.no_grad():
        assert torch.allclose(SelfEnsemble(pointwise)(x), pointwise(x), atol=1e-6)


def test_a_non_equivariant_model_is_averaged_over_its_eight_views():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    x = torch.rand(1, 3, 12, 20)
    with torch.no_grad():
        ensembled, plain = SelfEnsemble(conv)(x), conv(x)
        assert torch.allclose(ensembled, _numpy_average(conv, x), atol=1e-5)
        assert (ensembled - plain).abs().max() > 1e-3


def test_restore_tensor_takes_a_plain_callable_and_tiles():
    torch.manual_seed(1)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    image = torch.rand(3, 40, 70)
    with torch.no_grad():
        whole = restore_tensor(lambda t: conv(t), image, tile=0, self_ensemble=True)  # no module: an engine's shape
        tiled = restore_tensor(conv, image, tile=32, overlap=8, self_ensemble=True)
        assert whole.shape == tiled.shape == image.shape
        assert torch.allclose(whole, _numpy_average(conv, image[None])[0].clamp(0, 1), atol=1e-5)
        assert (whole - tiled).abs().max() < 0.2  # tiles blend: the same restoration up to the seams


@pytest.fixture
def one_photo(tmp_path):
    path = tmp_path / "photo" / "a.png"
    path.parent.mkdir()
    Image.fromarray(textured(np.random.default_rng(5), 32, 40)).save(path)
    return path


def test_restore_self_ensemble_is_the_average_of_the_eight_restored_views(trained_store, one_photo, tmp_path):
    """Checked from outside: restore the 8 turned/flipped copies plainly, turn them back, average."""
    views = tmp_path / "views"
    views.mkdir()
    img = np.asarray(Image.open(one_photo).convert("RGB"))
    for turns in range(4):
        for flip in (False, True):
            t = np.rot90(img, turns)
            Image.fromarray(np.ascontiguousarray(np.fliplr(t) if flip else t)).save(views / f"{turns}{int(flip)}.png")
    ok(invoke("restore", "--task", "noise", views, "-o", tmp_path / "views_out", "--home", trained_store.home))
    ok(invoke("restore", "--task", "noise", one_photo, "-o", tmp_path / "plain", "--home", trained_store.home))
    r = ok(
        invoke(
            "restore",
            "--task",
            "noise",
            one_photo,
            "-o",
            tmp_path / "x8",
            "--self-ensemble",
            "--home",
            trained_store.home,
        )
    )
    assert "Restored 1 image(s)" in err(r)
    views_back = []
    for turns in range(4):
        for flip in (False, True):
            y = np.asarray(Image.open(tmp_path / "views_out" / f"{turns}{int(flip)}.png"), dtype=np.float64)
            views_back.append(np.rot90(np.fliplr(y) if flip else y, -turns))
    average = np.mean(views_back, axis=0)
    # Each plain view is clipped to 0..255 before this average, the ensemble only after its own:
    # compare where no view was clipped.
    inside = np.all((np.array(views_back) > 0) & (np.array(views_back) < 255), axis=0)
    assert inside.mean() > 0.5
    ensembled = np.asarray(Image.open(tmp_path / "x8" / "a.png"), dtype=np.float64)
    plain = np.asarray(Image.open(tmp_path / "plain" / "a.png"), dtype=np.float64)
    assert np.abs(ensembled - average)[inside].max() <= 1.0  # 8-bit rounding of each view and of the average
    assert np.abs(plain - average)[inside].max() > 1.0  # ...and the plain restoration is not that average
    assert np.array_equal(np.asarray(Image.open(one_photo).convert("RGB")), img)  # the input is untouched


def test_eval_self_ensemble_scores_the_adapter_both_ways(trained_store, tmp_path):
    home = copy_store(trained_store.home, tmp_path / "home")  # eval records its rows: not in the shared store
    data = json.loads(out(ok(invoke("eval", "noise", "--json", "--self-ensemble", "--home", home))))
    rows = {r["subject"]: r for r in data["results"]}
    assert set(rows) == {"input", "backbone", "adapter", "adapter x8"}
    assert rows["adapter x8"]["psnr"] != rows["adapter"]["psnr"]
    assert rows["adapter x8"]["pairs"] == rows["adapter"]["pairs"]


def test_restore_on_ray_refuses_self_ensemble(trained_store, one_photo, tmp_path):
    r = invoke(
        "restore",
        "--task",
        "noise",
        one_photo,
        "-o",
        tmp_path / "o",
        "--ray",
        "local",
        "--self-ensemble",
        "--home",
        trained_store.home,
    )
    assert r.exit_code == 1 and "Traceback" not in err(r)
    assert "--self-ensemble" in err(r) and "without --ray" in err(r)
    assert not (tmp_path / "o").exists()
