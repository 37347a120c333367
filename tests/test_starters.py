"""The starter adapters `colora init` installs with the bundled backbone: ordinary imported adapters
(checked like any import), each with the signature `restore --task auto` needs, and a damaged
package file costs that starter only."""

from __future__ import annotations

import json
import shutil

import pytest

from colora.core.model import bundled
from colora.core.model.bundled import STARTER_PREFIX, bundled_backbone, bundled_starters
from helpers import err, invoke, ok, out

pytestmark = pytest.mark.skipif(
    bundled_backbone() is None or not bundled_starters(), reason="no bundled backbone or starters in this checkout"
)


def _pin(folder):
    """A manifest for the files in `folder`, as bench/starters.py writes one (any bytes, no parsing)."""
    import hashlib

    def sha(path):
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None

    starters = {
        f.stem: {"adapter_sha256": sha(f), "signature_sha256": sha(f.with_suffix(".json"))}
        for f in folder.glob("*.safetensors")
    }
    manifest = json.loads((bundled.STARTERS_DIR / bundled.STARTERS_MANIFEST).read_text())
    (folder / bundled.STARTERS_MANIFEST).write_text(json.dumps({**manifest, "starters": starters}))


def _tasks(home) -> dict[str, dict]:
    return {row["task"]: row for row in json.loads(out(ok(invoke("list", "--json", "--home", home))))}


def test_init_installs_every_starter_as_a_task_without_pairs(tmp_path):
    from colora.api.models import backbone_model
    from colora.api.recycling import signatures
    from colora.store.store import Store

    r = ok(invoke("init", "--home", tmp_path / "h"))
    names = [name for name, _ in bundled_starters()]
    assert "Starter adapters: " + ", ".join(names) in err(r)
    rows = _tasks(tmp_path / "h")
    assert sorted(rows) == names and all(n.startswith(STARTER_PREFIX) for n in names)
    for row in rows.values():
        assert row["adapter"] == "trained" and row["train_pairs"] == 0
    store = Store.open(tmp_path / "h")
    backbone_row = store.backbone()
    found, skipped = signatures(store, backbone_row, backbone_model(store, backbone_row))
    assert sorted(found) == names and skipped == []  # shipped signatures: `--task auto` can pick each


def test_no_starters_installs_none(tmp_path):
    from colora.store.store import Store

    ok(invoke("init", "--no-starters", "--home", tmp_path / "h"))
    assert _tasks(tmp_path / "h") == {}
    assert Store.open(tmp_path / "h").backbone().name == bundled_backbone()[1]  # the bundled one, all the same


def test_random_init_installs_no_starters(tmp_path):
    ok(invoke("init", "--random-init", "--config", "tiny", "--home", tmp_path / "h"))
    assert _tasks(tmp_path / "h") == {}  # they belong to the bundled backbone


def test_a_damaged_starter_is_skipped_and_the_rest_installed(tmp_path, monkeypatch):
    folder = tmp_path / "starters"
    folder.mkdir()
    (_, good), *_ = bundled_starters()
    signature = json.loads(good.with_suffix(".json").read_text())
    for name in ("good", "deep", "huge-n", "huge-mean", "nosig"):
        shutil.copyfile(good, folder / f"{name}.safetensors")
    (folder / "good.json").write_text(json.dumps(signature))
    (folder / "deep.json").write_text("[" * 50_000)  # under the size bound, too deep for Python's parser
    (folder / "huge-n.json").write_text(json.dumps({**signature, "n": 10**400}))
    (folder / "huge-mean.json").write_text(json.dumps({**signature, "mean": [1e200] * len(signature["mean"])}))
    (folder / "bad.safetensors").write_bytes(b"\x00" * 8)  # not a safetensors file
    _pin(folder)  # the manifest pins the damaged files as they are: what is checked here is what follows it
    shutil.copyfile(good, folder / "unpinned.safetensors")  # a file the manifest does not list
    monkeypatch.setattr(bundled, "STARTERS_DIR", folder)
    r = ok(invoke("init", "--home", tmp_path / "h"))
    assert "Warning: starter-bad not installed:" in err(r)
    assert "starter-unpinned not installed: unpinned.safetensors is not listed in the package's starter" in err(r)
    for name in ("deep", "huge-n", "huge-mean", "nosig"):
        assert f"starter-{name} installed, but its signature ({name}.json) is missing, damaged or not the" in err(r)
    rows = _tasks(tmp_path / "h")
    assert sorted(rows) == ["starter-deep", "starter-good", "starter-huge-mean", "starter-huge-n", "starter-nosig"]
    assert not (tmp_path / "h" / "tasks" / "starter-bad").exists()
    assert ok(invoke("doctor", "--home", tmp_path / "h")).exit_code == 0

    from colora.api.models import backbone_model
    from colora.api.recycling import signatures
    from colora.store.store import Store

    store = Store.open(tmp_path / "h")
    found, skipped = signatures(store, store.backbone(), backbone_model(store, store.backbone()))
    assert sorted(found) == ["starter-good"] and len(skipped) == 4  # only the sound signature is a candidate


