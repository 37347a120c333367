"""Trust: nothing a store is handed can destroy what it holds, hang the machine or inject into the
terminal (issue 13). Each test is one of the failures seen by a hostile probe of colora 0.1.

Refusals must be clean: exit 1, one `Error:` line (never "unexpected"), no traceback, and the
store exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from helpers import FAST_TRAIN, TINY_INIT, copy_store, err, invoke, make_pairs, ok, out

pytestmark = pytest.mark.usefixtures("one_torch_thread", "wide_console")

OLD = (1_000_000_000, 1_000_000_000)  # atime, mtime far in the past: older than doctor's grace period


def refused(result, *fragments: str) -> str:
    """Exit 1, exactly one `Error:` line holding every fragment, no "unexpected" error."""
    assert result.exit_code == 1, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    lines = [line for line in err(result).splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and not lines[0].startswith("Error: unexpected "), err(result)
    assert "\nHint: " in "\n" + err(result), f"no hint: {err(result)}"  # and how to fix it
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def files(home: Path) -> dict[str, str]:
    """Every regular file under the store (links not followed) and its sha256."""
    found = {}
    for folder, _, names in os.walk(home, followlinks=False):
        for name in names:
            p = Path(folder) / name
            if p.is_file() and not p.is_symlink() and not name.startswith("colora.db"):
                found[p.relative_to(home).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


def listing(home: Path) -> list[dict]:
    return json.loads(out(ok(invoke("list", "--json", "--home", home))))


def age(home: Path) -> None:
    """Make every file in the store look older than doctor's grace period."""
    for folder, _, names in os.walk(home):
        for name in names:
            os.utime(Path(folder) / name, OLD, follow_symlinks=False)


@pytest.fixture
def home(trained_store, tmp_path) -> Path:
    """A private copy of the session's store: task 'noise' with a trained adapter."""
    return copy_store(trained_store.home, tmp_path / "home")


def adapter_file(home: Path) -> Path:
    return next((home / "tasks" / "noise").glob("adapter-*.safetensors"))


def backbone_file(home: Path) -> Path:
    return home / "backbones" / "random-tiny.safetensors"


def rewrite(src: Path, dest: Path, tensors=None, meta=None) -> Path:
    """`src`'s tensors and metadata, changed by the callables `tensors` and `meta`, saved as `dest`."""
    t = load_file(str(src))
    from colora.core.files import read_safetensors_header

    m = read_safetensors_header(src)[1]
    if tensors:
        tensors(t)
    if meta:
        meta(m)
    save_file(t, str(dest), metadata=m)
    return dest


# ---------------------------------------------------------------- 1, 2, 12: doctor and the index


def test_doctor_fix_on_an_emptied_index_reindexes_the_weights_and_deletes_none(home):
    before = files(home)
    (home / "colora.db").write_bytes(b"")
    for extra in ("colora.db-wal", "colora.db-shm"):
        (home / extra).unlink(missing_ok=True)
    age(home)
    report = ok(invoke("doctor", "--fix", "--json", "--home", home))
    kinds = {f["kind"] for f in json.loads(out(report)) if f["fixed"]}
    assert kinds == {"not_indexed"}
    assert files(home) == before  # every weight file is still there, unchanged
    rows = listing(home)
    assert [(r["task"], r["adapter"]) for r in rows] == [("noise", "trained")]
    ok(
        invoke(
            "restore",
            "--task",
            "noise",
            make_pairs(home.parent / "p", n=1) / "input",
            "-o",
            home.parent / "out",
            "--home",
            home,
        )
    )


def test_a_lost_index_and_a_new_init_keep_the_adapters_reindexable(home):
    adapter, backbone = adapter_file(home), backbone_file(home).read_bytes()
    for name in ("colora.db", "colora.db-wal", "colora.db-shm"):
        (home / name).unlink(missing_ok=True)
    refused(invoke(*TINY_INIT, "--home", home), "the index does not know it")  # never over the old backbone
    assert backbone_file(home).read_bytes() == backbone
    age(home)
    ok(invoke("doctor", "--fix", "--home", home))
    assert adapter.is_file()
    assert [(r["task"], r["adapter"]) for r in listing(home)] == [("noise", "trained")]


