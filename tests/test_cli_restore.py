"""`colora restore` end to end (conventions: test_cli.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_common import (
    fails,
    save_image,
    tree_digest,
)
from PIL import Image

from helpers import err, invoke, ok, textured

pytestmark = pytest.mark.usefixtures("one_torch_thread", "wide_console")


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
