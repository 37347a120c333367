"""Degradation library and PROD sampler: determinism, shapes, ranges, orders, replay."""

from __future__ import annotations

import json
import math

import pytest
import torch

from colora.core.data.degradations import (
    BAYER_PATTERNS,
    DEGRADATIONS,
    bayer_masks,
    demosaic,
    disk_kernel,
    haze_depth_cue,
    linear_to_srgb,
    path_kernel,
    srgb_to_linear,
)
from colora.core.data.prod import CANONICAL_ORDER, ONE_PER_FAMILY, ProdSampler, apply_recipe

NAMES = sorted(DEGRADATIONS)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def textured(h: int = 40, w: int = 40, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Gradients, a sinusoid and a checkerboard: something every degradation visibly changes."""
    y = torch.linspace(0, 1, h).view(h, 1).expand(h, w)
    x = torch.linspace(0, 1, w).view(1, w).expand(h, w)
    checker = ((torch.arange(h).view(h, 1) // 4 + torch.arange(w).view(1, w) // 4) % 2).float()
    img = torch.stack(
        [
            0.2 + 0.6 * x,
            0.5 + 0.3 * torch.sin(12 * math.pi * x * y),
            0.15 + 0.7 * checker,
        ]
    )
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
    img = textured(64, 64)  # room for a few drops at the lightest rain (~1.7 expected in 40x40)
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
        orders.update((a, b) for i, a in enumerate(names) for b in names[i + 1 :])
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


# --- the camera, weather and light models (issue 16) -----------------------------------------------

NEW = ("camera_noise", "rain", "haze", "low_light")


def flat(level: float, n: int = 4, size: int = 48) -> torch.Tensor:
    return torch.full((n, 3, size, size), level)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(3, 37, 53), (2, 3, 37, 53)])
def test_odd_sizes_keep_shape_dtype_and_range(name, shape):
    deg = DEGRADATIONS[name]
    img = torch.rand(shape, generator=gen(5))
    out = deg.apply(img, deg.sample_params(gen(1)), gen(2))
    assert out.shape == img.shape and out.dtype == img.dtype
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", NEW)
def test_new_ones_replay_exactly_from_a_recipe(name):
    deg = DEGRADATIONS[name]
    img = torch.stack([textured(37, 53), textured(37, 53).flip(-2)])
    for seed in range(3):
        params = deg.sample_params(gen(seed))
        recipe = json.loads(json.dumps([{"name": name, "params": params, "seed": 1000 + seed}]))
        direct = deg.apply(img, params, gen(1000 + seed))
        assert torch.equal(apply_recipe(img, recipe), direct)
        assert torch.equal(apply_recipe(img, recipe), apply_recipe(img, recipe))
        other = deg.apply(img, params, gen(2000 + seed))
        assert not torch.equal(direct, other)


@pytest.mark.parametrize("name", NEW)
def test_new_ones_draw_noise_per_image(name):
    deg = DEGRADATIONS[name]
    same = torch.stack([textured(), textured()])
    params = deg.sample_params(gen(3))
    if name == "haze":
        params["image"] = 0.0  # only the random field differs per image; the image cue is shared
    out = deg.apply(same, params, gen(4))
    assert not torch.equal(out[0], out[1])


def test_srgb_curve_round_trips():
    x = torch.linspace(0, 1, 1001, dtype=torch.float64)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-12)
    assert torch.isclose(srgb_to_linear(torch.tensor(0.5)), torch.tensor(0.2140), atol=1e-4)


@pytest.mark.parametrize("pattern", BAYER_PATTERNS)
def test_bayer_mosaic_and_demosaic(pattern):
    x = torch.rand(2, 3, 37, 53, generator=gen(0), dtype=torch.float64)
    masks = bayer_masks(pattern, 37, 53, x)
    assert torch.equal(masks.sum(1), torch.ones(1, 37, 53, dtype=torch.float64))  # one colour per site
    assert masks[0, 1].mean() == pytest.approx(0.5, abs=0.02)  # half the sites are green
    raw = (x * masks).sum(1, keepdim=True)
    out = demosaic(raw, masks)
    assert torch.equal(out * masks, x * masks)  # recorded samples pass through untouched
    level = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64).view(1, 3, 1, 1)
    flat_img = level.expand(1, 3, 37, 53)
    flat_raw = (flat_img * masks).sum(1, keepdim=True)
    assert torch.allclose(demosaic(flat_raw, masks), flat_img, atol=1e-12)  # borders too


CAMERA = {
    "shot": 3e-3,
    "read_dev": 0.0,
    "pattern": "RGGB",
    "red_gain": 2.1,
    "blue_gain": 1.7,
    "rgb_gain": 1.25,
    "saturation": 0.5,
    "quality": 95,
}


def test_camera_noise_variance_grows_with_the_signal_in_linear_light():
    deg = DEGRADATIONS["camera_noise"]
    variances = []
    for level in (0.15, 0.4, 0.7):
        out = deg.apply(flat(level), CAMERA, gen(0))
        variances.append(float(srgb_to_linear(out).var()))
    assert variances[0] < variances[1] < variances[2]


def test_camera_pipeline_without_noise_is_close_to_the_identity():
    deg = DEGRADATIONS["camera_noise"]
    # 8-bit levels 51, 102, 204: far from a rounding boundary, so the JPEG sees a flat colour
    img = torch.tensor([0.2, 0.4, 0.8]).view(1, 3, 1, 1).expand(2, 3, 32, 32).contiguous()
    out = deg.apply(img, CAMERA | {"shot": 1e-12}, gen(0))  # read noise follows shot: ~0 as well
    assert (out - img).abs().max() <= 2 / 255  # unprocess and process invert; q95 JPEG of flat colour
    noisy = deg.apply(img, CAMERA, gen(0))
    assert (noisy - img).std() > 5 * (out - img).std()


def test_camera_noise_is_spatially_correlated_by_demosaicing():
    out = DEGRADATIONS["camera_noise"].apply(flat(0.5), CAMERA | {"quality": 95}, gen(1))
    r = (out - out.mean(dim=(2, 3), keepdim=True))[:, 1]
    corr = float((r[:, :, 1:] * r[:, :, :-1]).mean() / (r * r).mean())
    assert corr > 0.1  # white noise would give ~0


RAIN = {
    "density": 0.003,
    "length": 25.0,
    "width": 1.5,
    "angle": 0.0,
    "intensity": 0.7,
    "blur": 0.4,
    "layers": 2,
    "far_density": 2.0,
    "far_scale": 0.5,
}


def test_rain_only_brightens_and_follows_its_angle():
    deg = DEGRADATIONS["rain"]
    img = torch.rand(2, 3, 96, 96, generator=gen(0))
    out = deg.apply(img, RAIN, gen(1))
    assert (out >= img).all() and (out > img + 0.05).float().mean() > 0.02
    for angle, lean in ((0.0, 0), (25.0, 4), (-25.0, -4)):  # tan 25 deg x 8 rows ~ 4 columns
        r = (deg.apply(flat(0.2, 2, 96), RAIN | {"angle": angle, "layers": 1}, gen(2)) - 0.2).mean(1)
        along = float((r * torch.roll(r, (8, -lean), (-2, -1))).mean())  # pixel 8 rows up the streak
        across = float((r * torch.roll(r, (8, lean), (-2, -1))).mean())
        sideways = float((r * torch.roll(r, (0, 8), (-2, -1))).mean())
        assert along > 2 * sideways and (lean == 0 or along > 2 * across)


def test_rain_layers_and_density_add_streaks():
    deg = DEGRADATIONS["rain"]
    img = flat(0.3, 2, 96)
    cover = [
        float((deg.apply(img, RAIN | p, gen(3)) > 0.35).float().mean())
        for p in ({"layers": 1, "density": 0.001}, {"layers": 1}, {"layers": 2})
    ]
    assert cover[0] < cover[1] < cover[2]


HAZE = {"beta": 1.5, "airlight": 0.9, "tint": 0.0, "vertical": 1.0, "image": 0.5}


def test_haze_lowers_contrast_more_at_the_top_with_the_vertical_prior():
    img = textured(60, 60)
    out = DEGRADATIONS["haze"].apply(img, HAZE, gen(0))

    def contrast(x):
        return float(x.std())

    top, bottom = slice(0, 15), slice(45, 60)
    kept_top = contrast(out[:, top]) / contrast(img[:, top])
    kept_bottom = contrast(out[:, bottom]) / contrast(img[:, bottom])
    assert kept_top < 0.4 and kept_bottom > 0.8
    tinted = DEGRADATIONS["haze"].apply(flat(0.0, 1, 32), HAZE | {"tint": 0.05, "vertical": 0.5}, gen(0))
    assert (tinted[:, 2] > tinted[:, 0]).all()  # tint > 0: a bluish airlight


def test_haze_depth_cue_puts_bright_flat_grey_far_and_dark_texture_near():
    img = torch.zeros(1, 3, 64, 64)
    img[..., :32] = 0.2 * textured(64, 32)[None]  # dark, textured, coloured: near
    img[..., 32:] = 0.85  # bright, flat, grey: far (sky, haze, distant walls)
    cue = haze_depth_cue(img)
    assert cue.shape == (1, 1, 64, 64) and cue.min() >= 0 and cue.max() <= 1
    assert cue[..., 48:].mean() > cue[..., :16].mean() + 0.5


LOW = {"exposure": 0.03, "gamma": 1.2, "shot": 2e-4, "read": 5e-4, "red": 1.0, "blue": 1.0}


def test_low_light_darkens_quantises_and_raises_relative_noise():
    deg = DEGRADATIONS["low_light"]
    img = flat(0.5)
    rel = []
    for exposure in (0.2, 0.03):
        out = deg.apply(img, LOW | {"exposure": exposure}, gen(0))
        assert out.mean() < 0.5 * img.mean()
        assert torch.equal(out * 255, (out * 255).round())  # an 8-bit capture
        rel.append(float(out.std() / out.mean()))
    assert rel[1] > 1.5 * rel[0] > 0.015  # darker: noisier relative to the signal
    real = deg.apply(textured(), deg.sample_params(gen(0)), gen(1))
    assert real.mean() < textured().mean()


def test_low_light_colour_cast():
    out = DEGRADATIONS["low_light"].apply(
        flat(0.6), LOW | {"red": 1.3, "blue": 0.7, "shot": 1e-9, "read": 1e-9}, gen(0)
    )
    assert out[:, 0].mean() > out[:, 1].mean() > out[:, 2].mean()
