"""PROD pre-training: a few real steps on a tiny model, resume after an interruption, the bundled backbone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from colora.core.data.prod import ProdSampler
from colora.core.files import sha256_file
from colora.core.model.backbone import PRESETS
from colora.core.model.bundled import BUNDLED_DIR, bundled_backbone
from colora.core.model.weights import load_backbone
from colora.core.training.loop import TrainConfig
from colora.core.training.pretrain import pretrain
from helpers import textured


@pytest.fixture
def clean_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "clean"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(textured(rng, 40, 48)).save(folder / f"{i}.png")
    return folder


class Stop(Exception):
    pass


def test_pretrain_trains_and_resumes(clean_dir, tmp_path):
    config = TrainConfig(steps=8, batch_size=2, patch_size=24, lr=2e-3, checkpoint_every=2, log_every=2, warmup_steps=1)
    sampler = ProdSampler(mode="random")
    full, result, recipe = pretrain(clean_dir, PRESETS["tiny"], config, sampler)
    assert result.steps_done == 8 and len(result.loss_curve) == 4
    assert recipe["sampler"]["mode"] == "random" and recipe["data"]["images"] == 3

    ckpt = tmp_path / "ckpt.safetensors"

    def stop(done, total, loss):
        if done == 5:
            raise Stop

    with pytest.raises(Stop):
        pretrain(clean_dir, PRESETS["tiny"], config, sampler, checkpoint_path=ckpt, on_step=stop)
    resumed, result2, _ = pretrain(clean_dir, PRESETS["tiny"], config, sampler, checkpoint_path=ckpt, resume=True)
    assert result2.resumed_from == 4
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_pretrain_modes_record_their_recipe(clean_dir):
    config = TrainConfig(steps=2, batch_size=1, patch_size=16, warmup_steps=1)
    for mode in ("fixed", "single"):
        _, _, recipe = pretrain(clean_dir, PRESETS["tiny"], config, ProdSampler(mode=mode))
        assert recipe["sampler"]["mode"] == mode


@pytest.mark.skipif(bundled_backbone() is None, reason="no bundled backbone in this checkout")
def test_bundled_backbone_loads_and_matches_its_recorded_hash():
    path, name = bundled_backbone()
    recorded = json.loads((BUNDLED_DIR / f"{name}.json").read_text())
    assert sha256_file(path) == recorded["file_sha256"]
    model, meta = load_backbone(path, expected_sha256=recorded["sha256"])
    assert meta["pretrained"] == "true"
    assert json.loads(meta["recipe"])["sampler"]["mode"] == "random"
    with torch.no_grad():
        out = model(torch.rand(1, 3, 24, 40))
    assert out.shape == (1, 3, 24, 40) and torch.isfinite(out).all()


def test_pretraining_in_chunks_continues_from_the_last_chunk(clean_dir, isolated_home):
    from helpers import invoke, ok

    ok(invoke("init", "--random-init", "--config", "tiny"))
    args = ("--steps", 4, "--batch-size", 1, "--patch-size", 16, "--config", "tiny")
    ok(invoke("backbone", "pretrain", clean_dir, "--name", "chunk1", *args))
    result = ok(invoke("backbone", "pretrain", clean_dir, "--name", "chunk2", "--init-from", "chunk1", *args))
    assert "from 'chunk1'" in result.stderr
    shown = json.loads(ok(invoke("backbone", "show", "chunk2", "--json")).stdout)
    assert [c["steps"] for c in shown["recipe"]["chunks"]] == [4, 4] and shown["recipe"]["total_steps"] == 8
    assert "8 steps in 2 chunks" in shown["label"]
    missing = invoke("backbone", "pretrain", clean_dir, "--name", "chunk3", "--init-from", "nope", *args)
    assert missing.exit_code == 1 and "no backbone named 'nope'" in missing.stderr


def test_batches_built_by_workers_equal_batches_built_here(clean_dir):
    from colora.core.training.pretrain import ProdBatches, load_clean_images

    images = load_clean_images(clean_dir, 16)
    sampler = ProdSampler(mode="random")
    serial = ProdBatches(images, sampler, 3, 16)
    with ProdBatches(images, sampler, 3, 16, workers=2) as parallel:
        gen_a, gen_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        for step in range(4):  # steps after the first come from the batch built ahead
            xa, ya = serial(step, gen_a)
            xb, yb = parallel(step, gen_b)
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
            assert torch.equal(gen_a.get_state(), gen_b.get_state())
        # a generator moved elsewhere (a resumed checkpoint) is not served the batch built ahead
        gen_a.manual_seed(9), gen_b.manual_seed(9)
        assert torch.equal(serial(0, gen_a)[0], parallel(0, gen_b)[0])
        # a slice of the global batch (torchrun) is the same slice
        assert torch.equal(serial(0, gen_a, keep=range(1, 2))[0], parallel(0, gen_b, keep=range(1, 2))[0])


@pytest.mark.timeout(120)
def test_closing_the_workers_with_a_large_batch_in_flight_returns(clean_dir):
    """A worker blocked on a full pipe never exits: close() waits for the batch built ahead."""
    from colora.core.training.pretrain import ProdBatches, load_clean_images

    images = load_clean_images(clean_dir, 16)
    big = [torch.rand(3, 160, 160).half() for _ in images]
    for _ in range(3):
        batches = ProdBatches(big, ProdSampler(), 8, 128, workers=2)
        batches(0, torch.Generator().manual_seed(0))  # leaves the next step's batch in flight
        batches.close()


def test_clean_fraction_makes_empty_chains_and_leaves_the_default_stream_alone():
    plain = [ProdSampler().sample_recipe(torch.Generator().manual_seed(s)) for s in range(20)]
    again = [ProdSampler(clean_fraction=0.0).sample_recipe(torch.Generator().manual_seed(s)) for s in range(20)]
    assert plain == again and all(plain)
    gen = torch.Generator().manual_seed(0)
    sampler = ProdSampler(clean_fraction=0.5)
    recipes = [sampler.sample_recipe(gen) for _ in range(200)]
    empty = sum(1 for r in recipes if not r)
    assert 70 < empty < 130
    assert sampler.describe()["clean_fraction"] == 0.5
    with pytest.raises(ValueError):
        ProdSampler(clean_fraction=1.0)


def test_weights_tilt_the_mix_and_equal_weights_draw_the_uniform_stream():
    plain = [ProdSampler().sample_recipe(torch.Generator().manual_seed(s)) for s in range(20)]
    equal = ProdSampler(weights={"low_light": 2.0, **{n: 2.0 for n in ProdSampler().names}})
    assert equal.weights is None and "weights" not in equal.describe()
    assert [equal.sample_recipe(torch.Generator().manual_seed(s)) for s in range(20)] == plain

    def share(sampler: ProdSampler) -> float:
        gen = torch.Generator().manual_seed(0)
        chains = [sampler.sample_recipe(gen) for _ in range(600)]
        return sum(any(step["name"] == "low_light" for step in chain) for chain in chains) / len(chains)

    tilted = ProdSampler(weights={"low_light": 4.0})
    assert share(tilted) > 1.6 * share(ProdSampler())
    assert tilted.describe()["weights"]["low_light"] == 4.0 and tilted.describe()["weights"]["rain"] == 1.0
    gen, again = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert [tilted.sample_recipe(gen) for _ in range(5)] == [tilted.sample_recipe(again) for _ in range(5)]
    for bad in ({"lowlight": 2.0}, {"rain": 0.0}, {"rain": float("inf")}):
        with pytest.raises(ValueError):
            ProdSampler(weights=bad)


def test_pretrain_weight_option_is_recorded_and_bad_weights_are_refused(clean_dir, isolated_home):
    from helpers import invoke, ok

    ok(invoke("init", "--random-init", "--config", "tiny"))
    args = ("--steps", 2, "--batch-size", 1, "--patch-size", 16, "--config", "tiny")
    ok(invoke("backbone", "pretrain", clean_dir, "--name", "dark", "--weight", "low_light=3", *args))
    recipe = json.loads(ok(invoke("backbone", "show", "dark", "--json")).stdout)["recipe"]
    assert recipe["sampler"]["weights"]["low_light"] == 3.0
    for bad, message in (
        ("lowlight=3", "unknown degradation 'lowlight'"),
        ("low_light", "is not NAME=NUMBER"),
        ("low_light=-1", "must be a positive number"),
    ):
        refused = invoke("backbone", "pretrain", clean_dir, "--name", "bad", "--weight", bad, *args)
        assert refused.exit_code == 1 and message in refused.stderr and "Traceback" not in refused.stderr
    assert "bad" not in ok(invoke("backbone", "list")).stdout


def test_pretrain_for_minutes_on_a_pool_of_folders(clean_dir, tmp_path, isolated_home):
    from helpers import invoke, ok

    more = tmp_path / "more"
    more.mkdir()
    Image.fromarray(textured(np.random.default_rng(1), 32, 32)).save(more / "a.png")
    ok(invoke("init", "--random-init", "--config", "tiny"))
    args = ("--batch-size", 1, "--patch-size", 16, "--config", "tiny", "--clean-fraction", 0.1)
    result = ok(
        invoke("backbone", "pretrain", clean_dir, more, "--name", "timed", "--minutes", 0.02, "--workers", 1, *args)
    )
    assert "min at the speed measured here" in result.stderr
    recipe = json.loads(ok(invoke("backbone", "show", "timed", "--json")).stdout)["recipe"]
    assert recipe["data"]["images"] == 4 and recipe["data"]["folder"].endswith("/clean + " + more.parent.name + "/more")
    assert recipe["train"]["steps"] >= 20 and recipe["workers"] == 1
    assert recipe["sampler"]["clean_fraction"] == 0.1
    refused = invoke("backbone", "pretrain", clean_dir, "--name", "again", "--minutes", 1, "--resume", *args)
    assert refused.exit_code == 1 and "--minutes cannot resume" in refused.stderr


def _tiny_fit(tmp_path, ema: float, stop_after: int | None = None, resume: bool = False, record=None):
    from colora.core.training.loop import Checkpoint, fit

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 3, 1))
    params = dict(model.named_parameters())
    config = TrainConfig(steps=8, batch_size=2, patch_size=8, lr=1e-2, warmup_steps=1, checkpoint_every=1, ema=ema)

    def batch(step, gen):
        x = torch.rand(2, 3, 8, 8, generator=gen)
        return x, x.flip(-1)

    def on_step(done, total, loss):
        if record is not None:
            record.append({k: p.detach().clone() for k, p in params.items()})
        if stop_after is not None and done == stop_after:
            raise KeyboardInterrupt  # as a kill after this step (its checkpoint is the one before)

    checkpoint = Checkpoint(tmp_path / "ckpt.safetensors", config.to_json())
    try:
        fit(model, params, batch, config, checkpoint=checkpoint, resume=resume, on_step=on_step)
    except KeyboardInterrupt:
        return None
    return {k: p.detach().clone() for k, p in params.items()}


def test_ema_hands_back_the_moving_average_of_the_steps(tmp_path):
    steps: list[dict] = []
    last = _tiny_fit(tmp_path / "plain", 0.0)
    averaged = _tiny_fit(tmp_path / "ema", 0.9, record=steps)
    torch.manual_seed(0)  # the initial parameters, as _tiny_fit makes them
    init = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 3, 1))
    expected = {k: p.detach().clone() for k, p in init.named_parameters()}
    for state in steps:  # ema = 0.9 ema + 0.1 p after every step, from the initial parameters
        expected = {k: 0.9 * expected[k] + 0.1 * state[k] for k in expected}
    for k in expected:
        assert torch.allclose(averaged[k], expected[k], atol=1e-6)
        assert torch.allclose(steps[-1][k], last[k], atol=1e-6)  # the same steps were taken
        assert not torch.allclose(averaged[k], last[k], atol=1e-4)
    assert "ema" not in TrainConfig().to_json() and '"ema": 0.9' in TrainConfig(ema=0.9).to_json()


def test_a_killed_ema_training_resumes_to_the_same_average(tmp_path):
    whole = _tiny_fit(tmp_path / "whole", 0.9)
    (tmp_path / "cut").mkdir()
    assert _tiny_fit(tmp_path / "cut", 0.9, stop_after=5) is None
    resumed = _tiny_fit(tmp_path / "cut", 0.9, resume=True)
    for k in whole:
        assert torch.allclose(resumed[k], whole[k], atol=1e-6)


def test_pretrain_ema_option_is_recorded(clean_dir, isolated_home):
    from helpers import invoke, ok

    ok(invoke("init", "--random-init", "--config", "tiny"))
    args = ("--steps", 3, "--batch-size", 1, "--patch-size", 16, "--config", "tiny")
    ok(invoke("backbone", "pretrain", clean_dir, "--name", "smooth", "--ema", 0.99, *args))
    recipe = json.loads(ok(invoke("backbone", "show", "smooth", "--json")).stdout)["recipe"]
    assert recipe["train"]["ema"] == 0.99
    refused = invoke("backbone", "pretrain", clean_dir, "--name", "bad", "--ema", 1.5, *args)
    assert refused.exit_code == 2 and "--ema" in refused.stderr
