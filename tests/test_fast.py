"""The inference graph (core/model/fast.py), channels_last training, and the threaded restore pipeline."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colora.core.inference.pipeline import restore_many
from colora.core.inference.tiles import restore_tensor
from colora.core.model.backbone import PRESETS, BackboneConfig, LayerNorm2d, build_backbone
from colora.core.model.fast import FastNAFNet, for_inference
from colora.core.model.lora import inject_lora, lora_layers, merge_all, uniform_rank_plan
from helpers import textured

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def adapted(dtype=torch.float64, config=PRESETS["tiny"]):
    """A backbone with non-trivial block scales and norms, plus a merged adapter with non-zero B."""
    net = build_backbone(config, seed=0).to(dtype).eval()
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for name, p in net.named_parameters():
            if name.endswith(("beta", "gamma", "norm1.weight", "norm2.bias")):
                p.copy_(torch.rand(p.shape, generator=gen, dtype=dtype) + 0.2)
    torch.manual_seed(2)
    inject_lora(net, uniform_rank_plan(net, 2))
    with torch.no_grad():
        for layer in lora_layers(net).values():
            layer.lora_B.normal_(0, 0.1)
    merge_all(net)
    return net


@pytest.mark.parametrize("shape", [(1, 3, 32, 32), (1, 3, 23, 37), (3, 3, 16, 20)])
def test_fast_net_equals_the_eager_net_in_float64(shape):
    net = adapted()
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = net(x)
        got = FastNAFNet(net)(x)
    assert got.shape == expected.shape and got.is_contiguous()
    assert torch.allclose(got, expected, atol=1e-12, rtol=0)


def test_fast_net_with_adapter_deltas_equals_the_merged_adapter_exactly():
    from colora.core.model.lora import adapter_deltas, adapter_state

    base = build_backbone(PRESETS["tiny"], seed=0).double().eval()
    model = copy.deepcopy(base)
    torch.manual_seed(2)
    plan = uniform_rank_plan(model, 2)
    inject_lora(model, plan, alpha=3.0)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.normal_(0, 0.1)
    deltas = adapter_deltas(base, plan, 3.0, adapter_state(model))
    merge_all(model)
    x = torch.rand(1, 3, 20, 28, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(FastNAFNet(base, deltas)(x), FastNAFNet(model)(x))


def test_adapter_deltas_refuse_bad_tensors():
    from colora.core.errors import InvalidInputError
    from colora.core.model.lora import adapter_deltas

    base = build_backbone(PRESETS["tiny"], seed=0)
    plan = {"intro": 2}
    good = {"intro.lora_A": torch.zeros(2, 3, 3, 3), "intro.lora_B": torch.zeros(8, 2, 1, 1)}
    assert set(adapter_deltas(base, plan, None, good)) == {"intro"}
    for bad, message in (
        ({**good, "intro.lora_B": torch.zeros(8, 3, 1, 1)}, "has shape"),
        ({**good, "intro.lora_A": torch.full((2, 3, 3, 3), float("nan"))}, "NaN"),
        ({"intro.lora_A": good["intro.lora_A"]}, "do not match its rank plan"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            adapter_deltas(base, plan, None, bad)
    with pytest.raises(InvalidInputError, match="not LoRA targets"):
        adapter_deltas(base, {"nope": 1}, None, {})


def test_fast_net_float32_restore_path_matches_within_fp32_tolerance():
    net = adapted(torch.float32, BackboneConfig(width=8, enc_blocks=(1, 1, 1), middle_blocks=1, dec_blocks=(1, 1, 1)))
    image = torch.rand(3, 70, 90)
    with torch.no_grad():
        assert (
            restore_tensor(FastNAFNet(net), image, tile=32) - restore_tensor(net, image, tile=32)
        ).abs().max() < 1e-5


def test_fast_net_refuses_unmerged_lora_and_for_inference_falls_back():
    net = build_backbone(PRESETS["tiny"], seed=0)
    inject_lora(net, uniform_rank_plan(net, 1))
    with pytest.raises(ValueError, match="merged"):
        FastNAFNet(net)
    assert for_inference(net) is net
    merge_all(net)
    assert isinstance(for_inference(net), FastNAFNet)


def test_layernorm_channels_last_path_equals_the_reference():
    norm = LayerNorm2d(6).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    reference = norm(x)
    fused = norm(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(fused, reference, atol=1e-12, rtol=0)


def test_training_hands_the_model_back_in_the_default_memory_format(tmp_path):
    from colora.core.training.loop import TrainConfig, fit

    net = build_backbone(PRESETS["tiny"], seed=0)
    params = dict(net.named_parameters())
    x = torch.rand(2, 3, 16, 16)
    fit(net, params, lambda step, gen: (x, x), TrainConfig(steps=2, batch_size=2, patch_size=16))
    assert all(p.is_contiguous() for p in net.parameters())


def _write(folder: Path, name: str, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.fromarray(textured(np.random.default_rng(seed), 20, 24)).save(path)
    return path


def test_pipeline_restores_every_file_in_order_and_reports_a_failure_without_stopping(tmp_path):
    sources = [_write(tmp_path / "in", f"{i}.png", i) for i in range(5)]
    jobs = [(s, tmp_path / "out" / s.name) for s in sources]
    (tmp_path / "out").mkdir()
    seen = []

    def invert(src, image):
        from colora.core.errors import InvalidInputError

        seen.append(src.name)
        if src.name == "2.png":
            raise InvalidInputError("model says no")
        return 1 - image

    done = []
    failures = restore_many(jobs, invert, on_done=lambda n, src, error: done.append((n, src.name, error)))
    assert seen == [s.name for s in sources]
    assert failures == [(sources[2], "model says no")]
    assert [d[0] for d in done] == [1, 2, 3, 4, 5] and sorted(d[1] for d in done) == sorted(s.name for s in sources)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png", "1.png", "3.png", "4.png"]
    a = np.asarray(Image.open(tmp_path / "out" / "3.png")).astype(int)
    b = np.asarray(Image.open(sources[3])).astype(int)
    assert np.abs(a + b - 255).max() <= 1  # inverted, round-tripped through 8 bits


def test_pipeline_refuses_to_overwrite_and_reports_it(tmp_path):
    src = _write(tmp_path / "in", "a.png", 0)
    dst = tmp_path / "out" / "a.png"
    dst.parent.mkdir()
    dst.write_bytes(b"mine")
    failures = restore_many([(src, dst)], lambda s, image: image)
    assert len(failures) == 1 and "already exists" in failures[0][1]
    assert dst.read_bytes() == b"mine"