def test_doctor_never_follows_or_removes_links(home, tmp_path):
    outside = tmp_path / "precious.safetensors"
    outside.write_bytes(b"not colora's")
    (home / "tasks" / "noise" / "link-to-backbone.safetensors").symlink_to(backbone_file(home))
    (home / "tasks" / "outside").symlink_to(tmp_path, target_is_directory=True)
    (home / "backbones" / "outside.safetensors").symlink_to(outside)
    before = files(home)
    age(home)
    report = json.loads(out(ok(invoke("doctor", "--fix", "--json", "--home", home))))
    links = [f for f in report if f["kind"] == "link"]
    assert len(links) == 3 and not any(f["fixed"] for f in links)
    assert files(home) == before and outside.read_bytes() == b"not colora's"
    assert (home / "tasks" / "noise" / "link-to-backbone.safetensors").is_symlink()


def test_doctor_removes_only_its_own_temporary_files(home):
    temp = home / "tasks" / "noise" / ".adapter-9.safetensors.k3j_x9a2.part"  # as mkstemp names them
    temp.write_bytes(b"half")
    other = home / "tasks" / "noise" / "notes.txt"
    other.write_text("mine")
    age(home)
    report = json.loads(out(ok(invoke("doctor", "--fix", "--json", "--home", home))))
    assert not temp.exists() and other.read_text() == "mine"
    assert {f["kind"] for f in report if f["fixed"]} == {"temp_file"}


def test_a_damaged_index_is_explained_everywhere_and_reindex_rebuilds_it(home):
    db = home / "colora.db"
    with sqlite3.connect(db) as conn:  # everything into the main file, so that damaging it damages the index
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    data[100:4096] = b"\x55" * (4096 - 100)
    db.write_bytes(bytes(data))
    for args in (("list",), ("doctor",), ("train", "noise"), ("task", "show", "noise")):
        result = invoke(*args, "--home", home)
        refused(result, "is damaged")
        assert "colora doctor --reindex" in err(result)
    weights = files(home)
    result = ok(invoke("doctor", "--reindex", "--home", home))
    assert "moved to" in err(result) and "Re-indexed 2 weight file(s)" in err(result)
    assert len([p for p in home.glob("colora.db.damaged-*") if not p.name.endswith(("-wal", "-shm"))]) == 1  # kept
    assert files(home) == weights
    assert [(r["task"], r["adapter"]) for r in listing(home)] == [("noise", "trained")]


# ---------------------------------------------------------------- 3: untrusted text is printed literally

HOSTILE = "[/][bold red]x\x1b]0;pwned\x07\x1b[2J\u202e"


def test_an_index_missing_a_table_is_explained_and_reindex_rebuilds_it(home):
    with sqlite3.connect(home / "colora.db") as conn:
        conn.execute("DROP TABLE pairs")
    for args in (("list",), ("task", "show", "noise")):
        r = invoke(*args, "--home", home)
        refused(r, "is incomplete (no such table: pairs)")
        assert "colora doctor --reindex" in err(r)
    r = invoke("doctor", "--home", home)
    assert r.exit_code == 1 and "the index lacks table(s) pairs; rebuild it with `colora doctor --reindex`" in out(r)
    ok(invoke("doctor", "--reindex", "--home", home))
    assert [(r["task"], r["adapter"]) for r in listing(home)] == [("noise", "trained")]
    (home / "colora.db").write_bytes(b"")  # emptied: the quick path of `list` says so too
    refused(invoke("list", "--home", home), "is incomplete")


def test_hostile_metadata_cannot_restyle_or_break_the_listing(home, tmp_path):
    evil = rewrite(
        adapter_file(home), tmp_path / "evil.safetensors", meta=lambda m: m.update(plan_method=HOSTILE, task=HOSTILE)
    )
    ok(invoke("adapter", "import", evil, "--task", "evil", "--home", home))
    for args in (("list",), ("list", "--json"), ("task", "show", "evil"), ("task", "show", "evil", "--json")):
        result = ok(invoke(*args, "--home", home))
        text = result.stdout + result.stderr
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text, args
    assert "[/][bold red]x\\x1b]0;pwned\\x07" in out(ok(invoke("list", "--home", home)))
    assert json.loads(out(ok(invoke("list", "--json", "--home", home))))[0]["plan_method"] == HOSTILE


