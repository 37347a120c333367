"""ONNX export and the onnxruntime / OpenVINO restore engines (issue 14, interop part 3).

`colora export-onnx` writes the merged task model for any image size; `restore --engine` runs
an export cached in the store, and must give what PyTorch gives.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import copy_store, err, invoke, ok

pytest.importorskip("onnxruntime", reason='the ONNX tests need onnxruntime: pip install "colora[onnx]"')
pytestmark = pytest.mark.usefixtures("one_torch_thread")

ENGINES = ("onnxruntime", "openvino")


def fails(result, *fragments: str) -> str:
    """Exit 1, one `Error:` line (no traceback, nothing unexpected) holding every fragment, a hint."""
    message = err(result)
    assert result.exit_code == 1, f"exit {result.exit_code}\n{message}"
    lines = [line for line in message.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and not lines[0].startswith("Error: unexpected"), message
    assert "Hint: " in message, message
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def task_model(home: Path):
    from colora.api.models import task_model as build
    from colora.store.store import Store

    store = Store.open(home)
    return build(store, store.adapter(store.task("noise")))[0]


def pixels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p), dtype=np.int16) for p in sorted(folder.iterdir())}


def cache_files(home: Path) -> list[str]:
    folder = home / "cache" / "onnx"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# ---------------------------------------------------------------- export-onnx


def test_the_export_equals_colora_on_any_size_and_batch(trained_store, tmp_path):
    import torch

    from colora.core.inference.engines import OnnxRuntimeEngine

    file = tmp_path / "noise.onnx"
    before = cache_files(trained_store.home)  # other tests' restores may have cached exports there
    r = ok(invoke("export-onnx", "noise", file, "--home", trained_store.home))
    assert "max abs error" in err(r) and "onnxruntime" in err(r), err(r)
    reported = float(err(r).split("max abs error ")[1].split()[0])
    assert reported < 1e-4
    engine, model = OnnxRuntimeEngine(file), task_model(trained_store.home)
    gen = torch.Generator().manual_seed(1)
    # sizes the network pads (tiny: a multiple of 4) and one it does not; a batch of two
    for shape in [(1, 3, 37, 53), (1, 3, 1, 1), (1, 3, 17, 90), (1, 3, 32, 40), (2, 3, 21, 14)]:
        x = torch.rand(*shape, generator=gen)
        with torch.no_grad():
            ours = model(x)
        theirs = engine(x)
        assert theirs.shape == ours.shape
        assert float((theirs - ours).abs().max()) < 1e-4, shape
    assert cache_files(trained_store.home) == before  # a user's export is not the store's cache


def test_openvino_runs_the_exported_file_too(trained_store, tmp_path):
    pytest.importorskip("openvino", reason='needs openvino: pip install "colora[openvino]"')
    import torch

    from colora.core.inference.engines import OpenVinoEngine

    file = tmp_path / "noise.onnx"
    ok(invoke("export-onnx", "noise", file, "--home", trained_store.home))
    engine, model = OpenVinoEngine(file), task_model(trained_store.home)
    for shape in [(1, 3, 37, 53), (1, 3, 40, 32)]:
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            assert float((engine(x) - model(x)).abs().max()) < 1e-4, shape


def test_export_refuses_what_it_must_not_write(trained_store, tmp_path):
    home = trained_store.home
    existing = tmp_path / "there.onnx"
    existing.write_bytes(b"keep me")
    fails(invoke("export-onnx", "noise", existing, "--home", home), "already exists")
    assert existing.read_bytes() == b"keep me"
    ok(invoke("export-onnx", "noise", existing, "--overwrite", "--home", home))
    assert existing.read_bytes() != b"keep me"
    fails(invoke("export-onnx", "noise", home / "tasks" / "noise" / "model.onnx", "--home", home), "inside the store")
    fails(invoke("export-onnx", "noise", tmp_path, "--overwrite", "--home", home), "is a folder")
    fails(invoke("export-onnx", "ghost", tmp_path / "g.onnx", "--home", home), "ghost")
    assert not (home / "tasks" / "noise" / "model.onnx").exists() and not (tmp_path / "g.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_export_of_a_task_without_adapter_is_refused(trained_store, tmp_path):
    home = copy_store(trained_store.home, tmp_path / "home")
    shutil.rmtree(home / "cache", ignore_errors=True)  # as other tests' restores may have left it
    ok(invoke("task", "add", "fresh", trained_store.pairs, "--home", home))
    fails(invoke("export-onnx", "fresh", tmp_path / "f.onnx", "--home", home), "has no adapter yet")


# ---------------------------------------------------------------- restore --engine


@pytest.mark.parametrize("engine", ENGINES)
def test_restore_with_an_engine_gives_what_torch_gives(engine, trained_store, tmp_path):
    pytest.importorskip(engine, reason=f"needs {engine}")
    home = copy_store(trained_store.home, tmp_path / "home")  # the engine's export is cached in the store
    shutil.rmtree(home / "cache", ignore_errors=True)  # as other tests' restores may have left it
    src = trained_store.pairs / "input"

    def restore(out: str, *args):
        return ok(invoke("restore", "--task", "noise", src, "-o", tmp_path / out, "--home", home, *args))

    restore("torch", "--engine", "torch")
    r = restore("first", "--engine", engine)
    assert f"({engine})" in err(r) and "Exporting the model of 'noise'" in err(r)
    assert len(cache_files(home)) == 1
    r = restore("cached", "--engine", engine, "--tile", "24")  # tiles of 24 on 40 x 32 images
    assert "Exporting" not in err(r)
    restore("torch-tiled", "--engine", "torch", "--tile", "24")
    for ours, theirs in (("torch", "first"), ("torch-tiled", "cached")):
        a, b = pixels(tmp_path / ours), pixels(tmp_path / theirs)
        assert a.keys() == b.keys() and len(a) == 6
        assert max(int(np.abs(a[k] - b[k]).max()) for k in a) <= 1  # float rounding, at most one 8-bit step
    old = time.time() - 3600  # older than doctor's grace period: it looks at it
    for f in (home / "cache" / "onnx").iterdir():
        os.utime(f, (old, old))
    doctor = ok(invoke("doctor", "--home", home))
    assert "cached ONNX export" not in err(doctor) + doctor.stdout  # the current adapter's export


def test_a_damaged_cache_is_exported_again_and_old_exports_go(trained_store, tmp_path):
    pytest.importorskip("openvino", reason="needs openvino")
    home = copy_store(trained_store.home, tmp_path / "home")
    shutil.rmtree(home / "cache", ignore_errors=True)  # as other tests' restores may have left it
    args = ("restore", "--task", "noise", trained_store.pairs / "input", "--engine", "openvino", "--home", home)
    ok(invoke(*args, "-o", tmp_path / "a"))
    [name] = cache_files(home)
    cache = home / "cache" / "onnx"
    (cache / name).write_bytes(b"not a model")
    stale, other_task = cache / "noise-0123456789ab-plain.onnx", cache / "noise-x-0123456789ab-plain.onnx"
    for f in (stale, other_task):
        f.write_bytes(b"old")
    r = ok(invoke(*args, "-o", tmp_path / "b"))
    assert "Exporting" in err(r)
    assert pixels(tmp_path / "a").keys() == pixels(tmp_path / "b").keys()
    assert cache_files(home) == sorted([name, other_task.name])  # this task's old export pruned, not another's
    old = time.time() - 3600
    os.utime(other_task, (old, old))
    doctor = ok(invoke("doctor", "--home", home))  # a warning, not an error: exit 0
    assert "cached ONNX export" in err(doctor) + doctor.stdout


def test_a_tampered_cache_is_never_run_and_doctor_finds_it(trained_store, tmp_path):
    """A valid ONNX graph edited in the cache (here one weight changed a little) is not what colora
    wrote: its sha256 differs from the recorded one, so restore exports again instead of running it,
    and doctor reports the file (an error) until `--fix` removes it."""
    pytest.importorskip("openvino", reason="needs openvino")
    onnx = pytest.importorskip("onnx", reason="needs onnx to edit a graph")
    from onnx import numpy_helper

    home = copy_store(trained_store.home, tmp_path / "home")
    shutil.rmtree(home / "cache", ignore_errors=True)
    args = ("restore", "--task", "noise", trained_store.pairs / "input", "--engine", "openvino", "--home", home)
    ok(invoke(*args, "-o", tmp_path / "a"))
    [name] = cache_files(home)
    path = home / "cache" / "onnx" / name

    def tamper() -> None:
        model = onnx.load(str(path))
        weight = next(t for t in model.graph.initializer if numpy_helper.to_array(t).size > 8)
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.001, weight.name))
        onnx.save(model, str(path))

    tamper()
    r = ok(invoke(*args, "-o", tmp_path / "b", "--overwrite"))
    assert "Exporting" in err(r)  # not run: made again
    assert "cache_changed" not in ok(invoke("doctor", "--json", "--home", home)).stdout
    tamper()
    old = time.time() - 3600  # older than doctor's grace period: a young file may be a restore's, in flight
    os.utime(path, (old, old))
    found = invoke("doctor", "--home", home)
    assert found.exit_code == 1 and "changed since colora wrote it" in err(found) + found.stdout
    ok(invoke("doctor", "--fix", "--home", home))
    assert cache_files(home) == [] and ok(invoke("doctor", "--home", home))


def test_a_link_planted_in_the_cache_is_never_written_through(trained_store, tmp_path):
    pytest.importorskip("openvino", reason="needs openvino")
    home = copy_store(trained_store.home, tmp_path / "home")
    shutil.rmtree(home / "cache", ignore_errors=True)
    args = ("restore", "--task", "noise", trained_store.pairs / "input", "--engine", "openvino", "--home", home)
    ok(invoke(*args, "-o", tmp_path / "a"))
    [name] = cache_files(home)
    backbone = home / "backbones" / "random-tiny.safetensors"
    before = backbone.read_bytes()
    (home / "cache" / "onnx" / name).unlink()
    (home / "cache" / "onnx" / name).symlink_to(backbone)
    r = ok(invoke(*args, "-o", tmp_path / "b"))
    assert "used for this run only" in err(r)
    assert backbone.read_bytes() == before  # the link's target is untouched
    ok(
        invoke(
            "restore",
            "--task",
            "noise",
            trained_store.pairs / "input",
            "-o",
            tmp_path / "c",
            "--home",
            home,
            "--engine",
            "torch",
        )
    )


def test_engine_choices_and_their_errors(trained_store, tmp_path, monkeypatch):
    home = trained_store.home
    src = trained_store.pairs / "input"

    def restore(*args):
        return invoke("restore", "--task", "noise", src, "-o", tmp_path / "out", "--home", home, *args)

    bad = restore("--engine", "tensorrt")  # a usage error: Typer lists the choices
    assert bad.exit_code == 2 and "'tensorrt' is not one of 'auto', 'torch', 'onnxruntime', 'openvino'" in err(bad)
    fails(
        invoke("restore", "--task", "auto", src, "-o", tmp_path / "out", "--engine", "openvino", "--home", home),
        "--task auto restores with PyTorch only",
    )
    fails(restore("--engine", "openvino", "--device", "cuda"), "runs on the CPU")
    import colora.core.inference.engines as engines

    monkeypatch.setattr(engines, "PACKAGES", {"onnxruntime": "no_such_package_ort", "openvino": "no_such_package_ov"})
    for engine, extra in (("onnxruntime", "onnx"), ("openvino", "openvino")):
        r = restore("--engine", engine)
        fails(r, f"--engine {engine} needs the no_such_package")
        assert f'pip install "colora[{extra}]"' in err(r)
    assert not (tmp_path / "out").exists()
    r = ok(restore())  # auto without either engine: PyTorch
    assert "Restored 6 image(s)" in err(r) and "(openvino)" not in err(r) and "(onnxruntime)" not in err(r)


def test_auto_picks_the_fastest_installed_engine_on_the_cpu():
    from colora.api.exporting import AUTO_ORDER, resolve_engine
    from colora.core.inference.engines import installed

    expected = next((e for e in AUTO_ORDER if installed(e)), "torch")
    assert resolve_engine("auto", "cpu", "noise") == expected
    assert resolve_engine("auto", "cpu", "auto") == "torch"  # --task auto: PyTorch only
    assert resolve_engine("torch", "cpu", "noise") == "torch"
