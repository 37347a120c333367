"""LoRA Recycle: exact mixtures of zoo adapters, baking, fitting, the meta-adapter, and the CLI."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from safetensors import safe_open

from colora.core.model.backbone import PRESETS, build_backbone
from colora.core.model.lora import inject_lora, lora_layers, merge_all, uniform_rank_plan
from colora.core.model.weights import AdapterMeta
from colora.core.recycle.meta import MetaNet, _Episodes, distill, predict
from colora.core.recycle.mixture import (
    KEEP_INPUT,
    Mixture,
    ZooAdapter,
    apply_mixture,
    bake,
    fast_mixed,
    fit_mixture,
    keep_input_component,
    mixture_forward,
    score_on_support,
    stage_groups,
    support_crops,
    with_keep_input,
    zoo_adapter,
)
from helpers import FAST_TRAIN, err, invoke, ok, out, textured

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(dtype=torch.float64, seed=0):
    net = build_backbone(PRESETS["tiny"], seed=seed).to(dtype).eval()
    with torch.no_grad():  # non-zero block scales, so every layer matters
        for name, p in net.named_parameters():
            if name.endswith(("beta", "gamma")):
                p.fill_(0.5)
    return net


def random_adapter(net, name: str, rank: int, seed: int, dtype=torch.float64):
    """A LoRA adapter with non-zero B (as after training), as tensors + metadata."""
    model = copy.deepcopy(net)
    plan = uniform_rank_plan(model, rank)
    torch.manual_seed(seed)
    inject_lora(model, plan)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.normal_(0, 0.1)
    tensors = {
        f"{p}.lora_{ab}": getattr(layer, f"lora_{ab}").detach().clone()
        for p, layer in lora_layers(model).items()
        for ab in "AB"
    }
    meta = AdapterMeta(task=name, backbone_sha256="x", rank_plan=plan)
    return model, zoo_adapter(name, tensors, meta, net, dtype)


def test_mixture_of_one_adapter_with_coefficient_one_is_that_adapter_exactly():
    net = tiny()
    model, z = random_adapter(net, "a", 2, seed=1)
    _, other = random_adapter(net, "b", 3, seed=2)
    x = torch.rand(2, 3, 20, 28, dtype=torch.float64)
    one = Mixture(["a", "b"], ["all"], torch.tensor([[1.0], [0.0]], dtype=torch.float64))
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(mixture_forward(net, [z, other], one, x), expected)
        merged = copy.deepcopy(model)
        merge_all(merged)
        assert torch.equal(apply_mixture(copy.deepcopy(net), [z, other], one)(x), merged(x))


@pytest.mark.parametrize("per_stage", [False, True])
def test_fast_mixed_graph_equals_the_backbone_with_the_mixture_applied(per_stage):
    # fit_mixture and score_on_support score candidates through it instead of a model copy each
    net = tiny(torch.float32)
    zoo = [random_adapter(net, n, r, seed=s, dtype=torch.float32)[1] for n, r, s in (("a", 2, 1), ("b", 3, 2))]
    zoo = with_keep_input(net, zoo)
    groups = stage_groups(zoo) if per_stage else ["all"]
    coef = torch.rand(3, len(groups), generator=torch.Generator().manual_seed(5))
    coef[0] = 0.0  # an adapter left out entirely
    mixture = Mixture([z.name for z in zoo], groups, coef)
    x = torch.rand(2, 3, 24, 32)
    with torch.no_grad():
        expected = apply_mixture(copy.deepcopy(net), zoo, mixture)(x)
        assert torch.allclose(fast_mixed(net, zoo, mixture)(x), expected, atol=1e-5, rtol=0)
        assert not torch.allclose(fast_mixed(net, zoo, mixture)(x), net(x), atol=1e-3, rtol=0)


@pytest.mark.parametrize("per_stage", [False, True])
def test_baked_adapter_reproduces_the_mixture(per_stage):
    net = tiny()
    # ranks 3 + 4 + 5 exceed the full rank (8) of the width-8 1x1 convs: those layers take the SVD path
    zoo = [random_adapter(net, n, r, seed=s)[1] for n, r, s in (("a", 3, 1), ("b", 4, 2), ("c", 5, 3))]
    groups = stage_groups(zoo) if per_stage else ["all"]
    coef = torch.randn(3, len(groups), dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    mixture = Mixture(["a", "b", "c"], groups, coef)
    tensors, plan = bake(net, zoo, mixture, dtype=torch.float64)
    assert any(r < 12 for r in plan.values()) and any(r == 12 for r in plan.values())  # both paths taken
    baked = copy.deepcopy(net)
    inject_lora(baked, plan)
    from colora.core.model.lora import load_adapter_state

    load_adapter_state(baked, tensors)
    x = torch.rand(1, 3, 24, 24, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(baked(x), mixture_forward(net, zoo, mixture, x), atol=1e-12, rtol=0)


def test_fit_mixture_finds_the_adapter_that_made_the_targets():
    net = tiny(torch.float32)
    models_zoo = [random_adapter(net, n, 2, seed=s, dtype=torch.float32) for n, s in (("a", 1), ("b", 2), ("c", 3))]
    zoo = [z for _, z in models_zoo]
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.rand(3, 32, 32, generator=gen) for _ in range(3)]
    with torch.no_grad():
        pairs = [(x, models_zoo[1][0](x[None])[0].clamp(0, 1)) for x in inputs]
    mixture = fit_mixture(net, zoo, pairs, crop=32)
    c = mixture.coef[:, 0]
    assert abs(float(c[1]) - 1) < 0.1 and float(c[0]) < 0.02 and float(c[2]) < 0.02, c
    assert (c >= 0).all() and mixture.info["support_mse"] < 0.05 * mixture.info["support_mse_backbone"]
    refined = fit_mixture(net, zoo, pairs, crop=32, per_stage=True, steps=5)
    assert refined.coef.shape == (3, len(stage_groups(zoo))) and (refined.coef >= 0).all()
    assert refined.info["steps"] == 5 and refined.info["support_mse"] < 0.05 * refined.info["support_mse_backbone"]


def test_fit_mixture_is_never_worse_than_the_backbone_alone_on_its_examples():
    net = tiny(torch.float32)
    zoo = [random_adapter(net, n, 2, seed=s, dtype=torch.float32)[1] for n, s in (("a", 1), ("b", 2))]
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.rand(3, 32, 32, generator=gen) for _ in range(2)]
    with torch.no_grad():  # the backbone's own outputs as targets: no adapter can help
        pairs = [(x, net(x[None])[0].clamp(0, 1)) for x in inputs]
    mixture = fit_mixture(net, zoo, pairs, crop=32)
    assert torch.equal(mixture.coef, torch.zeros(2, 1)), mixture.info["choice"]
    assert mixture.info["support_mse"] <= mixture.info["support_mse_backbone"]


def test_keep_input_takes_back_that_share_of_the_backbones_correction_and_bakes_exactly():
    net = tiny()
    keep = keep_input_component(net)
    _, other = random_adapter(net, "a", 3, seed=1)  # touches `ending` too: its baked rank exceeds 3 (SVD path)
    x = torch.rand(2, 3, 24, 24, dtype=torch.float64)
    bias = net.ending.bias.detach()[None, :, None, None]
    with torch.no_grad():
        y0 = net(x)
        for c in (0.0, 0.3, 1.0):  # x + (1 - c) * W*features + bias: linear in c, the input (plus bias) at 1
            mixed = mixture_forward(
                net, [keep], Mixture([KEEP_INPUT], ["all"], torch.tensor([[c]], dtype=torch.float64)), x
            )
            assert torch.allclose(mixed, y0 - c * (y0 - x - bias), atol=1e-12, rtol=0)
        mixture = Mixture(["a", KEEP_INPUT], ["all"], torch.tensor([[0.7], [0.4]], dtype=torch.float64))
        tensors, plan = bake(net, [other, keep], mixture, dtype=torch.float64)
        assert plan["ending"] == 3  # full rank of a 3-channel output conv
        baked = copy.deepcopy(net)
        inject_lora(baked, plan)
        from colora.core.model.lora import load_adapter_state

        load_adapter_state(baked, tensors)
        assert torch.allclose(baked(x), mixture_forward(net, [other, keep], mixture, x), atol=1e-12, rtol=0)


def test_fit_mixture_finds_how_much_of_the_correction_to_keep():
    net = tiny(torch.float32)
    zoo = [random_adapter(net, n, 2, seed=s, dtype=torch.float32)[1] for n, s in (("a", 1), ("b", 2))]
    zoo = with_keep_input(net, zoo)
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.rand(3, 32, 32, generator=gen) for _ in range(3)]
    with torch.no_grad():  # a mild degradation: the targets lie halfway between the backbone's output and its input
        keep = Mixture([z.name for z in zoo], ["all"], torch.tensor([[0.0], [0.0], [0.5]]))
        pairs = [(x, mixture_forward(net, zoo, keep, x[None])[0].clamp(0, 1)) for x in inputs]
    mixture = fit_mixture(net, zoo, pairs, crop=32)
    c = mixture.coef[:, 0]
    assert mixture.names[-1] == KEEP_INPUT and abs(float(c[2]) - 0.5) < 0.05 and float(c[:2].max()) < 0.02, c
    assert mixture.info["support_mse"] < 0.01 * mixture.info["support_mse_backbone"]


def test_warm_start_starts_each_layer_at_the_best_rank_r_approximation_of_the_mixture():
    from colora.core.recycle.mixture import mixture_deltas
    from colora.core.recycle.warm_start import warm_start_lora

    net = tiny()
    zoo = [random_adapter(net, n, r, seed=s)[1] for n, r, s in (("a", 2, 1), ("b", 3, 2))]
    mixture = Mixture(["a", "b"], ["all"], torch.tensor([[0.6], [0.0]], dtype=torch.float64))
    deltas = mixture_deltas(zoo, mixture)
    assert set(deltas) == set(zoo[0].deltas) and all(torch.equal(deltas[p], 0.6 * zoo[0].deltas[p]) for p in deltas)
    plan = {path: 2 for path in deltas}  # rank 2 holds adapter a's rank-2 deltas exactly
    plan |= {path: 1 for path in list(deltas)[:3]}  # rank 1 keeps the leading singular direction only
    model = copy.deepcopy(net)
    inject_lora(model, plan)
    kept = warm_start_lora(model, {p: d for p, d in deltas.items() if p != "ending"})
    for path, layer in lora_layers(model).items():
        got = layer.delta_weight().reshape(layer.lora_B.shape[0], -1)
        if path == "ending":  # no delta given: LoRA's usual zero start
            assert not layer.lora_B.any() and path not in kept
            continue
        want = deltas[path].reshape(got.shape[0], -1)
        u, sv, vh = torch.linalg.svd(want, full_matrices=False)
        r = plan[path]
        assert torch.allclose(got, (u[:, :r] * sv[:r]) @ vh[:r], atol=1e-10), path
        assert abs(kept[path] - float(sv[:r].pow(2).sum() / sv.pow(2).sum())) < 1e-9
    assert min(kept.values()) < 0.999 and max(kept.values()) > 0.999999


def test_keep_input_never_takes_back_more_than_the_whole_correction():
    from colora.core.recycle.mixture import only_the_input

    net = tiny(torch.float32)
    zoo = with_keep_input(net, [random_adapter(net, "a", 2, seed=1, dtype=torch.float32)[1]])
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.rand(3, 32, 32, generator=gen) for _ in range(2)]
    with torch.no_grad():  # targets beyond the input, away from the backbone: c > 1 would fit them better
        far = Mixture([z.name for z in zoo], ["all"], torch.tensor([[0.0], [1.6]]))
        pairs = [(x, mixture_forward(net, zoo, far, x[None])[0].clamp(0, 1)) for x in inputs]
    for kwargs in ({}, {"per_stage": True, "steps": 15, "lr": 0.5}):
        mixture = fit_mixture(net, zoo, pairs, crop=32, **kwargs)
        assert 0.9 < float(mixture.coef[1].max()) <= 1.0, (kwargs, mixture.coef)
    assert only_the_input(Mixture(["a", KEEP_INPUT], ["all"], torch.tensor([[0.0], [1.0]])))
    assert not only_the_input(Mixture(["a", KEEP_INPUT], ["all"], torch.tensor([[0.0], [0.6]])))
    assert not only_the_input(Mixture(["a", KEEP_INPUT], ["all"], torch.tensor([[0.2], [1.0]])))


def test_nonnegative_least_squares_meets_its_optimality_conditions():
    from colora.core.recycle.mixture import nonnegative_least_squares

    g = torch.randn(30, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    gram, rhs = g.T @ g, torch.randn(6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    c = nonnegative_least_squares(gram, rhs)
    grad = gram @ c - rhs
    assert (c >= 0).all() and (c > 0).any() and (c == 0).any()
    assert torch.allclose(grad[c > 0], torch.zeros_like(grad[c > 0]), atol=1e-8) and (grad[c == 0] >= -1e-8).all()


def _textured_clean(n: int, size: int = 64) -> list[torch.Tensor]:
    return [
        torch.from_numpy(textured(np.random.default_rng(i), size, size)).permute(2, 0, 1).float() / 255
        for i in range(n)
    ]


def test_untrained_meta_adapter_predicts_the_linear_fit_over_the_zoo_and_keep_input():
    from colora.core.recycle.meta import support_sample
    from colora.core.recycle.mixture import Responses, linearised_fit

    net = tiny(torch.float32)
    zoo = [random_adapter(net, n, 2, seed=s, dtype=torch.float32)[1] for n, s in (("a", 1), ("b", 2))]
    clean = _textured_clean(2, 96)
    pairs = [((c + 0.1 * torch.randn_like(c)).clamp(0, 1), c) for c in clean]
    mixture, mixed = predict(MetaNet(), net, zoo, pairs, seed=3)
    assert [z.name for z in mixed] == ["a", "b", KEEP_INPUT] and mixture.names == ["a", "b", KEEP_INPUT]
    assert mixture.coef.shape == (3, 1) and mixture.info["method"] == "meta"
    # the same crops, the same linearised least squares: an undistilled net changes nothing
    responses = Responses(net, mixed)
    x, y = support_sample(pairs, torch.Generator().manual_seed(3))
    assert x.shape == (8, 3, 48, 48)  # a few small crops, not the whole examples
    y0, d = responses(x)
    expected = linearised_fit(d, (y - y0).reshape(-1).double()).float()
    expected[2] = expected[2].clamp(max=1.0)
    assert torch.allclose(mixture.coef[:, 0], expected, atol=1e-5)


def test_responses_give_the_keep_input_direction_without_running_a_network():
    from colora.core.model.fast import FastNAFNet
    from colora.core.recycle.mixture import Responses, with_keep_input

    net = tiny(torch.float64)
    with torch.no_grad():
        net.ending.bias.copy_(torch.tensor([0.01, -0.02, 0.03], dtype=torch.float64))
    full = with_keep_input(net, [random_adapter(net, "a", 2, seed=1)[1]])
    responses = Responses(net, full)
    assert responses.adapters[1] is None  # the shortcut, not an eleventh network
    x = torch.rand(2, 3, 20, 28, dtype=torch.float64)  # not a multiple of the U-Net's stride: padding crops away
    y0, d = responses(x)
    # what the baked delta (-W of the last conv) gives when it is run as a network
    expected = (FastNAFNet(net, full[1].deltas)(x) - y0).reshape(-1)
    assert torch.allclose(d[:, 1], expected, atol=1e-12)
    assert torch.allclose(d[:, 1], (x + net.ending.bias.view(1, 3, 1, 1) - y0).reshape(-1))


def test_meta_adapter_is_the_same_for_any_zoo_order():
    from colora.core.recycle.meta import caps

    torch.manual_seed(0)
    meta = MetaNet()
    for p in meta.head[-1].parameters():  # a distilled-looking net, not the zero-initialised start
        torch.nn.init.normal_(p, std=0.3)
    feats, episode = torch.rand(3, 6), torch.rand(4)
    feats[:, 5] = torch.tensor([0.0, 0.0, 1.0])
    cap = torch.tensor([math.inf, math.inf, 1.0])
    order = torch.tensor([2, 0, 1])
    with torch.no_grad():
        assert torch.allclose(meta(feats, episode, cap)[order], meta(feats[order], episode, cap[order]), atol=1e-6)
        coef = meta(feats, episode, cap)
    assert (coef >= 0).all() and float(coef[2]) <= 1.0
    assert caps([ZooAdapter("x", {}, {}), ZooAdapter(KEEP_INPUT, {}, {})]).tolist() == [math.inf, 1.0]


def test_meta_adapter_files_of_another_format_version_are_refused_with_a_hint():
    from colora.core.errors import InvalidInputError
    from colora.core.recycle.meta import META_FORMAT_VERSION, OLDEST_META_FORMAT_VERSION, load_meta, meta_metadata

    state = {k: v.contiguous() for k, v in MetaNet().state_dict().items()}
    metadata = meta_metadata("f" * 64, [{"task": "a", "file_sha256": ""}], 3, [0.1])
    net, info = load_meta(state, metadata)
    assert isinstance(net, MetaNet) and info["steps"] == 3
    for version, message in (
        (OLDEST_META_FORMAT_VERSION - 1, "older colora"),
        (META_FORMAT_VERSION + 1, "newer colora"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            load_meta(state, {**metadata, "format_version": str(version)})
    with pytest.raises(InvalidInputError, match="not a number"):
        load_meta(state, {**metadata, "format_version": "2x"})
    with pytest.raises(InvalidInputError, match="malformed"):
        load_meta(state, {**metadata, "zoo": "[not json"})
    with pytest.raises(InvalidInputError, match="do not fit"):
        load_meta({"embed.0.weight": torch.zeros(2, 2)}, metadata)


def test_meta_adapter_reads_the_examples_through_the_support_it_was_distilled_with():
    from colora.core.errors import InvalidInputError
    from colora.core.recycle.meta import load_meta, meta_metadata, support_sample

    net = tiny(torch.float32)
    zoo = [random_adapter(net, n, 2, seed=s, dtype=torch.float32)[1] for n, s in (("a", 1), ("b", 2))]
    meta, curve = distill(net, zoo, _textured_clean(3), steps=2, crop=32, query=2, max_k=2, support=(32, 3))
    assert meta.support == (32, 3)
    x, _ = support_sample(list(zip(_textured_clean(2, 96), _textured_clean(2, 96))), torch.Generator(), (32, 3))
    assert x.shape == (3, 3, 32, 32)
    # the file records it; a file from before it was recorded reads 8 crops of 64², as it was distilled
    state = {k: v.contiguous() for k, v in meta.state_dict().items()}
    metadata = meta_metadata("f" * 64, [{"task": "a", "file_sha256": ""}], 2, curve, support=meta.support)
    loaded, info = load_meta(state, metadata)
    assert loaded.support == info["support"] == (32, 3)
    old = {**{k: v for k, v in metadata.items() if not k.startswith("support")}, "format_version": "2"}
    assert load_meta(state, old)[0].support == (64, 8)
    with pytest.raises(InvalidInputError, match="malformed"):  # format 3 must say which crops it read
        load_meta(state, {k: v for k, v in metadata.items() if k != "support_crop"})
    # a file's values are untrusted: a huge support would allocate without bound
    for bad in ({"support_crops": "100000"}, {"support_crop": "1"}, {"support_crop": "64.5"}):
        with pytest.raises(InvalidInputError, match="malformed"):
            load_meta(state, {**metadata, **bad})


def test_meta_adapter_distillation_learns_the_scale_the_linear_fit_misses():
    from colora.core.recycle.meta import episode_loss
    from colora.core.recycle.mixture import Responses, with_keep_input

    net = tiny(torch.float32)
    zoo = [random_adapter(net, n, 2, seed=s, dtype=torch.float32)[1] for n, s in (("a", 1), ("b", 2))]
    clean = _textured_clean(3)
    meta, curve = distill(net, zoo, clean, steps=6, crop=32, query=2, max_k=2, lr=1e-2)
    assert len(curve) == 6 and all(np.isfinite(curve))
    # a task whose answer is adapter a at 1.6: the linear fit (ridge, L1 pull) stops short of it;
    # episodes of that task teach the net to scale its coefficients up, towards the answer
    full = with_keep_input(net, zoo)
    responses = Responses(net, full)
    x = torch.stack(clean)[:, :, :32, :32]
    answer = Mixture(["a", "b", KEEP_INPUT], ["all"], torch.tensor([[1.6], [0.0], [0.0]]))
    with torch.no_grad():
        y = mixture_forward(net, full, answer, x)
    episode = (x[:2], y[:2], torch.ones(2), x[2:], y[2:])
    meta = MetaNet()
    opt = torch.optim.Adam(meta.parameters(), lr=1e-2)
    with torch.no_grad():
        before = float(episode_loss(meta, net, full, responses, episode, torch.Generator()))
        start, _ = predict(meta, net, zoo, list(zip(x[:2], y[:2])))
    for _ in range(30):
        loss = episode_loss(meta, net, full, responses, episode, torch.Generator())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(episode_loss(meta, net, full, responses, episode, torch.Generator()))
        learned, _ = predict(meta, net, zoo, list(zip(x[:2], y[:2])))
    assert float(start.coef[0, 0]) < 1.5  # the linear fit alone falls short
    assert after < before and abs(float(learned.coef[0, 0]) - 1.6) < abs(float(start.coef[0, 0]) - 1.6)


def test_dead_leaves_images_are_deterministic_in_range_and_varied():
    from colora.core.recycle.surrogate import dead_leaves

    a = dead_leaves(3, 40, torch.Generator().manual_seed(5))
    b = dead_leaves(3, 40, torch.Generator().manual_seed(5))
    c = dead_leaves(3, 40, torch.Generator().manual_seed(6))
    assert a.shape == (3, 3, 40, 40) and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    # edges, but not noise: most neighbouring pixels agree (uniform noise: almost none do)
    edges = (a[..., 1:] - a[..., :-1]).abs().amax(1) > 0.05
    assert 0.02 < float(edges.float().mean()) < 0.6


def test_inverted_inputs_are_what_their_adapter_restores_and_the_backbone_does_not():
    from colora.core.recycle.surrogate import dead_leaves, invert_adapter

    net = tiny(torch.float32)
    zoo = [random_adapter(net, n, 2, seed=s, dtype=torch.float32)[1] for n, s in (("a", 1), ("b", 2))]
    gen = torch.Generator().manual_seed(0)
    targets = dead_leaves(2, 32, gen)
    start = invert_adapter(net, zoo, 1, targets, steps=0, budget=0.2, gen=copy.deepcopy(gen))  # the noisy start
    inverted = invert_adapter(net, zoo, 1, targets, steps=25, budget=0.2, gen=gen)
    assert inverted.name == "b" and inverted.inputs.shape == targets.shape
    assert float((inverted.inputs - targets).abs().max()) <= 0.2 + 1e-6  # inside the ball around the target
    assert 0.0 <= float(inverted.inputs.min()) and float(inverted.inputs.max()) <= 1.0
    # the inversion moved to inputs adapter b restores better than the backbone alone
    # (a random tiny net: from -0.56 dB at the start to +0.4; a trained zoo's gains are in BENCHMARKS.md)
    with torch.no_grad():
        one = Mixture(["a", "b"], ["all"], torch.tensor([[0.0], [1.0]]))
        by_b = F.mse_loss(mixture_forward(net, zoo, one, inverted.inputs), targets)
        by_backbone = F.mse_loss(net(inverted.inputs), targets)
    assert start.gain_db < 0 < inverted.gain_db and inverted.gain_db > start.gain_db + 0.8
    assert float(by_b) < float(by_backbone)


def test_data_free_episodes_draw_inverted_tasks_with_their_adapter_sometimes_masked():
    from colora.core.recycle.mixture import Responses
    from colora.core.recycle.surrogate import dead_leaves, surrogate_bank

    net = tiny(torch.float32)
    zoo = [random_adapter(net, n, 2, seed=s, dtype=torch.float32)[1] for n, s in (("a", 1), ("b", 2))]
    bank = surrogate_bank(net, zoo, per_adapter=3, size=32, steps=3)
    assert [b.name for b in bank] == ["a", "b"]
    clean = list(dead_leaves(4, 48, torch.Generator().manual_seed(1)))
    episodes = _Episodes(Responses(net, zoo), zoo, clean, crop=32, query=2, max_k=2, seed=0, bank=bank)
    inputs = {tuple(b.inputs.flatten()[:8].tolist()) for b in bank}
    targets = [t for b in bank for t in b.targets.unbind(0)]
    masked = 0
    for _ in range(40):
        xs, ys, mask, xq, yq = episodes._draw_inverted(2)
        assert xs.shape == ys.shape == (2, 3, 32, 32) and xq.shape == (2, 3, 32, 32) and yq.shape == xq.shape
        # each support target is one of the bank's own targets, rotated
        assert any(torch.equal(torch.rot90(ys[0], t, (1, 2)), b) for t in range(4) for b in targets)
        masked += int(mask.sum()) == 1
    assert 5 < masked < 35  # half the inverted episodes hide their own adapter
    assert len(inputs) == 2
    meta, curve = distill(net, zoo, clean, steps=6, crop=32, query=2, max_k=2, bank=bank)
    assert len(curve) == 6 and all(np.isfinite(curve))


# ---------------------------------------------------------------- the CLI, end to end


def degrade(kind: str, clean: np.ndarray, rng) -> np.ndarray:
    if kind == "dark":
        return (clean * 0.2).astype(np.uint8)
    if kind == "noisy":
        return np.clip(clean + rng.normal(0, 45, clean.shape), 0, 255).astype(np.uint8)
    if kind == "blurry":
        return np.asarray(Image.fromarray(clean).filter(ImageFilter.GaussianBlur(2.5)))
    raise ValueError(kind)


def write_set(folder: Path, kind: str, n: int, seed: int, size=(48, 40)) -> Path:
    rng = np.random.default_rng(seed)
    for sub in ("input", "target"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        clean = textured(rng, size[1], size[0])
        Image.fromarray(clean).save(folder / "target" / f"{kind}{i}.png")
        Image.fromarray(degrade(kind, clean, rng)).save(folder / "input" / f"{kind}{i}.png")
    return folder


@pytest.fixture(scope="module")
def zoo_home(tmp_path_factory) -> Path:
    """A tiny store with three trained tasks on clearly different degradations."""
    root = tmp_path_factory.mktemp("zoo")
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLUMNS", "250")
        ok(invoke("init", "--random-init", "--config", "tiny", "--home", home))
        for seed, kind in enumerate(("dark", "noisy", "blurry")):
            ok(invoke("task", "add", kind, write_set(root / kind, kind, 5, seed), "--home", home))
            ok(invoke("train", kind, *FAST_TRAIN, "--cold-start", "--home", home))  # independent adapters
    return home


@pytest.fixture
def home(zoo_home, tmp_path) -> Path:
    """A private copy of the zoo store, for tests that change it."""
    dest = tmp_path / "zoo-home"
    shutil.copytree(zoo_home, dest)
    return dest


def listing(home) -> dict:
    return {row["task"]: row for row in json.loads(out(ok(invoke("list", "--json", "--home", home))))}


def test_adapt_from_one_pair_makes_a_recycled_adapter_that_eval_and_restore_use(home, tmp_path, wide_console):
    one = write_set(tmp_path / "one", "noisy", 1, seed=10)
    r = ok(invoke("task", "add", "fresh", one, "--home", home))
    assert "1 training" in err(r)
    r = ok(invoke("adapt", "fresh", "--home", home))
    assert "Recycled adapter for 'fresh' from 3 adapter(s)" in err(r)
    assert all(name in out(r) for name in ("dark", "noisy", "blurry"))
    row = listing(home)["fresh"]
    assert row["adapter"] == "recycled" and row["plan_method"] == "recycled-mixture"
    adapter_file = next((home / "tasks" / "fresh").glob("adapter-recycled-*.safetensors"))
    with safe_open(adapter_file, "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["recycled"]) is True
    extra = json.loads(meta["extra"])
    assert {z["task"] for z in extra["zoo"]} == {"dark", "noisy", "blurry"}  # the files it came from
    assert len(extra["mixture"]["groups"]) > 1 and "network stages" in out(r)  # per stage by default
    assert extra["mixture"]["adapters"] == [*(z["task"] for z in extra["zoo"]), KEEP_INPUT]
    photos = write_set(tmp_path / "photos", "noisy", 2, seed=11) / "input"
    ok(invoke("restore", "--task", "fresh", photos, "-o", tmp_path / "out", "--home", home))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["noisy0.png", "noisy1.png"]


def test_adapt_per_adapter_fits_one_coefficient_per_adapter_in_closed_form(home, tmp_path, wide_console):
    ok(invoke("task", "add", "fresh", write_set(tmp_path / "one", "noisy", 1, seed=10), "--home", home))
    r = ok(invoke("adapt", "fresh", "--per-adapter", "--home", home))
    assert "coefficient" in out(r) and "network stages" not in out(r)
    adapter_file = next((home / "tasks" / "fresh").glob("adapter-recycled-*.safetensors"))
    with safe_open(adapter_file, "pt") as f:
        mixture = json.loads(f.metadata()["extra"])["mixture"]
    assert mixture["groups"] == ["all"] and mixture["steps"] == 0
    r = ok(invoke("adapt", "fresh", "--seconds", "0", "--home", home))  # per stage, no time to refine
    assert "Refined in 0 of 20 step(s) within --seconds 0" in err(r), err(r)


def test_a_refinement_step_that_would_overrun_the_time_budget_is_not_started():
    net = tiny(torch.float32)
    zoo = [random_adapter(net, n, 2, seed=s, dtype=torch.float32)[1] for n, s in (("a", 1), ("b", 2))]
    gen = torch.Generator().manual_seed(0)
    pairs = [(torch.rand(3, 32, 32, generator=gen), torch.rand(3, 32, 32, generator=gen)) for _ in range(2)]
    free = fit_mixture(net, zoo, pairs, crop=32, per_stage=True, steps=6)
    assert free.info["steps"] == 6
    # a clock that only the refinement steps move, one second each: a third step would end at 3 s
    from colora.core.recycle import mixture as mixture_module

    clock = [0.0]
    forward = mixture_module.mixture_forward

    def one_second_step(*args, **kwargs):
        clock[0] += 1.0
        return forward(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mixture_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
        mp.setattr(mixture_module, "mixture_forward", one_second_step)
        assert fit_mixture(net, zoo, pairs, crop=32, per_stage=True, steps=6, seconds=2.5).info["steps"] == 2
    # the budget is gone before the first step: the closed form's coefficients, per stage
    none = fit_mixture(net, zoo, pairs, crop=32, per_stage=True, steps=6, seconds=0.0)
    assert none.info["steps"] == 0 and len(none.groups) > 1
    assert torch.equal(none.coef, none.coef[:, :1].expand_as(none.coef))


def test_the_refinement_leaves_time_to_score_its_result_within_the_budget():
    net = tiny(torch.float32)
    zoo = [random_adapter(net, n, 2, seed=s, dtype=torch.float32)[1] for n, s in (("a", 1), ("b", 2))]
    gen = torch.Generator().manual_seed(0)
    pairs = [(torch.rand(3, 32, 32, generator=gen), torch.rand(3, 32, 32, generator=gen)) for _ in range(2)]
    from colora.core.recycle import mixture as mixture_module

    # a clock that moves one second per refinement step and per exact scoring of a mixture: the
    # closed form scores its 4 scales (4 s), the end scores twice (2 s); before the first step,
    # a step is expected to cost three scorings (3 s)
    clock = [0.0]
    forward, scored = mixture_module.mixture_forward, mixture_module.fast_mixed

    def one_second(f):
        def timed(*args, **kwargs):
            clock[0] += 1.0
            return f(*args, **kwargs)

        return timed

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mixture_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
        mp.setattr(mixture_module, "mixture_forward", one_second(forward))
        mp.setattr(mixture_module, "fast_mixed", one_second(scored))
        fit = fit_mixture(net, zoo, pairs, crop=32, per_stage=True, steps=6, seconds=9.5)
        # the first step is expected to end at 4 + 3 s, and its scoring 2 s later: past 8.5 s
        clock[0] = 0.0
        short = fit_mixture(net, zoo, pairs, crop=32, per_stage=True, steps=6, seconds=8.5)
    # without the reserve, 5 steps would start (the 5th ending at 9 s) and the scoring end at 11 s
    assert fit.info["steps"] == 3 and fit.info["seconds"] <= 9.5, fit.info
    # without the first step's estimate, steps would start at 4 s (4 + 0 + 2 <= 8.5)
    assert short.info["steps"] == 0, short.info


def test_adapt_per_stage_fits_many_pairs_on_fewer_smaller_crops(home, tmp_path):
    # 3 training pairs: 8 crops of 96²; 16: one crop of 72² from each of at most 16 (so the closed
    # form leaves the budget room to refine); --per-adapter keeps a crop of 96² per pair. Read from
    # the fit's keywords (whether this random tiny zoo's mixture then beats the input or not).
    from colora.core.recycle import mixture as mixture_module

    ok(invoke("task", "add", "few", write_set(tmp_path / "few", "noisy", 4, seed=10), "--home", home))
    ok(invoke("task", "add", "many", write_set(tmp_path / "many", "noisy", 20, seed=10), "--home", home))
    fitted, real_fit = [], mixture_module.fit_mixture

    def fit_keywords(name: str, *options: str) -> dict:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(mixture_module, "fit_mixture", lambda *a, **k: fitted.append(k) or real_fit(*a, **k))
            invoke("adapt", name, *options, "--home", home)
        return fitted.pop()

    def support(name: str, *options: str) -> list:
        kwargs = fit_keywords(name, "--seconds", "0", *options)
        return [kwargs.get("crop", 96), kwargs.get("n_crops", 8), kwargs.get("max_crops")]

    # --seconds is the command's: the fit gets what loading the store, pairs and zoo left of it
    assert 0 < fit_keywords("few", "--seconds", "30")["seconds"] < 30
    assert support("few") == [96, 8, None]
    assert support("many") == [72, 8, 16]
    assert support("many", "--per-adapter") == [96, 8, None]
    # and fit_mixture does what the keywords say: one crop from each of 16 of 24 pairs
    net = tiny(torch.float32)
    zoo = [random_adapter(net, "a", 2, seed=1, dtype=torch.float32)[1]]
    pairs = [(torch.rand(3, 40, 48), torch.rand(3, 40, 48)) for _ in range(24)]
    done = real_fit(net, zoo, pairs, per_stage=True, **mixture_module.refined_support(len(pairs)))
    assert done.info["support"] == [72, 16]
    assert real_fit(net, zoo, pairs).info["support"] == [96, len(pairs)]


def test_fewer_support_crops_than_pairs_come_from_distinct_pairs():
    # each pair a constant image of its own value, so a crop tells which pair it came from
    pairs = [(torch.full((3, 40, 48), i / 24), torch.full((3, 40, 48), i / 24)) for i in range(24)]
    x, _ = support_crops(pairs, 32, 16, torch.Generator().manual_seed(0))
    sources = {round(float(crop.mean()) * 24) for crop in x}
    assert len(sources) == 16 and sources != set(range(16))  # distinct, drawn (not the first 16)


def test_adapt_without_keep_input_mixes_the_zoo_alone(home, tmp_path, wide_console):
    ok(invoke("task", "add", "fresh", write_set(tmp_path / "one", "noisy", 1, seed=10), "--home", home))
    r = ok(invoke("adapt", "fresh", "--no-keep-input", "--home", home))
    assert KEEP_INPUT not in out(r) and "from 3 adapter(s)" in err(r)
    adapter_file = next((home / "tasks" / "fresh").glob("adapter-recycled-*.safetensors"))
    with safe_open(adapter_file, "pt") as f:
        assert json.loads(f.metadata()["extra"])["mixture"]["adapters"] == ["blurry", "dark", "noisy"]


def test_train_warm_starts_from_the_zoo_by_default_and_makes_an_ordinary_adapter(home, tmp_path, wide_console):
    from colora.core.model.lora import lora_delta, lora_scaling
    from colora.core.model.weights import load_backbone, read_adapter

    backbone, _ = load_backbone(next((home / "backbones").glob("*.safetensors")))

    bias = backbone.ending.bias.detach()[:, None, None]

    def halfway(folder: Path) -> Path:  # targets: half the backbone's correction (x + W*features + bias)
        for p in sorted((folder / "input").iterdir()):
            x = torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32) / 255).permute(2, 0, 1)
            with torch.no_grad():
                y = (x + bias + 0.5 * (backbone(x[None])[0] - x - bias)).clamp(0, 1)
            Image.fromarray((y.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(
                folder / "target" / p.name
            )
        return folder

    pairs, val = (
        halfway(write_set(tmp_path / "few", "noisy", 3, 12)),
        halfway(write_set(tmp_path / "val", "noisy", 2, 13)),
    )
    ok(invoke("task", "add", "fresh", pairs, "--val", val, "--home", home))
    # every layer at full rank and a learning rate of ~0: the adapter holds exactly where it started
    still = ("--rank", "64", "--steps", "1", "--lr", "1e-12", "--patch-size", "16", "--batch-size", "1")
    r = ok(invoke("train", "fresh", *still, "--home", home))  # the store holds a zoo: warm by default
    assert f"Warm start from the zoo: {KEEP_INPUT}" in err(r) or f", {KEEP_INPUT}" in err(r), err(r)
    tensors, meta = read_adapter(next((home / "tasks" / "fresh").glob("adapter-*.safetensors")))
    record = meta.extra["warm_start"]
    assert 0 < record["mixture"][KEEP_INPUT] < 1 and record["energy_kept"] > 0.999999
    assert meta.extra["val_curve"][0][0] == 0  # the start itself is a candidate for the state kept
    expected = {"ending": -record["mixture"][KEEP_INPUT] * backbone.ending.weight.detach()}
    for name, c in record["mixture"].items():
        if name != KEEP_INPUT:
            z_tensors, z_meta = read_adapter(next((home / "tasks" / name).glob("adapter-*.safetensors")))
            for path, rank in z_meta.rank_plan.items():
                a, b = z_tensors[f"{path}.lora_A"], z_tensors[f"{path}.lora_B"]
                expected[path] = expected.get(path, 0) + c * lora_delta(a, b, lora_scaling(z_meta.alpha, rank))
    for path, rank in meta.rank_plan.items():
        got = lora_delta(tensors[f"{path}.lora_A"], tensors[f"{path}.lora_B"], lora_scaling(meta.alpha, rank))
        assert torch.allclose(got, expected.get(path, torch.zeros_like(got)), atol=1e-4, rtol=1e-3), path

    def adapter_psnr() -> float:
        results = json.loads(out(ok(invoke("eval", "fresh", "--json", "--home", home))))["results"]
        return next(row["psnr"] for row in results if row["subject"] == "adapter")

    warm = adapter_psnr()
    ok(invoke("train", "fresh", *still, "--cold-start", "--home", home))
    cold = adapter_psnr()
    assert warm > cold + 1.0, (warm, cold)
    ok(invoke("adapter", "export", "fresh", tmp_path / "fresh.safetensors", "--home", home))


def test_adapt_refuses_to_replace_a_trained_adapter(zoo_home):
    r = invoke("adapt", "noisy", "--home", zoo_home)
    assert r.exit_code == 1 and "already has a trained adapter" in err(r) and "--replace" in err(r)


def test_adapt_with_an_empty_zoo_says_so(tmp_path):
    home = tmp_path / "h"
    ok(invoke("init", "--random-init", "--config", "tiny", "--home", home))
    ok(invoke("task", "add", "only", write_set(tmp_path / "only", "dark", 2, 0), "--home", home))
    r = invoke("adapt", "only", "--home", home)
    assert r.exit_code == 1 and "the adapter zoo is empty" in err(r) and "colora train" in err(r)
    r = invoke("train", "only", *FAST_TRAIN, "--warm-start", "--home", home)
    assert r.exit_code == 1 and "nothing to warm-start from" in err(r) and "without --warm-start" in err(r)
    assert "Traceback" not in err(r)
    assert not list((home / "tasks").rglob("*.safetensors"))
    from colora.core.model.weights import read_adapter

    # not asked for by name, the warm start gives way to a cold one without a word
    r = ok(invoke("train", "only", *FAST_TRAIN, "--home", home))
    assert "warm" not in err(r).lower()
    _, meta = read_adapter(next((home / "tasks" / "only").glob("adapter-*.safetensors")))
    assert "warm_start" not in meta.extra


def test_meta_adapter_distill_then_adapt_in_one_forward_and_stale_when_the_zoo_changes(home, tmp_path, wide_console):
    r = invoke("adapt", "dark", "--meta", "--replace", "--home", home)
    assert r.exit_code == 1 and "no meta-adapter yet" in err(r)
    ok(invoke("recycle", "distill", "--steps", "6", "--home", home))
    assert json.loads(out(ok(invoke("recycle", "show", "--json", "--home", home))))["up_to_date"] is True
    ok(invoke("doctor", "--home", home))  # the meta-adapter file is indexed, not an orphan
    ok(invoke("task", "add", "fresh", write_set(tmp_path / "f", "blurry", 3, seed=20), "--home", home))
    r = invoke("adapt", "fresh", "--meta", "--home", home)
    # a tiny zoo on a random backbone: the prediction is kept only if it beats the backbone and the
    # input on the examples, as a fitted mixture must
    adapters = list((home / "tasks" / "fresh").glob("adapter-*.safetensors"))
    if r.exit_code == 0:
        assert "(meta)" in err(r) and listing(home)["fresh"]["plan_method"] == "recycled-meta"
        with safe_open(str(adapters[0]), "pt") as f:
            fit = json.loads(f.metadata()["extra"])["mixture"]
        assert fit["support_mse"] < min(fit["support_mse_backbone"], fit["support_mse_input"])
    else:
        assert "beat" in err(r) and "no adapter was made" in err(r) and not adapters, err(r)
    # a new trained adapter changes the zoo: the meta-adapter must be distilled again
    ok(invoke("task", "add", "dark2", write_set(tmp_path / "d2", "dark", 3, seed=21), "--home", home))
    ok(invoke("train", "dark2", *FAST_TRAIN, "--home", home))
    r = invoke("adapt", "fresh", "--meta", "--home", home)
    assert r.exit_code == 1 and "zoo changed" in err(r) and "recycle distill" in err(r)
    assert json.loads(out(ok(invoke("recycle", "show", "--json", "--home", home))))["up_to_date"] is False


def test_adapt_meta_refuses_a_prediction_worse_than_the_backbone_on_the_examples(home, tmp_path, monkeypatch):
    import colora.api.recycling as recycling

    ok(invoke("recycle", "distill", "--steps", "4", "--home", home))
    real = recycling._predicted_mixture

    def wild(*args):  # the distilled meta-adapter's prediction, blown up 50x: a prediction gone wrong
        mixture, zoo = real(*args)
        return Mixture(mixture.names, mixture.groups, torch.full_like(mixture.coef, 50.0), mixture.info), zoo

    monkeypatch.setattr(recycling, "_predicted_mixture", wild)
    from colora.core.model.weights import load_backbone

    backbone, _ = load_backbone(next((home / "backbones").glob("*.safetensors")))
    folder = write_set(tmp_path / "f", "noisy", 3, seed=40)
    for p in sorted((folder / "input").iterdir()):  # targets: the backbone's own outputs
        x = torch.from_numpy(np.asarray(Image.open(p), dtype=np.float32) / 255).permute(2, 0, 1)
        with torch.no_grad():
            y = backbone(x[None])[0].clamp(0, 1)
        Image.fromarray((y.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / "target" / p.name)
    ok(invoke("task", "add", "fresh", folder, "--home", home))
    r = invoke("adapt", "fresh", "--meta", "--home", home)
    assert r.exit_code == 1 and "does not beat the backbone alone" in err(r) and "without --meta" in err(r)
    assert "Traceback" not in err(r) and not list((home / "tasks" / "fresh").glob("adapter-*"))


def test_score_on_support_reports_the_errors_a_fit_reports():
    torch.manual_seed(0)
    model = build_backbone(PRESETS["tiny"]).eval()
    zoo = with_keep_input(model, [])
    pairs = [(torch.rand(3, 40, 48), torch.rand(3, 40, 48)) for _ in range(2)]
    scored = score_on_support(model, zoo, Mixture([KEEP_INPUT], ["all"], torch.ones(1, 1), {"method": "meta"}), pairs)
    info = scored.info
    assert info["method"] == "meta" and scored.coef.tolist() == [[1.0]]
    x, y = support_crops(pairs, 128, 8, torch.Generator().manual_seed(0))  # the same crops
    with torch.no_grad():
        backbone_out = model(x).clamp(0, 1)
    kept = (x + model.ending.bias.detach()[:, None, None]).clamp(0, 1)  # keep-input at 1: x + the last bias
    assert info["support_mse_input"] == pytest.approx(float(F.mse_loss(x, y)), rel=1e-6)
    assert info["support_mse_backbone"] == pytest.approx(float(F.mse_loss(backbone_out, y)), rel=1e-3)
    assert info["support_mse"] == pytest.approx(float(F.mse_loss(kept, y)), rel=1e-3)


def test_distill_is_data_free_it_reads_no_pair_file_and_no_photo(home, tmp_path, monkeypatch):
    import colora.core.data.images as images
    from colora.store.store import Store

    store = Store.open(home)
    pair_files = [Path(f) for t in store.tasks() for p in store.pairs(t) for f in (p.input_path, p.target_path)]
    assert pair_files
    read: list[str] = []
    real_load = images.load_image
    monkeypatch.setattr(images, "load_image", lambda path, *a, **k: read.append(str(path)) or real_load(path, *a, **k))
    # every pair file is moved away while it distils (the zoo's sets are shared with other tests: put back after)
    away = tmp_path / "away"
    away.mkdir()
    moved = [(f, away / f"{i}{f.suffix}") for i, f in enumerate(pair_files)]
    for f, dest in moved:
        shutil.move(f, dest)
    try:
        r = ok(invoke("recycle", "distill", "--steps", "4", "--home", home))
    finally:
        for f, dest in moved:
            shutil.move(dest, f)
    assert read == [] and "data-free" in err(r)
    record = json.loads(out(ok(invoke("recycle", "show", "--json", "--home", home))))
    assert record["up_to_date"] is True and record["steps"] == 4
    with safe_open(str(home / record["path"]), "pt") as f:
        assert f.metadata()["surrogate"].startswith("data-free")


def test_distill_from_a_folder_of_photos_and_a_clear_error_for_an_empty_one(home, tmp_path):
    photos = write_set(tmp_path / "photos", "dark", 2, seed=30) / "target"
    r = ok(invoke("recycle", "distill", "--steps", "3", "--clean", photos, "--home", home))
    assert "2 clean photo(s)" in err(r)
    (tmp_path / "empty").mkdir()
    r = invoke("recycle", "distill", "--steps", "3", "--clean", tmp_path / "empty", "--home", home)
    assert r.exit_code == 1 and "no images in" in err(r) and "data-free" in err(r) and "Traceback" not in err(r)


def test_restore_auto_picks_the_adapter_of_the_matching_degradation(zoo_home, tmp_path, wide_console):
    photos = tmp_path / "photos"
    for seed, kind in enumerate(("dark", "noisy", "blurry")):
        write_set(tmp_path / kind, kind, 2, seed=100 + seed)
        for p in (tmp_path / kind / "input").iterdir():
            photos.mkdir(exist_ok=True)
            shutil.copy(p, photos / p.name)
    # the nearest signature alone (this store's backbone is random: its second look means nothing)
    r = ok(
        invoke(
            "restore", "--task", "auto", photos, "-o", tmp_path / "out", "--auto-candidates", "1", "--home", zoo_home
        )
    )
    rows = [line.split("│") for line in out(r).splitlines() if line.startswith("│")]
    chosen = {cells[1].strip(): cells[2].strip().split()[0] for cells in rows}
    assert chosen == {f"{k}{i}.png": k for k in ("dark", "noisy", "blurry") for i in range(2)}, chosen
    assert len(list((tmp_path / "out").iterdir())) == 6


def test_restore_auto_keeps_the_candidate_the_backbone_would_change_least(zoo_home, tmp_path):
    from colora.api.models import backbone_model, task_model
    from colora.api.recycling import signatures
    from colora.api.restoring import FAR, restore_images
    from colora.core.data.crops import center_crop
    from colora.core.recycle.signature import CROP, image_features, nearest
    from colora.store.store import Store

    photos = tmp_path / "photos"
    photos.mkdir()
    for seed, kind in enumerate(("dark", "noisy", "blurry")):
        for p in (write_set(tmp_path / kind, kind, 1, seed=200 + seed) / "input").iterdir():
            shutil.copy(p, photos / p.name)
    store = Store.open(zoo_home)
    done = restore_images(store, "auto", [photos], tmp_path / "out", auto_candidates=2)
    assert done.restored == 3 and len(done.choices) == 3
    # recomputed here from the store's own models: of the two nearest signatures, the adapter whose
    # output on the image's central crop one more backbone pass changes least
    backbone = backbone_model(store, store.backbone()).eval()
    sigs, _ = signatures(store, store.backbone(), backbone)
    for choice in done.choices:
        x = torch.from_numpy(np.asarray(Image.open(photos / choice.image), dtype=np.float32) / 255).permute(2, 0, 1)
        ranking = nearest(image_features(x, backbone), sigs)
        crop = center_crop(x, CROP)
        change = {}
        for name, _ in ranking[:2]:
            model = task_model(store, store.adapter(store.task(name)))[0]
            with torch.no_grad():
                y = model(crop[None])[0].clamp(0, 1)
                change[name] = float((backbone(y[None])[0].clamp(0, 1) - y).pow(2).mean())
        assert choice.task == min(change, key=change.get), (choice, change)
        assert choice.nearest == ("" if choice.task == ranking[0][0] else ranking[0][0])
        assert choice.far == (ranking[0][1] > FAR)  # "like no task" is judged by the nearest signature
    r = invoke("restore", "--task", "auto", photos, "-o", tmp_path / "o2", "--auto-candidates", "0", "--home", zoo_home)
    assert r.exit_code != 0 and "auto-candidates" in err(r) and not (tmp_path / "o2").exists()


def test_settle_runs_the_candidates_on_the_central_crop_and_keeps_the_least_changed():
    from colora.core.recycle.settle import settle

    # a "backbone" that blurs: a smooth restoration is nearly its fixed point, a noisy one is not
    blur = torch.nn.Conv2d(3, 3, 3, padding=1, padding_mode="replicate", groups=3, bias=False)
    torch.nn.init.constant_(blur.weight, 1 / 9)
    image = torch.rand(3, 300, 280, generator=torch.Generator().manual_seed(0))
    seen = []

    def restore(name, crop):
        seen.append(tuple(crop.shape))
        if name == "smooth":
            return torch.full_like(crop, 0.5)
        return (crop + 0.2 * torch.randn(crop.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)

    kept, changes = settle(image, ["noisy", "smooth"], restore, blur)
    assert kept == "smooth" and set(changes) == {"noisy", "smooth"} and changes["smooth"] < 1e-10 < changes["noisy"]
    assert seen == [(3, 256, 256)] * 2  # the signature's central crop, not the whole photo
    with pytest.raises(ValueError):
        settle(image, [], restore, blur)


def test_restore_auto_without_any_adapter(tmp_path):
    home = tmp_path / "h"
    ok(invoke("init", "--random-init", "--config", "tiny", "--home", home))
    photos = write_set(tmp_path / "p", "dark", 1, 0) / "input"
    r = invoke("restore", "--task", "auto", photos, "-o", tmp_path / "out", "--home", home)
    assert r.exit_code == 1 and "no adapter" in err(r)
    assert not (tmp_path / "out").exists()


def test_adapt_makes_nothing_when_no_mixture_beats_the_unrestored_input(home, tmp_path):
    clean = tmp_path / "clean"
    for sub in ("input", "target"):
        (clean / sub).mkdir(parents=True)
    image = textured(np.random.default_rng(3), 40, 48)
    for folder in ("input", "target"):  # identical: anything a random tiny net does only harms them
        Image.fromarray(image).save(clean / folder / "same.png")
    ok(invoke("task", "add", "clean", clean, "--val-fraction", "0", "--home", home))
    result = invoke("adapt", "clean", "--home", home)
    assert result.exit_code == 1 and "no adapter was made" in err(result), err(result)
    assert listing(home)["clean"]["adapter"] == "untrained"


@pytest.mark.parametrize("h,w", [(1, 1), (1, 300), (7, 3), (2, 9)])
def test_signature_of_a_tiny_image_is_finite(h, w):
    """`restore --task auto` describes every image it is given, down to one pixel."""
    from colora.core.recycle.signature import FEATURES, image_features

    x = torch.rand(3, h, w, generator=torch.Generator().manual_seed(h * 1000 + w))
    feats = image_features(x)
    assert feats.shape == (len(FEATURES),) and torch.isfinite(feats).all()


def _task_embeddings(mean: list[float], cov: list[list[float]], n: int, seed: int) -> torch.Tensor:
    """n embeddings of 13 features: the first two drawn with the given mean and covariance, the rest
    small independent noise (what every task shares)."""
    from colora.core.recycle.signature import FEATURES

    g = torch.Generator().manual_seed(seed)
    pair = torch.randn(n, 2, generator=g) @ torch.linalg.cholesky(torch.tensor(cov)).T + torch.tensor(mean)
    return torch.cat([pair, 0.1 * torch.randn(n, len(FEATURES) - 2, generator=g)], 1)


def test_nearest_reads_how_a_tasks_features_covary():
    """Two tasks at the same mean whose first two features covary in opposite directions (two
    strengths of one kind do this): an image along one task's direction is that task's, which
    a per-feature distance cannot tell (it sees the same spread in both)."""
    from colora.core.recycle.signature import nearest, signature

    up = _task_embeddings([0.0, 0.0], [[1.0, 0.95], [0.95, 1.0]], 32, 0)
    down = _task_embeddings([0.0, 0.0], [[1.0, -0.95], [-0.95, 1.0]], 32, 1)
    far = _task_embeddings([6.0, 6.0], [[1.0, 0.0], [0.0, 1.0]], 32, 2)
    sigs = {"up": signature(up), "down": signature(down), "far": signature(far)}
    assert sigs["up"]["n"] == 32 and len(sigs["up"]["cov"]) == up.shape[1]
    along_up, along_down = torch.zeros(up.shape[1]), torch.zeros(up.shape[1])
    along_up[:2], along_down[:2] = torch.tensor([1.5, 1.5]), torch.tensor([1.5, -1.5])
    assert nearest(along_up, sigs)[0][0] == "up"
    assert nearest(along_down, sigs)[0][0] == "down"
    ranking = nearest(far[0], sigs)
    assert ranking[0][0] == "far" and ranking[0][1] < ranking[1][1]
    assert all(d >= 0 and math.isfinite(d) for _, d in ranking)


def test_nearest_with_no_own_covariance_cannot_tell_directions_apart():
    """`own_share=0` (the bench's linear-discriminant arm) gives every task the pooled covariance:
    two tasks at one mean are then equally near any image, whatever way their features covary."""
    from colora.core.recycle.signature import nearest, signature

    up = _task_embeddings([0.0, 0.0], [[1.0, 0.95], [0.95, 1.0]], 32, 0)
    down = _task_embeddings([0.0, 0.0], [[1.0, -0.95], [-0.95, 1.0]], 32, 1)
    up, down = up - up.mean(0), down - down.mean(0)  # exactly one mean
    sigs = {"up": signature(up), "down": signature(down)}
    along_up = torch.zeros(up.shape[1])
    along_up[:2] = torch.tensor([1.5, 1.5])
    pooled = dict(nearest(along_up, sigs, own_share=0.0))
    assert pooled["up"] == pytest.approx(pooled["down"], rel=1e-6)
    own = dict(nearest(along_up, sigs))
    assert own["up"] < own["down"]


def test_nearest_with_one_input_a_task_is_the_per_feature_distance():
    """Signatures of a single input (no spread of their own, no pooled one) fall back to the metric
    before covariances: each feature in units of 10 % of the spread between the tasks' means."""
    from colora.core.recycle.signature import nearest, signature

    a = _task_embeddings([0.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], 1, 0)
    b = _task_embeddings([5.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], 1, 1)
    sigs = {"a": signature(a), "b": signature(b)}
    scale = (0.1 * torch.cat([a, b]).std(0, unbiased=False)).clamp_min(1e-3)
    per_feature = float(((b[0] - a[0]) / scale).pow(2).mean().sqrt())
    assert nearest(a[0], sigs) == [("a", 0.0), ("b", pytest.approx(per_feature, rel=1e-3))]
    old = {name: {k: v for k, v in sig.items() if k != "cov"} | {"version": 1} for name, sig in sigs.items()}
    assert [n for n, _ in nearest(b[0], old)] == ["b", "a"]  # an older cache still ranks


def test_a_damaged_cached_signature_is_not_used():
    """Signatures are cached as text in the store: anything malformed is recomputed, not trusted."""
    from colora.core.recycle.signature import FEATURES, nearest, signature, usable

    good = signature(_task_embeddings([0.0, 0.0], [[1.0, 0.5], [0.5, 1.0]], 8, 0))
    assert usable(good) and usable(json.loads(json.dumps(good)))
    f = len(FEATURES)
    nan_cov = [[math.nan] * f for _ in range(f)]
    negative = (-torch.eye(f)).tolist()
    skewed = (torch.eye(f) + torch.triu(torch.ones(f, f), 1)).tolist()
    for damage in (
        {"version": 1},
        {"cov": nan_cov},
        {"cov": negative},
        {"cov": skewed},
        {"cov": [[1.0]]},
        {"cov": None},
        {"cov": "x"},
        {"mean": good["mean"][:-1]},
        {"std": [-1.0] * f},
        {"n": 0},
        {"n": True},
        {"n": "8"},
    ):
        assert not usable(good | damage), damage
    assert not usable(None) and not usable([1, 2]) and not usable({k: v for k, v in good.items() if k != "cov"})
    # nearest itself, handed a covariance that is no covariance, ranks by the per-feature spread
    other = signature(_task_embeddings([4.0, 0.0], [[1.0, 0.0], [0.0, 1.0]], 8, 1))
    ranking = nearest(torch.tensor(good["mean"]), {"good": good | {"cov": negative}, "other": other})
    assert ranking[0][0] == "good" and all(math.isfinite(d) for _, d in ranking)


def test_signatures_recompute_a_damaged_cache_in_the_store(home):
    """A signature cached as broken text (or one of an older version) is recomputed from the task's
    training inputs and stored again, never used as it is."""
    from colora.api.models import backbone_model
    from colora.api.recycling import signatures
    from colora.core.recycle.signature import usable
    from colora.store.store import Store

    store = Store.open(home)
    backbone_row = store.backbone()
    backbone = backbone_model(store, backbone_row)
    first, _ = signatures(store, backbone_row, backbone)
    rows = {r.task.name: r for r in store.adapters(backbone_row)}
    store.set_signature(rows["dark"], "{not json")
    store.set_signature(rows["noisy"], json.dumps(first["noisy"] | {"cov": [[math.nan]]}))
    again, skipped = signatures(store, backbone_row, backbone)
    assert skipped == [] and again.keys() == first.keys() == {"dark", "noisy", "blurry"}
    for name in ("dark", "noisy"):
        assert again[name]["mean"] == pytest.approx(first[name]["mean"]) and again[name]["n"] == first[name]["n"]
        assert usable(json.loads({r.task.name: r for r in store.adapters(backbone_row)}[name].signature))