def test_bracketed_and_escape_file_names_are_printed_literally(home, tmp_path):
    folder = tmp_path / "scans ["
    folder.mkdir()
    names = ["holiday [bold]2024.png", "x\x1b[31mred.png"]
    for name in names:
        Image.fromarray(np.full((24, 32, 3), 120, np.uint8)).save(folder / name)
    result = ok(invoke("restore", "--task", "noise", folder, "-o", tmp_path / "out", "--home", home))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(names)
    assert "\x1b" not in result.stderr
    bad = folder / "broken [b].png"
    bad.write_bytes(b"not an image")
    message = refused(invoke("restore", "--task", "noise", folder, "-o", tmp_path / "out2", "--home", home))
    assert "broken [b].png" in message


# ---------------------------------------------------------------- 4, 5, 6: crafted weight files


def torch_baseline_mb() -> float:
    """Peak resident MB of a process that imports torch and colora's model code, and does nothing."""
    code = (
        "import resource, torch, colora.core.model.weights, colora.core.inference.tiles; "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


BOUNDED_MB = 300  # what a refusal may cost above the baseline: no model, no tensor of the claimed size


def peak_mb_of(*args) -> tuple[int, float, str]:
    """Exit code, peak resident MB above `torch_baseline_mb` and stderr of `colora ARGS` in a fresh process."""
    code = (
        "import resource, sys; from colora.cli.main import run\n"
        "try:\n    run()\nexcept SystemExit as e:\n    code = e.code\n"
        "print(code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)"
    )
    p = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=300)
    last = p.stderr.strip().splitlines()[-1].split()
    return int(last[0]), float(last[1]) - torch_baseline_mb(), p.stderr


def test_an_adapter_claiming_huge_ranks_is_refused_before_any_allocation(home, tmp_path):
    evil = rewrite(
        adapter_file(home),
        tmp_path / "huge.safetensors",
        meta=lambda m: m.update(rank_plan=json.dumps({k: 4000 for k in json.loads(m["rank_plan"])})),
    )
    code, mb, stderr = peak_mb_of("adapter", "import", evil, "--task", "evil", "--home", home)
    assert code == 1 and "not a low-rank adapter" in stderr and "unexpected" not in stderr
    assert mb < BOUNDED_MB, f"{mb:.0f} MB"
    million = rewrite(
        adapter_file(home),
        tmp_path / "million.safetensors",
        meta=lambda m: m.update(rank_plan=json.dumps({k: 10**6 for k in json.loads(m["rank_plan"])})),
    )
    refused(invoke("adapter", "import", million, "--task", "evil", "--home", home), "rank_plan")


@pytest.mark.parametrize(
    "change", [{"middle_blocks": 20000}, {"width": 200}, {"enc_blocks": [1] * 40, "dec_blocks": [1] * 40}]
)
def test_a_backbone_config_claiming_a_huge_model_is_refused_before_any_allocation(home, tmp_path, change):
    def grow(m):
        config = json.loads(m["config"]) | change
        m["config"] = json.dumps(config)

    evil = rewrite(backbone_file(home), tmp_path / "huge.safetensors", meta=grow)
    code, mb, stderr = peak_mb_of("backbone", "import", evil, "--name", "huge", "--home", home)
    assert code == 1 and "unexpected" not in stderr and ("out of bounds" in stderr or "does not match" in stderr)
    assert mb < BOUNDED_MB, f"{mb:.0f} MB"


@pytest.mark.parametrize(
    "field, value",
    [
        ("extra", "[1, 2]"),
        ("extra", '{"plan_info": {"budget": "lots"}}'),
        ("recycled", '"yes"'),
        ("alpha", '"two"'),
        ("rank_plan", '["a"]'),
        ("format_version", "one"),
        ("lora_mode", "sideways"),
    ],
)
def test_wrongly_typed_metadata_is_refused_all_or_nothing(home, tmp_path, field, value):
    evil = rewrite(adapter_file(home), tmp_path / "typed.safetensors", meta=lambda m: m.update({field: value}))
    before, rows = files(home), listing(home)
    result = invoke("adapter", "import", evil, "--task", "fresh", "--home", home)
    if field == "extra" and "budget" in value:  # a budget that is no number is ignored, not fatal
        ok(result)
        assert [r["budget_percent"] for r in listing(home) if r["task"] == "fresh"] == [None]
        return
    refused(result, "broken adapter metadata")
    assert files(home) == before and listing(home) == rows


