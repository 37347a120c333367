"""colora adapters as Hugging Face PEFT LoRA adapters, checked with the real `peft` package."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from colora.core.model.backbone import PRESETS, build_backbone
from colora.core.model.lora import adapter_state, inject_lora, merge_all, uniform_rank_plan
from colora.core.model.weights import AdapterMeta, save_adapter, save_backbone
from helpers import TINY_INIT, err, invoke, ok

peft = pytest.importorskip("peft", reason="peft (dev extra) checks the PEFT format")


def busy_backbone(seed: int = 0):
    """A tiny NAFNet whose blocks all act (random beta and gamma), so every adapted layer shows."""
    net = build_backbone(PRESETS["tiny"], seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.normal_(0, 0.2)
    return net.eval()


def random_adapter(net, plan: dict[str, int], seed: int = 1):
    """A LoRA model with non-zero B (as after training) and its colora tensors."""
    model = copy.deepcopy(net)
    inject_lora(model, plan)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model, adapter_state(model)


@pytest.fixture
def store_with_adapter(tmp_path, isolated_home):
    """A store whose default backbone is `busy_backbone()` and whose task 'rain' holds an adapter
    with CoLoRA-like uneven ranks."""
    net = busy_backbone()
    backbone_file = tmp_path / "busy.safetensors"
    sha = save_backbone(backbone_file, net)
    ok(invoke(*TINY_INIT))
    ok(invoke("backbone", "import", backbone_file, "--name", "busy", "--default"))
    plan = uniform_rank_plan(net, 2)
    plan.update({"intro": 4, "encoders.0.0.conv1": 5, "middle_blks.0.conv4": 1, "ups.1.0": 3})
    model, tensors = random_adapter(net, plan)
    adapter = tmp_path / "rain.safetensors"
    save_adapter(adapter, model, AdapterMeta(task="rain", backbone_sha256=sha, rank_plan=plan, plan_method="faig"))
    ok(invoke("adapter", "import", adapter, "--task", "rain"))
    return net, model, tensors, plan


def stored_adapter(home: Path, task: str):
    from colora.api.models import adapter_file
    from colora.store.store import Store

    store = Store.open(home)
    return adapter_file(store, store.adapter(store.task(task)))


def test_exported_peft_adapter_loads_in_peft_and_computes_colora_s_merged_output(store_with_adapter, tmp_path):
    net, model, _, plan = store_with_adapter
    folder = tmp_path / "rain-peft"
    r = ok(invoke("adapter", "export", "rain", folder, "--format", "peft"))
    assert "peft format" in err(r)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and set(config["target_modules"]) == set(plan)
    assert config["rank_pattern"] == plan and config["alpha_pattern"] == {p: float(r) for p, r in plan.items()}
    peft_model = peft.PeftModel.from_pretrained(copy.deepcopy(net), str(folder)).eval()
    assert len([n for n, _ in peft_model.named_parameters() if "lora_A" in n]) == len(plan)
    merged = copy.deepcopy(model)
    merge_all(merged)
    x = torch.rand(2, 3, 37, 45, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        difference = (peft_model.double()(x) - merged.double()(x)).abs().max().item()
        effect = (merged(x) - net.double()(x)).abs().max().item()
    assert difference <= 1e-6 and effect > 1e-2  # equal, and the adapter does change the output


def test_peft_round_trip_loses_nothing(store_with_adapter, tmp_path, isolated_home):
    _, _, tensors, plan = store_with_adapter
    folder = tmp_path / "rain-peft"
    ok(invoke("adapter", "export", "rain", folder, "--format", "peft"))
    r = ok(invoke("adapter", "import", folder, "--task", "rain-again"))
    assert "trained for 'rain'" in err(r)
    back, meta = stored_adapter(isolated_home, "rain-again")
    assert meta.rank_plan == plan and meta.plan_method == "faig" and meta.task == "rain"
    assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors)


def test_an_adapter_made_by_peft_itself_imports_with_its_alphas(tmp_path, isolated_home):
    """rank_pattern, alpha_pattern and rsLoRA scalings are folded in: colora computes what PEFT computes."""
    net = busy_backbone(seed=3)
    backbone_file = tmp_path / "busy.safetensors"
    save_backbone(backbone_file, net)
    ok(invoke(*TINY_INIT))
    ok(invoke("backbone", "import", backbone_file, "--name", "busy", "--default"))
    targets = ["intro", "ending", "encoders.0.0.conv1", "encoders.1.0.conv4", "middle_blks.0.conv5", "downs.0"]
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=targets,
        rank_pattern={"encoders.0.0.conv1": 2},
        alpha_pattern={"ending": 3},
        use_rslora=True,
        init_lora_weights=True,
    )
    peft_model = peft.get_peft_model(copy.deepcopy(net), config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    folder = tmp_path / "from-peft"
    peft_model.save_pretrained(str(folder))
    r = ok(invoke("adapter", "import", folder, "--task", "peft-made"))
    assert "Imported the adapter into task 'peft-made'" in err(r)

    from colora.api.models import task_model
    from colora.store.store import Store

    store = Store.open(isolated_home)
    graph, meta = task_model(store, store.adapter(store.task("peft-made")))
    assert meta.rank_plan["encoders.0.0.conv1"] == 2 and meta.rank_plan["intro"] == 4 and meta.plan_method == "peft"
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert (graph(x) - peft_model.eval()(x)).abs().max().item() <= 1e-5  # float32 graphs, different op orders


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(use_dora=True), "uses DoRA (use_dora)"),
        (lambda c: c.update(bias="lora_only"), "trains biases"),
        (lambda c: c.update(peft_type="IA3"), "is not a PEFT LoRA config"),
        (lambda c: c["rank_pattern"].update(intro=7), "intro has rank 4, but its config says 7"),
    ],
)
def test_peft_configs_colora_cannot_represent_are_refused(edit, message, store_with_adapter, tmp_path, isolated_home):
    folder = tmp_path / "rain-peft"
    ok(invoke("adapter", "export", "rain", folder, "--format", "peft"))
    config = json.loads((folder / "adapter_config.json").read_text())
    edit(config)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    files = sorted(p.name for p in (isolated_home / "tasks").rglob("*"))
    r = invoke("adapter", "import", folder, "--task", "other")
    assert r.exit_code != 0 and message in err(r)
    assert sorted(p.name for p in (isolated_home / "tasks").rglob("*")) == files


def test_peft_export_refuses_to_replace_an_adapter_folder_without_overwrite(store_with_adapter, tmp_path):
    folder = tmp_path / "rain-peft"
    ok(invoke("adapter", "export", "rain", folder, "--format", "peft"))
    (folder / "adapter_config.json").write_text("{}")  # stands for another adapter's folder
    r = invoke("adapter", "export", "rain", folder, "--format", "peft")
    assert r.exit_code != 0 and "already holds a PEFT adapter" in err(r) and "--overwrite" in err(r)
    assert (folder / "adapter_config.json").read_text() == "{}"
    ok(invoke("adapter", "export", "rain", folder, "--format", "peft", "--overwrite"))
    assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "LORA"
    r = invoke("adapter", "export", "rain", tmp_path / "x", "--format", "onnx")
    assert r.exit_code == 2 and "'onnx' is not one of 'colora', 'peft'" in err(r)


@pytest.mark.parametrize(
    "alpha_pattern",
    [
        {"^encoders.0.0.conv1": 16},  # PEFT's documented anchored form
        {r"encoders\.\d+\.\d+\.conv\d": 16},  # a regular expression
        {"conv1": 3, "encoders.0.0.conv1": 9},  # the first key that matches wins
    ],
    ids=["anchored", "regex", "order"],
)
def test_peft_patterns_are_read_by_peft_s_own_rule(alpha_pattern, tmp_path, isolated_home):
    net = busy_backbone(seed=5)
    backbone_file = tmp_path / "busy.safetensors"
    save_backbone(backbone_file, net)
    ok(invoke(*TINY_INIT))
    ok(invoke("backbone", "import", backbone_file, "--name", "busy", "--default"))
    config = peft.LoraConfig(
        r=2,
        lora_alpha=4,
        target_modules=r".*(conv[1345]|downs\.\d+)$",
        alpha_pattern=alpha_pattern,
        rank_pattern={r"conv[45]": 3},
    )
    peft_model = peft.get_peft_model(copy.deepcopy(net), config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    peft_model.save_pretrained(str(tmp_path / "patterns"))
    ok(invoke("adapter", "import", tmp_path / "patterns", "--task", "patterns"))

    from colora.api.models import task_model
    from colora.store.store import Store

    store = Store.open(isolated_home)
    graph, meta = task_model(store, store.adapter(store.task("patterns")))
    assert meta.rank_plan["decoders.0.0.conv4"] == 3 and meta.rank_plan["encoders.0.0.conv1"] == 2
    x = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert (graph(x) - peft_model.eval()(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(init_lora_weights="pissa_niter_4"), "also changes the base weights"),
        (lambda c: c.update(use_rslora="true"), "use_rslora must be true or false"),
        (lambda c: c.update(use_dora="false"), "use_dora must be true or false, not the text 'false'"),
        (lambda c: c.update(alpha_pattern={"intro": 1e-300}), "not a number in [0.001, 10000]"),
        (lambda c: c.update(rank_pattern={r"(conv)\1": 2}), "has a pattern colora does not read"),
        (lambda c: c.update(alpha_pattern={"intro": 10**400}), "not a number in [0.001, 10000]"),
        (lambda c: c.update(layer_replication=[[0, 1]]), "layer replication"),
    ],
)
def test_more_peft_configs_are_refused_with_one_clear_line(edit, message, store_with_adapter, tmp_path):
    folder = tmp_path / "rain-peft"
    ok(invoke("adapter", "export", "rain", folder, "--format", "peft"))
    config = json.loads((folder / "adapter_config.json").read_text())
    edit(config)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    r = invoke("adapter", "import", folder, "--task", "other")
    assert r.exit_code == 1 and message in err(r)


def test_a_backtracking_bomb_in_a_pattern_key_imports_at_once(store_with_adapter, tmp_path):
    import time

    folder = tmp_path / "rain-peft"
    ok(invoke("adapter", "export", "rain", folder, "--format", "peft"))
    config = json.loads((folder / "adapter_config.json").read_text())
    # `re` alone spends minutes per layer on these (polynomial, then exponential backtracking)
    bombs = {".*" * 40 + "!": 1, "(a|.)*" * 12 + "!": 1, "(.*)*(.*)*!": 1}
    config["rank_pattern"] = {**bombs, **config["rank_pattern"]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    started = time.monotonic()
    ok(invoke("adapter", "import", folder, "--task", "bombed"))
    assert time.monotonic() - started < 30
    params = [
        json.loads(ok(invoke("task", "show", t, "--json")).stdout)["adapter"]["trainable_params"]
        for t in ("bombed", "rain")
    ]
    assert params[0] == params[1]  # no bomb matched a layer: every rank is the exported one


def test_a_peft_rank_beyond_colora_s_bound_is_refused_on_import(store_with_adapter, tmp_path, isolated_home):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "rain-peft"
    ok(invoke("adapter", "export", "rain", folder, "--format", "peft"))
    tensors = load_file(folder / "adapter_model.safetensors")
    tensors["base_model.model.encoders.0.0.conv1.lora_A.weight"] = torch.zeros(5000, 8, 1, 1)
    tensors["base_model.model.encoders.0.0.conv1.lora_B.weight"] = torch.zeros(16, 5000, 1, 1)
    save_file(tensors, folder / "adapter_model.safetensors")
    r = invoke("adapter", "import", folder, "--task", "huge")
    assert r.exit_code == 1 and "rank 5000; colora reads ranks up to 4096" in err(r)
    assert not (isolated_home / "tasks" / "huge").exists()