def test_the_shipped_manifest_pins_every_starter():
    from colora.api.starters import read_manifest
    from colora.core.files import sha256_file
    from colora.core.model.weights import load_backbone, read_adapter

    manifest = read_manifest(bundled.STARTERS_DIR)
    assert sorted(manifest["starters"]) == sorted(f.stem for _, f in bundled_starters())
    assert manifest["backbone_sha256"] == load_backbone(bundled_backbone()[0])[1]["sha256"]
    for _, file in bundled_starters():
        entry = manifest["starters"][file.stem]
        assert sha256_file(file) == entry["adapter_sha256"]
        assert sha256_file(file.with_suffix(".json")) == entry["signature_sha256"]
        assert read_adapter(file)[1].backbone_sha256 == manifest["backbone_sha256"]


def test_a_signature_swapped_for_another_starters_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "starters"
    shutil.copytree(bundled.STARTERS_DIR, folder)
    kinds = [f.stem for _, f in bundled_starters()]
    if len(kinds) < 2:
        pytest.skip("needs two starters")
    first, second = kinds[:2]
    shutil.copyfile(folder / f"{second}.json", folder / f"{first}.json")  # a valid signature, the wrong one
    monkeypatch.setattr(bundled, "STARTERS_DIR", folder)
    r = ok(invoke("init", "--home", tmp_path / "h"))
    assert f"starter-{first} installed, but its signature ({first}.json) is missing, damaged or not the" in err(r)


def _signed(home) -> list[str]:
    from colora.store.store import Store

    store = Store.open(home)
    return sorted(row.task.name for row in store.adapters(store.backbone()) if row.signature)


def test_adapter_starters_adds_what_the_store_lacks_and_nothing_else(tmp_path):
    home = tmp_path / "h"
    names = [name for name, _ in bundled_starters()]
    ok(invoke("init", "--no-starters", "--home", home))
    r = ok(invoke("adapter", "starters", "--home", home))
    assert f"Added {', '.join(names)}" in err(r)
    assert sorted(_tasks(home)) == names and _signed(home) == names
    r = ok(invoke("adapter", "starters", "--home", home))  # again: nothing to add
    assert "Added" not in err(r) and f"Already in the store, left as they are: {', '.join(names)}." in err(r)
    ok(invoke("task", "rm", names[0], "--yes", "--home", home))
    r = ok(invoke("adapter", "starters", "--home", home))
    assert f"Added {names[0]} " in err(r) and sorted(_tasks(home)) == names
    assert ok(invoke("doctor", "--home", home)).exit_code == 0


def test_adapter_starters_leaves_a_users_task_of_that_name_alone(tmp_path):
    from colora.store.store import Store

    home = tmp_path / "h"
    ok(invoke("init", "--no-starters", "--home", home))
    name = bundled_starters()[0][0]
    ok(invoke("adapter", "import", bundled_starters()[-1][1], "--task", name, "--home", home))  # another file
    before = Store.open(home).adapter(Store.open(home).task(name)).file_sha256
    r = ok(invoke("adapter", "starters", "--home", home))
    assert f"Task '{name}' is not the bundled starter (another adapter, or none): left as it is" in err(r)
    assert Store.open(home).adapter(Store.open(home).task(name)).file_sha256 == before