@pytest.mark.parametrize("alpha", ["NaN", "Infinity", "1e30", "-3", "0", "1e-300"])
def test_adapters_whose_merged_weights_are_not_finite_are_refused(home, tmp_path, alpha):
    evil = rewrite(adapter_file(home), tmp_path / "a.safetensors", meta=lambda m: m.update(alpha=alpha))
    before = files(home)
    refused(invoke("adapter", "import", evil, "--task", "fresh", "--home", home))
    assert files(home) == before


def test_megabytes_of_metadata_are_refused_not_kept(home, tmp_path):
    evil = rewrite(adapter_file(home), tmp_path / "m.safetensors", meta=lambda m: m.update(notes="x" * 3 * 2**20))
    before = files(home)
    refused(invoke("adapter", "import", evil, "--task", "fresh", "--home", home), "3.0 MiB of metadata")
    assert files(home) == before


def test_a_vanishing_alpha_is_refused_by_name(home, tmp_path):
    evil = rewrite(adapter_file(home), tmp_path / "a.safetensors", meta=lambda m: m.update(alpha="1e-300"))
    refused(invoke("adapter", "import", evil, "--task", "fresh", "--home", home), "alpha must be a number in [0.001")


def test_finite_factors_whose_product_overflows_are_refused(home, tmp_path):
    def blow_up(t):
        for k in t:
            t[k] = torch.full_like(t[k], 3e19)

    evil = rewrite(adapter_file(home), tmp_path / "a.safetensors", tensors=blow_up)
    refused(invoke("adapter", "import", evil, "--task", "fresh", "--home", home), "non-finite")


def test_a_backbone_with_nan_weights_is_refused(home, tmp_path):
    def poison(t):
        t["intro.weight"][0, 0, 0, 0] = float("nan")

    evil = rewrite(backbone_file(home), tmp_path / "nan.safetensors", tensors=poison)
    refused(invoke("backbone", "import", evil, "--name", "nan", "--home", home), "NaN")


# ---------------------------------------------------------------- 7, 8: replacing and tampering


def test_import_onto_a_trained_adapter_needs_replace(home, tmp_path):
    exported = tmp_path / "noise.safetensors"
    ok(invoke("adapter", "export", "noise", exported, "--home", home))
    before = files(home)
    refused(invoke("adapter", "import", exported, "--task", "noise", "--home", home), "already has a trained adapter")
    assert files(home) == before
    ok(invoke("adapter", "import", exported, "--task", "noise", "--replace", "--home", home))
    assert [r["adapter"] for r in listing(home)] == ["trained"]
    assert len(list((home / "tasks" / "noise").glob("adapter-*.safetensors"))) == 1  # the old file went


def test_a_bit_flipped_adapter_is_never_used(home, tmp_path):
    path = adapter_file(home)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one bit of one tensor value: the file still parses
    path.write_bytes(bytes(data))
    images = make_pairs(tmp_path / "p", n=1) / "input"
    refused(
        invoke("restore", "--task", "noise", images, "-o", tmp_path / "out", "--home", home),
        "changed since it was stored",
    )
    refused(invoke("eval", "noise", "--home", home), "changed since it was stored")
    assert not (tmp_path / "out").exists()


def test_a_backbone_whose_tensors_disagree_with_its_own_fingerprint_is_refused(home, tmp_path):
    """A colora backbone file carries the fingerprint of its tensors: a changed tensor is not a new backbone."""

    def flip(t):
        t["intro.weight"][0, 0, 0, 0] += 0.5

    changed = rewrite(backbone_file(home), tmp_path / "changed.safetensors", tensors=flip)
    before = files(home)
    refused(invoke("backbone", "import", changed, "--name", "changed", "--home", home), "the file says")
    assert files(home) == before


@pytest.mark.parametrize("what", ["adapter", "backbone"])
def test_an_export_never_carries_weights_that_changed_in_the_store(home, tmp_path, what):
    path = adapter_file(home) if what == "adapter" else backbone_file(home)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one bit of one tensor value: the file still parses
    path.write_bytes(bytes(data))
    dest = tmp_path / "out.safetensors"
    args = ("adapter", "export", "noise") if what == "adapter" else ("backbone", "export", "random-tiny")
    refused(invoke(*args, dest, "--home", home), "changed since colora wrote it")
    assert not dest.exists() and not list(tmp_path.glob(".out.safetensors.*"))


