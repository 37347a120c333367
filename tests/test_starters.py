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
    monkeypatch.setattr(bundled, "STARTERS_DIR", folder)
    r = ok(invoke("init", "--home", tmp_path / "h"))
    assert "Warning: starter-bad not installed:" in err(r)
    for name in ("deep", "huge-n", "huge-mean", "nosig"):
        assert f"starter-{name} installed, but its signature ({name}.json) is missing or damaged" in err(r)
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
