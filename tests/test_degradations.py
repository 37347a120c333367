"""Degradation library and PROD sampler: determinism, shapes, ranges, orders, replay."""
from __future__ import annotations

import json
import math

import pytest
import torch

from core.data.degradations import DEGRADATIONS, disk_kernel, path_kernel
from core.data.prod import CANONICAL_ORDER, ONE_PER_FAMILY, ProdSampler, apply_recipe

NAMES = sorted(DEGRADATIONS)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def textured(h: int = 40, w: int = 40, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Gradients, a sinusoid and a checkerboard: something every degradation visibly changes."""
    y = torch.linspace(0, 1, h).view(h, 1).expand(h, w)
    x = torch.linspace(0, 1, w).view(1, w).expand(h, w)
    checker = ((torch.arange(h).view(h, 1) // 4 + torch.arange(w).view(1, w) // 4) % 2).float()
    img = torch.stack([
        0.2 + 0.6 * x,
        0.5 + 0.3 * torch.sin(12 * math.pi * x * y),
        0.15 + 0.7 * checker,
    ])
    return img.clamp(0, 1).to(dtype)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output_and_bounds(name):
    deg = DEGRADATIONS[name]
    img = textured()
    p1, p2 = deg.sample_params(gen(3)), deg.sample_params(gen(3))
    assert p1 == p2
    assert json.loads(json.dumps(p1)) == p1
    out1 = deg.apply(img, p1, gen(7))
    out2 = deg.apply(img, p2, gen(7))
    assert torch.equal(out1, out2)
    assert out1.shape == img.shape and out1.dtype == img.dtype
    assert out1.min() >= 0 and out1.max() <= 1


@pytest.mark.parametrize("name", NAMES)
def test_different_seeds_differ(name):
    deg = DEGRADATIONS[name]
    params = [deg.sample_params(gen(s)) for s in range(4)]
    assert any(p != params[0] for p in params[1:])
    if deg.stochastic:  # same strength, different generator: different noise / streaks / path
        img = textured()
        assert not torch.equal(deg.apply(img, params[0], gen(1)), deg.apply(img, params[0], gen(2)))


@pytest.mark.parametrize("name", NAMES)
def test_changes_the_image(name):
    deg = DEGRADATIONS[name]
    img = textured()
    for seed in range(5):  # whatever strength is drawn, the image changes measurably
        out = deg.apply(img, deg.sample_params(gen(seed)), gen(100 + seed))
        assert (out - img).abs().mean() > 1e-3, (name, seed)


@pytest.mark.parametrize("name", NAMES)
def test_batch_and_float64(name):
    deg = DEGRADATIONS[name]
    batch = torch.stack([textured(), textured().flip(-1)])
    params = deg.sample_params(gen(0))
    out = deg.apply(batch, params, gen(1))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    out64 = deg.apply(textured(dtype=torch.float64), params, gen(1))
    assert out64.dtype == torch.float64 and out64.min() >= 0 and out64.max() <= 1


def test_apply_rejects_bad_input():
    deg = DEGRADATIONS["gaussian_noise"]
    with pytest.raises(ValueError):
        deg.apply(textured(), {"sigma": 0.1}, gen(0))  # missing "gray"
    with pytest.raises(ValueError):
        deg.apply(textured().mul(255).to(torch.uint8), deg.sample_params(gen(0)), gen(0))
    with pytest.raises(ValueError):
        deg.apply(textured(), deg.sample_params(gen(0)), None)


def test_kernels_are_normalised():
    for k in (disk_kernel(2.5), path_kernel(9.0, 30.0, 0.5, gen(0)), path_kernel(3.0, 0.0)):
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
        assert torch.isclose(k.sum(), torch.tensor(1.0), atol=1e-5) and k.min() >= 0


def test_every_name_has_a_canonical_place():
    assert sorted(CANONICAL_ORDER) == NAMES


def test_random_mode_draws_both_orders():
    sampler = ProdSampler(mode="random", max_degradations=4)
    orders = set()
    for seed in range(50):
        names = [s["name"] for s in sampler.sample_recipe(gen(seed))]
        orders.update((a, b) for i, a in enumerate(names) for b in names[i + 1:])
    assert any((b, a) in orders for a, b in orders)


def test_fixed_mode_keeps_canonical_order():
    sampler = ProdSampler(mode="fixed", max_degradations=4)
    lengths = set()
    for seed in range(50):
        names = [s["name"] for s in sampler.sample_recipe(gen(seed))]
        lengths.add(len(names))
        assert names == sorted(names, key=CANONICAL_ORDER.index)
    assert lengths == {1, 2, 3, 4}


@pytest.mark.parametrize("mode", ["random", "fixed"])
def test_at_most_one_per_family(mode):
    sampler = ProdSampler(mode=mode, max_degradations=5)
    for seed in range(50):
        families = [DEGRADATIONS[s["name"]].family for s in sampler.sample_recipe(gen(seed))]
        for fam in ONE_PER_FAMILY:
            assert families.count(fam) <= 1


def test_single_mode_applies_exactly_one():
    sampler = ProdSampler(mode="single", max_degradations=4)
    seen = set()
    for seed in range(30):
        _, recipe = sampler(textured(), gen(seed))
        assert len(recipe) == 1
        seen.add(recipe[0]["name"])
    assert len(seen) > 3


def test_recipe_replays_exactly():
    img = textured()
    sampler = ProdSampler(mode="random", max_degradations=3)
    for seed in range(10):
        out, recipe = sampler(img, gen(seed))
        again, recipe2 = sampler(img, gen(seed))
        assert recipe == recipe2 and torch.equal(out, again)
        assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1
        replayed = apply_recipe(img, json.loads(json.dumps(recipe)))
        assert torch.equal(out, replayed)


def test_sampler_validates_and_describes():
    with pytest.raises(ValueError):
        ProdSampler(mode="shuffled")
    with pytest.raises(ValueError):
        ProdSampler(names=("gaussian_noise", "snow"))
    with pytest.raises(ValueError):
        ProdSampler(max_degradations=0)
    with pytest.raises(ValueError):
        apply_recipe(textured(), [{"name": "snow", "params": {}, "seed": 1}])
    card = ProdSampler(mode="fixed", names=("jpeg", "haze"), max_degradations=2).describe()
    assert card["order"] == ["haze", "jpeg"] and json.loads(json.dumps(card)) == card
    # only two noises allowed and one per family: every chain has exactly one step
    sampler = ProdSampler(names=("gaussian_noise", "poisson_noise"), max_degradations=2)
    assert all(len(sampler.sample_recipe(gen(s))) == 1 for s in range(10))