@pytest.mark.parametrize("args", [("adapter", "export", "noise"), ("export-onnx", "noise"), ("export-model", "noise")])
def test_overwrite_replaces_only_regular_files(home, tmp_path, args):
    fifo = tmp_path / ("x.pth" if args[0] == "export-model" else "x.onnx")
    os.mkfifo(fifo)
    refused(invoke(*args, fifo, "--overwrite", "--home", home), "replaces only regular files")
    assert fifo.is_fifo()


# ---------------------------------------------------------------- 9, 10: read-only stores, outputs in the store


@pytest.fixture
def read_only(home, tmp_path):
    """`home` mounted read-only (a bind mount); skipped where this process may not mount."""
    mount = tmp_path / "ro"
    mount.mkdir()
    steps = (["mount", "--bind", str(home), str(mount)], ["mount", "-o", "remount,ro,bind", str(mount)])
    for step in steps:
        if subprocess.run(step, capture_output=True).returncode != 0:
            subprocess.run(["umount", str(mount)], capture_output=True)
            pytest.skip("cannot make a read-only bind mount here (needs root and mount rights)")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)  # in-process commands may still hold the file


def test_a_read_only_store_can_be_read_but_not_changed(read_only, tmp_path):
    assert [r["task"] for r in listing(read_only)] == ["noise"]
    ok(invoke("list", "--home", read_only))
    ok(invoke("task", "show", "noise", "--home", read_only))
    ok(invoke("backbone", "list", "--home", read_only))
    ok(invoke("doctor", "--home", read_only))
    images = make_pairs(tmp_path / "p", n=1) / "input"
    ok(invoke("restore", "--task", "noise", images, "-o", tmp_path / "out", "--home", read_only))
    refused(invoke("task", "rm", "noise", "--yes", "--home", read_only), "read-only")
    refused(invoke("eval", "noise", "--home", read_only), "read-only")


def test_outputs_inside_the_store_are_refused(home, tmp_path):
    before = files(home)
    images = make_pairs(tmp_path / "p", n=1) / "input"
    refused(
        invoke("restore", "--task", "noise", images, "-o", home / "tasks" / "noise", "--home", home), "inside the store"
    )
    refused(
        invoke("adapter", "export", "noise", backbone_file(home), "--overwrite", "--home", home), "inside the store"
    )
    refused(
        invoke("backbone", "export", "random-tiny", adapter_file(home), "--overwrite", "--home", home),
        "inside the store",
    )
    refused(invoke("eval", "noise", "--report", home / "report", "--home", home), "inside the store")
    assert files(home) == before


def test_an_output_folder_swapped_for_a_link_mid_run_is_never_written_through(home, tmp_path):
    from contextlib import contextmanager

    from colora.api.progress import Reporter
    from colora.api.restoring import restore_images
    from colora.store.store import Store

    images = make_pairs(tmp_path / "p", n=4) / "input"
    out, moved, trap = tmp_path / "out", tmp_path / "moved", home / "tasks" / "noise"
    before = files(home)

    class SwapAfterTheFirstImage(Reporter):
        @contextmanager
        def progress(self, description, total, *, loss=False):
            def update(done, loss=None):
                if done == 1:  # the folder renamed away, a link into the store in its place
                    out.rename(moved)
                    out.symlink_to(trap, target_is_directory=True)

            yield update

    outcome = restore_images(
        Store.open(home), "noise", [images], out, engine="torch", device="cpu", reporter=SwapAfterTheFirstImage()
    )
    assert files(home) == before  # nothing landed in the store
    assert outcome.failed == [] and sorted(p.name for p in moved.iterdir()) == sorted(p.name for p in images.iterdir())


def test_an_output_folder_inside_the_store_through_a_link_is_refused(home, tmp_path):
    before = files(home)
    link = tmp_path / "innocent"
    link.symlink_to(home / "tasks" / "noise", target_is_directory=True)
    images = make_pairs(tmp_path / "p", n=1) / "input"
    refused(invoke("restore", "--task", "noise", images, "-o", link, "--home", home), "inside the store")
    assert files(home) == before


# ---------------------------------------------------------------- 11: huge images


def bomb(path: Path, side: int = 10_000) -> Path:
    """A tiny PNG that claims side x side pixels (one colour, compressed to a few KB)."""
    Image.new("L", (side, side)).save(path, optimize=True)
    return path