def test_adapter_starters_gives_back_signatures_a_reindex_dropped(tmp_path):
    home = tmp_path / "h"
    names = [name for name, _ in bundled_starters()]
    ok(invoke("init", "--home", home))
    (home / "colora.db").unlink()  # the index lost: rebuilt from the weight files, without signatures
    ok(invoke("doctor", "--reindex", "--home", home))
    assert sorted(_tasks(home)) == names and _signed(home) == []
    r = ok(invoke("adapter", "starters", "--home", home))
    assert f"Restored the signature of {', '.join(names)}" in err(r) and _signed(home) == names


def test_adapter_starters_adds_their_backbone_beside_the_default(tmp_path):
    from colora.api.backbones import install_random
    from colora.store.store import Store

    home = tmp_path / "h"
    ok(invoke("init", "--random-init", "--config", "tiny", "--home", home))
    install_random(Store.open(home), "tiny", 1, name=bundled_backbone()[1])  # its name taken by another one
    r = ok(invoke("adapter", "starters", "--home", home))
    store = Store.open(home)
    added = [b for b in store.backbones() if b.name.startswith(bundled_backbone()[1] + "-")]
    assert len(added) == 1 and f"Added backbone '{added[0].name}'" in err(r)
    assert store.default_backbone_name() == "random-tiny"  # the user's default stays
    assert all(store.adapter(store.task(n)).backbone.name == added[0].name for n, _ in bundled_starters())


def test_adapter_starters_without_a_manifest_says_so(tmp_path, monkeypatch):
    folder = tmp_path / "starters"
    shutil.copytree(bundled.STARTERS_DIR, folder)
    (folder / bundled.STARTERS_MANIFEST).write_text("{not json")
    monkeypatch.setattr(bundled, "STARTERS_DIR", folder)
    ok(invoke("init", "--no-starters", "--home", tmp_path / "h"))
    r = invoke("adapter", "starters", "--home", tmp_path / "h")
    assert r.exit_code == 1 and "starter manifest is missing or damaged" in err(r) and "Traceback" not in err(r)
    assert _tasks(tmp_path / "h") == {}


@pytest.mark.parametrize(
    "manifest",
    [
        "{not json",
        '{"starters": {}}',  # no backbone_sha256
        '{"backbone_sha256": 7, "starters": {}}',
        '{"backbone_sha256": "ab", "starters": []}',
    ],
)
def test_init_with_a_damaged_manifest_installs_no_starter_and_says_so_once(tmp_path, monkeypatch, manifest):
    folder = tmp_path / "starters"
    shutil.copytree(bundled.STARTERS_DIR, folder)
    (folder / bundled.STARTERS_MANIFEST).write_text(manifest)
    monkeypatch.setattr(bundled, "STARTERS_DIR", folder)
    r = ok(invoke("init", "--home", tmp_path / "h"))
    assert err(r).count("Warning:") == 1 and "starter manifest is missing or damaged" in err(r)
    assert _tasks(tmp_path / "h") == {}


def test_adapter_starters_adds_no_backbone_when_no_starter_file_is_pinned(tmp_path, monkeypatch):
    from colora.store.store import Store

    folder = tmp_path / "starters"
    shutil.copytree(bundled.STARTERS_DIR, folder)
    manifest = json.loads((folder / bundled.STARTERS_MANIFEST).read_text())
    for entry in manifest["starters"].values():
        entry["adapter_sha256"] = "0" * 64
    (folder / bundled.STARTERS_MANIFEST).write_text(json.dumps(manifest))
    monkeypatch.setattr(bundled, "STARTERS_DIR", folder)
    ok(invoke("init", "--random-init", "--config", "tiny", "--home", tmp_path / "h"))
    r = invoke("adapter", "starters", "--home", tmp_path / "h")
    assert r.exit_code == 1 and "no starter file matches the package's manifest" in err(r)
    assert [b.name for b in Store.open(tmp_path / "h").backbones()] == ["random-tiny"]


def test_init_on_a_store_without_starters_points_to_the_command(tmp_path):
    ok(invoke("init", "--no-starters", "--home", tmp_path / "h"))
    assert "`colora adapter starters` adds them" in err(ok(invoke("init", "--home", tmp_path / "h")))
    ok(invoke("adapter", "starters", "--home", tmp_path / "h"))
    assert "adapter starters" not in err(ok(invoke("init", "--home", tmp_path / "h")))
