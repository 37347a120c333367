"""LoRA invariants, in float64 on a tiny backbone."""

from __future__ import annotations

import copy

import pytest
import torch

from colora.core.errors import IntegrityError, InvalidInputError
from colora.core.model.backbone import PRESETS, build_backbone
from colora.core.model.lora import (
    adapter_state,
    inject_lora,
    lora_layers,
    lora_parameter_count,
    lora_targets,
    merge_all,
    uniform_rank_plan,
    unmerge_all,
)
from colora.core.model.weights import (
    AdapterMeta,
    apply_adapter,
    load_backbone,
    read_adapter,
    save_adapter,
    save_backbone,
    state_fingerprint,
)


def tiny64():
    return build_backbone(PRESETS["tiny"], seed=1).double().eval()


def randomise_lora(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=g, dtype=torch.float64))
            layer.lora_B.copy_(0.1 * torch.randn(layer.lora_B.shape, generator=g, dtype=torch.float64))


@pytest.fixture
def x():
    return torch.rand(2, 3, 20, 28, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


def test_targets_are_dense_convs_only():
    model = tiny64()
    targets = lora_targets(model)
    assert "intro" in targets and "encoders.0.0.conv1" in targets
    assert all(conv.groups == 1 for conv in targets.values())
    assert "encoders.0.0.conv2" not in targets  # depthwise


@pytest.mark.parametrize("mode", ["weight", "activation"])
def test_zero_b_adapter_equals_backbone(x, mode):
    base = tiny64()
    adapted = copy.deepcopy(base)
    inject_lora(adapted, uniform_rank_plan(adapted, 2), mode=mode)
    adapted.double()
    with torch.no_grad():
        assert torch.equal(adapted(x), base(x))


def test_weight_and_activation_forms_agree(x):
    a, b = tiny64(), tiny64()
    inject_lora(a, uniform_rank_plan(a, 3), mode="weight")
    inject_lora(b, uniform_rank_plan(b, 3), mode="activation")
    a.double(), b.double()
    randomise_lora(a), randomise_lora(b)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), atol=1e-10, rtol=0)


def test_merged_equals_unmerged_and_unmerge_is_exact(x):
    model = tiny64()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    inject_lora(model, uniform_rank_plan(model, 3))
    model.double()
    randomise_lora(model)
    with torch.no_grad():
        unmerged = model(x)
        merge_all(model)
        merged = model(x)
        assert all(layer.merged for layer in lora_layers(model).values())
        torch.testing.assert_close(merged, unmerged, atol=1e-10, rtol=0)
        unmerge_all(model)
    for path, layer in lora_layers(model).items():
        assert torch.equal(layer.base.weight, original[f"{path}.weight"])


def test_merge_refuses_non_finite():
    model = tiny64()
    inject_lora(model, {"intro": 2})
    layer = lora_layers(model)["intro"]
    with torch.no_grad():
        layer.lora_B.fill_(float("inf"))
    with pytest.raises(InvalidInputError, match="non-finite"):
        layer.merge()
    assert not layer.merged


def test_unknown_plan_path_is_an_error():
    model = tiny64()
    with pytest.raises(InvalidInputError, match="not LoRA targets"):
        inject_lora(model, {"encoders.0.0.conv2": 2})  # depthwise, not a target
    with pytest.raises(InvalidInputError, match="not LoRA targets"):
        inject_lora(model, {"no.such.layer": 2})


def test_only_lora_tensors_are_trainable_with_planned_shapes():
    model = tiny64()
    plan = {"intro": 2, "encoders.0.0.conv1": 5, "ending": 1}
    inject_lora(model, plan)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(trainable) == {f"{k}.lora_{ab}" for k in plan for ab in "AB"}
    assert trainable["encoders.0.0.conv1.lora_A"].shape[0] == 5
    assert trainable["intro.lora_A"].shape == (2, 3, 3, 3)  # same geometry as the base conv
    assert trainable["intro.lora_B"].shape == (8, 2, 1, 1)
    assert sum(p.numel() for p in trainable.values()) == lora_parameter_count(model, plan)


def test_save_load_round_trip_is_bit_exact(tmp_path, x):
    base = build_backbone(PRESETS["tiny"], seed=1)
    sha = state_fingerprint(base.state_dict())
    model = copy.deepcopy(base)
    plan = uniform_rank_plan(model, 2)
    inject_lora(model, plan)
    randomise_lora(model.double())
    model.float()
    meta = AdapterMeta(task="rain", backbone_sha256=sha, rank_plan=plan, plan_method="uniform", extra={"steps": 7})
    save_adapter(tmp_path / "a.safetensors", model, meta)
    tensors, loaded_meta = read_adapter(tmp_path / "a.safetensors")
    assert loaded_meta == meta
    for k, v in adapter_state(model).items():
        assert torch.equal(tensors[k], v)
    again = copy.deepcopy(base)
    apply_adapter(again, sha, tmp_path / "a.safetensors")
    with torch.no_grad():
        assert torch.equal(again(x.float()), model(x.float()))


def test_backbone_round_trip_and_fingerprint(tmp_path):
    model = build_backbone(PRESETS["tiny"], seed=4)
    sha = save_backbone(tmp_path / "b.safetensors", model)
    loaded, meta = load_backbone(tmp_path / "b.safetensors", expected_sha256=sha)
    assert meta["sha256"] == sha
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    with pytest.raises(IntegrityError, match="fingerprint"):
        load_backbone(tmp_path / "b.safetensors", expected_sha256="0" * 64)


def test_adapter_refuses_another_backbone(tmp_path):
    base = build_backbone(PRESETS["tiny"], seed=1)
    other = build_backbone(PRESETS["tiny"], seed=2)
    model = copy.deepcopy(base)
    inject_lora(model, uniform_rank_plan(model, 2))
    save_adapter(
        tmp_path / "a.safetensors",
        model,
        AdapterMeta(
            task="rain", backbone_sha256=state_fingerprint(base.state_dict()), rank_plan=uniform_rank_plan(base, 2)
        ),
    )
    with pytest.raises(IntegrityError, match="was trained on backbone"):
        apply_adapter(other, state_fingerprint(other.state_dict()), tmp_path / "a.safetensors")
    assert not lora_layers(other)  # nothing was injected


def test_pickle_file_is_refused(tmp_path):
    bad = tmp_path / "evil.safetensors"
    torch.save({"x": torch.zeros(1)}, bad)  # a pickle, named like safetensors
    with pytest.raises(InvalidInputError, match="not a valid safetensors"):
        read_adapter(bad)