def test_a_decompression_bomb_is_refused_at_once_and_quietly(home, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    assert bomb(folder / "bomb.png").stat().st_size < 200_000
    code, mb, stderr = peak_mb_of("restore", "--task", "noise", folder, "-o", tmp_path / "out", "--home", home)
    assert code == 1 and "too many pixels" in stderr and "--max-pixels" in stderr
    assert "DecompressionBomb" not in stderr and mb < BOUNDED_MB, f"{mb:.0f} MB"
    assert not (tmp_path / "out").exists()


def test_the_pixel_limit_can_be_set(home, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(folder / "a.png")
    args = ("restore", "--task", "noise", folder, "-o", tmp_path / "out", "--home", home)
    refused(invoke(*args, "--max-pixels", 1000), "too many pixels (50x40 = 2,000; the limit is 1,000)")
    monkeypatch.setenv("COLORA_MAX_PIXELS", "1000")
    refused(invoke(*args), "the limit is 1,000")
    ok(invoke(*args, "--max-pixels", 2000))
    monkeypatch.setenv("COLORA_MAX_PIXELS", "lots")
    refused(invoke(*args, "--overwrite"), "COLORA_MAX_PIXELS")


# ---------------------------------------------------------------- 13: the smaller ones


def test_validation_pairs_that_are_training_pairs_are_refused(home, tmp_path):
    pairs = make_pairs(tmp_path / "p", n=4)
    refused(invoke("task", "add", "same", pairs, "--val", pairs, "--home", home), "also training pairs")
    copy = make_pairs(tmp_path / "copy", n=4)  # the same images (same seed) under another folder
    refused(invoke("task", "add", "same", pairs, "--val", copy, "--home", home), "also training pairs")
    assert [r["task"] for r in listing(home)] == ["noise"]


def test_a_new_run_says_it_abandons_the_interrupted_one(home):
    from colora.store.status import RunStatus
    from colora.store.store import Store

    store = Store.open(home)
    task = store.task("noise")
    run = store.start_run(task, store.backbone(), json.dumps({"train": {}}))
    store.mark_run(run, RunStatus.INTERRUPTED)
    save_file({"x": torch.zeros(1)}, str(store.path(run.checkpoint_path)), metadata={"step": "7"})
    store.engine.dispose()
    result = ok(invoke("train", "noise", *FAST_TRAIN, "--home", home))
    assert f"interrupted run {run.id} of 'noise' (checkpoint at step 7) is abandoned" in err(result)


def test_list_json_is_strict_json_even_for_an_infinite_psnr(home):
    from colora.store.store import Store

    store = Store.open(home)
    task = store.task("noise")
    store.record_eval(
        task, store.backbone(), store.adapter(task), {"adapter": (float("inf"), 1.0, [["a", float("inf"), 1.0]])}
    )
    store.engine.dispose()
    text = out(ok(invoke("list", "--json", "--home", home)))
    assert "Infinity" not in text and json.loads(text)[0]["psnr"] is None


def test_written_weights_have_ordinary_permissions(home):
    mask = os.umask(0)
    os.umask(mask)
    assert adapter_file(home).stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_home_below_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "file").write_text("x")
    refused(invoke(*TINY_INIT, "--home", tmp_path / "file" / "store"))


def test_an_unreadable_folder_is_a_one_line_error(home, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads every folder")
    folder = make_pairs(tmp_path / "p", n=2)
    (folder / "input").chmod(0)
    try:
        refused(invoke("task", "add", "locked", folder, "--home", home))
    finally:
        (folder / "input").chmod(0o755)


def test_sqlite_error_text_is_explained():
    from colora.store.database import explain

    assert "damaged" in explain(sqlite3.DatabaseError("database disk image is malformed"), Path("/s")).message
    assert "read-only" in explain(sqlite3.OperationalError("attempt to write a readonly database"), Path("/s")).message
    missing = explain(sqlite3.OperationalError("no such table: x"), Path("/s"))
    assert "incomplete" in missing.message and "colora doctor --reindex" in missing.hint
    assert explain(sqlite3.OperationalError("near 'x': syntax error"), Path("/s")) is None  # colora's own bug


# ---------------------------------------------------------------- issue 16: do no harm


def test_an_adapter_worse_than_the_input_is_flagged_everywhere(tmp_path, isolated_home):
    ok(invoke(*TINY_INIT))
    clean = make_pairs(tmp_path / "p", n=5, noise=1.0)  # barely degraded: a random tiny net only harms them
    ok(invoke("task", "add", "faint", clean, "--val-fraction", "0.4"))
    ok(invoke("train", "faint", *FAST_TRAIN))
    result = ok(invoke("eval", "faint"))
    assert "Warning: the adapter of 'faint' is worse than the unrestored input" in err(result)
    row = json.loads(out(ok(invoke("list", "--json"))))[0]
    assert row["worse_than_input"] is True and "worse than the input" in row["adapter"]
    assert "worse than the input" in out(ok(invoke("list")))
    restored = ok(invoke("restore", "--task", "faint", clean / "input", "-o", tmp_path / "out"))
    assert "Warning: at its last evaluation the adapter of 'faint' was" in err(restored)
    ok(invoke("eval", "faint", "--report", tmp_path / "rep"))
    assert "Worse than the input" in (tmp_path / "rep" / "index.html").read_text(encoding="utf-8")


# ---------------------------------------------------------------- the red team's findings (a second hostile pass)


@pytest.mark.parametrize(
    "field, value",
    [
        ("format_version", "\u00b2"),
        ("format_version", "9" * 5000),
        ("extra", "[" * 100_000 + "]" * 100_000),
        ("rank_plan", '{"a":' * 50_000 + "1" + "}" * 50_000),
    ],
)
def test_odd_and_deeply_nested_metadata_is_refused_cleanly(home, tmp_path, field, value):
    evil = rewrite(adapter_file(home), tmp_path / "odd.safetensors", meta=lambda m: m.update({field: value}))
    refused(invoke("adapter", "import", evil, "--task", "fresh", "--home", home), "broken adapter metadata")


def test_two_imports_into_the_same_new_task_at_once_end_cleanly(home, tmp_path):
    exported = tmp_path / "a.safetensors"
    ok(invoke("adapter", "export", "noise", exported, "--home", home))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "colora", "adapter", "import", str(exported), "--task", "dup", "--home", str(home)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) in ([0, 0], [0, 1]), results
    for code, stderr in results:
        assert "unexpected" not in stderr and "Traceback" not in stderr and "INSERT" not in stderr, stderr
    assert len(list((home / "tasks" / "dup").glob("adapter-*.safetensors"))) == 1


def test_reindex_does_not_hang_on_a_fifo_in_the_store(home):
    os.mkfifo(home / "backbones" / "fifo.safetensors")
    p = subprocess.run(
        [sys.executable, "-m", "colora", "doctor", "--reindex", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr


def test_doctor_fix_keeps_files_that_only_look_temporary(home):
    precious = home / "backbones" / "precious.safetensors.part"
    precious.write_bytes(backbone_file(home).read_bytes())
    age(home)
    ok(invoke("doctor", "--fix", "--home", home))
    assert precious.exists()


def test_task_rm_without_an_answer_is_a_clean_refusal(home):
    refused(invoke("task", "rm", "noise", "--home", home, input=""), "not removed")
    assert [r["task"] for r in listing(home)] == ["noise"]


def test_newlines_in_metadata_cannot_make_fake_lines(home, tmp_path):
    evil = rewrite(adapter_file(home), tmp_path / "nl.safetensors", meta=lambda m: m.update(plan_method="uni\nform"))
    ok(invoke("adapter", "import", evil, "--task", "evil", "--home", home))
    table = out(ok(invoke("list", "--home", home)))
    assert "uni\\x0aform" in table and not any(line.strip().startswith("form") for line in table.splitlines())


# ---------------------------------------------------------------- bounds and names (trust, round two)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("train", "noise", "--batch-size", "100000"), "--batch-size"),
        (("train", "noise", "--rank", "100000"), "--rank"),
        (("backbone", "pretrain", "CLEAN", "--batch-size", "100000"), "--batch-size"),
    ],
)
def test_size_options_have_bounds_stated_in_help(home, tmp_path, args, fragment):
    args = tuple(str(tmp_path) if a == "CLEAN" else a for a in args)
    result = invoke(*args, "--home", home)
    assert result.exit_code == 2 and fragment in err(result) and "less than or equal to 256" in err(result)


def test_every_size_option_takes_exactly_its_stated_range(tmp_path):
    """Any integer: inside the bound the command gets past parsing (here to "no store"), outside it
    is a usage error (exit 2) naming the option; never a traceback, never a silent clamp."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from colora.core.choices import MAX_BATCH_SIZE, MAX_PATCH_SIZE, MAX_RANK, MIN_TILE

    empty = tmp_path / "no-store"
    cases = {
        "--batch-size": (("train", "x"), lambda n: 1 <= n <= MAX_BATCH_SIZE),
        "--rank": (("train", "x"), lambda n: 1 <= n <= MAX_RANK),
        "--patch-size": (("train", "x"), lambda n: 8 <= n <= MAX_PATCH_SIZE),
        "--tile": (("restore", "--task", "x", str(tmp_path), "-o", str(tmp_path / "o")), lambda n: n >= 0),
    }

    @settings(max_examples=60, deadline=None)
    @given(st.sampled_from(sorted(cases)), st.integers(-(10**9), 10**9) | st.integers(-3, 1100))
    def check(option, value):
        command, inside = cases[option]
        r = invoke(*command, option, str(value), "--home", empty)
        assert "Traceback" not in err(r) and "unexpected" not in err(r)
        if inside(value):
            assert r.exit_code == 1, err(r)  # past the parser: the store is missing (or the tile too small)
            assert "no colora store" in err(r) or (option == "--tile" and 0 < value < MIN_TILE)
        else:
            assert r.exit_code == 2 and option in err(r), err(r)

    check()


def test_a_tile_of_a_few_pixels_is_refused_before_any_work(home, tmp_path):
    images = make_pairs(tmp_path / "p", n=1) / "input"
    refused(
        invoke("restore", "--task", "noise", images, "-o", tmp_path / "out", "--tile", "1", "--home", home), "--tile"
    )
    assert not (tmp_path / "out").exists()


def test_core_bounds_hold_for_python_callers():
    from colora.core.errors import InvalidInputError
    from colora.core.inference.tiles import check_tile
    from colora.core.model.backbone import PRESETS, build_backbone
    from colora.core.model.lora import uniform_rank_plan
    from colora.core.training.loop import TrainConfig

    with pytest.raises(InvalidInputError):
        TrainConfig(batch_size=100_000).validate()
    with pytest.raises(InvalidInputError):
        uniform_rank_plan(build_backbone(PRESETS["tiny"]), 100_000)
    with pytest.raises(InvalidInputError):
        check_tile(3)
    assert check_tile(0) == 0 and check_tile(16) == 16


def test_a_name_with_a_trailing_newline_is_refused(home, tmp_path):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from colora.core.errors import InvalidInputError
    from colora.store.names import validate_slug

    refused(invoke("task", "add", "rain\n", make_pairs(tmp_path / "p"), "--home", home), "invalid task name")
    assert not (home / "tasks" / "rain\n").exists()

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=70))
    def only_plain_slugs_pass(name):
        try:
            validate_slug(name)
        except InvalidInputError:
            return
        assert name == name.strip() and "\n" not in name and "/" not in name and 1 <= len(name) <= 63

    only_plain_slugs_pass()


def test_a_killed_writer_s_old_temporary_file_is_tidied_by_the_next_write(tmp_path):
    import time

    from colora.core.files import STALE_TEMP_S, atomic_write
    from colora.core.output_folder import OutputFolder

    old, young, other = ".x.png.abcdEFGH.part", ".x.png.abcdEFGI.part", ".y.png.abcdEFGH.part"
    for name in (old, young, other):
        (tmp_path / name).write_text("left by a killed export")
    for name in (old, other):
        os.utime(tmp_path / name, (time.time() - STALE_TEMP_S - 60,) * 2)
    with atomic_write(tmp_path / "x.png") as tmp:
        tmp.write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == [young, other, "x.png"]  # only the old one, only x's
    (tmp_path / old).write_text("again")
    os.utime(tmp_path / old, (time.time() - STALE_TEMP_S - 60,) * 2)
    with OutputFolder.hold(tmp_path) as folder, folder.atomic_file("x.png", overwrite=True) as fp:
        fp.write(b"newer")
    assert sorted(p.name for p in tmp_path.iterdir()) == [young, other, "x.png"]


def test_distilling_a_zoo_of_one_is_refused_before_any_work(home):
    r = invoke("recycle", "distill", "--home", home)
    assert r.exit_code == 1 and "the zoo has 1 adapter(s); a meta-adapter needs at least 2" in err(r)
    assert "Distilling" not in err(r) + out(r) and not (home / "recycle").exists()
