"""Training really trains, touches only the adapter, resumes, and never forgets other tasks."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from torch import nn

import helpers
from colora.core.inference.tiles import restore_tensor
from colora.core.model.backbone import PRESETS, build_backbone
from colora.core.model.lora import lora_layers, uniform_rank_plan
from colora.core.model.weights import state_fingerprint
from colora.core.training.adapter import train_adapter
from colora.core.training.loop import TrainConfig, learning_rate
from helpers import make_pairs, ok


def file_sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pair_paths(folder):
    return [(str(p), str(folder / "target" / p.name)) for p in sorted((folder / "input").iterdir())]


def test_fifty_steps_lower_the_loss_and_change_only_the_adapter(tmp_path):
    folder = make_pairs(tmp_path / "p", n=4, size=(32, 32))
    backbone = build_backbone(PRESETS["tiny"], seed=0)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    config = TrainConfig(steps=50, batch_size=4, patch_size=32, lr=5e-3, log_every=5, warmup_steps=5)
    model, meta, result = train_adapter(
        backbone, state_fingerprint(before), "noise", pair_paths(folder), config, uniform_rank_plan(backbone, 2)
    )
    first, last = result.loss_curve[0][1], result.loss_curve[-1][1]
    assert last < 0.8 * first, result.loss_curve
    for k, v in backbone.state_dict().items():  # the backbone we were given is untouched
        assert torch.equal(v, before[k])
    for path, layer in lora_layers(model).items():  # and so is every base weight inside the adapted copy
        assert torch.equal(layer.base.weight, before[f"{path}.weight"])
    assert any(layer.lora_B.abs().sum() > 0 for layer in lora_layers(model).values())
    assert meta.extra["steps"] == 50


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path):
    folder = make_pairs(tmp_path / "p", n=3, size=(24, 24))
    backbone = build_backbone(PRESETS["tiny"], seed=0)
    sha = state_fingerprint(backbone.state_dict())
    plan = uniform_rank_plan(backbone, 2)
    config = TrainConfig(steps=20, batch_size=2, patch_size=16, checkpoint_every=5, log_every=5, warmup_steps=2)

    torch.manual_seed(0)
    full, _, full_result = train_adapter(backbone, sha, "t", pair_paths(folder), config, plan)

    ckpt = tmp_path / "ckpt.safetensors"

    def stop_at_12(done, total, loss):
        if done == 12:
            raise Interrupt

    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        train_adapter(backbone, sha, "t", pair_paths(folder), config, plan, checkpoint_path=ckpt, on_step=stop_at_12)
    assert ckpt.exists()
    torch.manual_seed(123)  # resuming must not depend on the global RNG
    resumed, _, result = train_adapter(
        backbone, sha, "t", pair_paths(folder), config, plan, checkpoint_path=ckpt, resume=True
    )
    assert result.resumed_from == 10
    for path, layer in lora_layers(full).items():
        other = lora_layers(resumed)[path]
        torch.testing.assert_close(other.lora_A, layer.lora_A, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(other.lora_B, layer.lora_B, atol=1e-6, rtol=1e-5)
    assert [s for s, _ in result.loss_curve] == [s for s, _ in full_result.loss_curve]


def test_learning_rate_warms_up_then_decays():
    config = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.01)
    lrs = [learning_rate(config, s) for s in range(100)]
    assert lrs[0] < lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(1e-5, rel=0.05)


def test_tiles_blend_exactly_for_a_pointwise_model():
    model = nn.Conv2d(3, 3, 1).double()
    image = torch.rand(3, 70, 97, dtype=torch.float64)
    whole = restore_tensor(model, image, tile=0)
    tiled = restore_tensor(model, image, tile=32, overlap=8)
    torch.testing.assert_close(tiled, whole, atol=1e-12, rtol=0)


def invoke(*args):
    return ok(helpers.invoke(*args))


def test_second_task_does_not_change_the_first(tmp_path, isolated_home):
    invoke("init", "--random-init", "--config", "tiny")
    backbone_file = next((isolated_home / "backbones").glob("*.safetensors"))
    backbone_sha = file_sha(backbone_file)
    invoke("task", "add", "first", make_pairs(tmp_path / "a", n=5, seed=1))
    invoke("task", "add", "second", make_pairs(tmp_path / "b", n=5, seed=2, noise=40))
    train = ("--steps", 15, "--batch-size", 2, "--patch-size", 24)
    invoke("train", "first", *train)
    first_eval = json.loads(invoke("eval", "first", "--json").stdout)
    adapter = next((isolated_home / "tasks" / "first").glob("adapter-*.safetensors"))
    adapter_sha = file_sha(adapter)

    invoke("train", "second", *train)
    invoke("eval", "second")

    assert file_sha(adapter) == adapter_sha
    assert json.loads(invoke("eval", "first", "--json").stdout) == first_eval
    assert file_sha(backbone_file) == backbone_sha  # training never writes the backbone


def test_validation_keeps_the_best_state_and_it_survives_a_resume(tmp_path):
    from colora.core.training.loop import fit

    model = nn.Conv2d(3, 3, 1, bias=False)
    params = {"w": model.weight}
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=gen)
    config = TrainConfig(
        steps=12, batch_size=2, patch_size=8, lr=1e-2, warmup_steps=1, validate_every=3, checkpoint_every=3, log_every=3
    )
    scores = iter([1.0, 5.0, 2.0, 3.0])  # the second validation (step 6) is the best

    def validate(m):
        return next(scores)

    seen = {}

    def remember(done, total, loss):
        if done == 6:
            seen["w"] = model.weight.detach().clone()

    result = fit(model, params, lambda step, g: (x, x), config, validate=validate, on_step=remember)
    assert result.best_step == 6 and [s for s, _ in result.val_curve] == [3, 6, 9, 12]
    assert torch.equal(model.weight, seen["w"])  # the best state, not the last, is handed back

    # a checkpoint carries the best state and the validations so far
    from colora.core.training.loop import Checkpoint

    ckpt = Checkpoint(tmp_path / "c.safetensors", "key")
    model2 = nn.Conv2d(3, 3, 1, bias=False)
    params2 = {"w": model2.weight}
    scores = iter([1.0, 5.0, 2.0, 3.0])

    def stop_after_9(done, total, loss):  # step 9 is checkpointed, step 10 is lost
        if done == 6:
            seen["w2"] = model2.weight.detach().clone()
        if done == 10:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(model2, params2, lambda step, g: (x, x), config, validate=validate, checkpoint=ckpt, on_step=stop_after_9)
    scores = iter([3.0])  # only step 12 is left to validate: worse than step 6's 5.0
    resumed = fit(model2, params2, lambda step, g: (x, x), config, validate=validate, checkpoint=ckpt, resume=True)
    assert resumed.resumed_from == 9 and resumed.best_step == 6
    assert torch.equal(model2.weight, seen["w2"])


def test_train_with_a_time_budget_and_validation_pairs(tmp_path, isolated_home):
    invoke("init", "--random-init", "--config", "tiny")
    invoke("task", "add", "noise", make_pairs(tmp_path / "p", n=6, size=(32, 32)), "--val-fraction", "0.34")
    result = invoke("train", "noise", "--minutes", "0.05", "--rank", "2", "--patch-size", "16", "--batch-size", "2")
    assert "0.05 min at" in result.stderr and "Kept the state of step" in result.stderr
    failed = helpers.invoke("train", "noise", "--minutes", "1", "--steps", "5")
    assert failed.exit_code == 1 and "--steps or --minutes, not both" in failed.stderr
