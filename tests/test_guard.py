"""A training run that diverges goes back to a state from before the blow-up at half the learning
rate, instead of training on from the wreck; one unlucky batch is skipped; a run with neither is
untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from colora.core.errors import InvalidInputError
from colora.core.training import guard as guard_module
from colora.core.training.guard import DivergenceGuard, Recovery, loss_scale
from colora.core.training.loop import Checkpoint, TrainConfig, fit, learning_rate


class Interrupt(Exception):
    pass


def batches(spikes=()):
    """A 1x1 conv learns y = x / 2 + noise (the noise keeps the loss off zero, as real data does);
    at the steps in `spikes` the input is scaled up 10^4 so the loss jumps far above its median."""
    gen = torch.Generator().manual_seed(0)
    xs = [torch.rand(2, 3, 8, 8, generator=gen) for _ in range(4)]
    ys = [x / 2 + 0.1 * torch.randn(x.shape, generator=gen) for x in xs]

    def make(step, g):
        x, y = xs[step % 4], ys[step % 4]
        return (x * 1e4 if step in spikes else x), y

    return make


def conv():
    torch.manual_seed(0)
    model = nn.Conv2d(3, 3, 1, bias=False)
    return model, {"w": model.weight}


CONFIG = TrainConfig(steps=160, batch_size=2, patch_size=8, lr=1e-2, warmup_steps=5, log_every=10, ema=0.9)


@pytest.fixture
def guards(monkeypatch):
    """The guards fit builds, and the learning rate of every update AdamW makes."""
    made, rates = [], []
    init, step = DivergenceGuard.__init__, torch.optim.AdamW.step

    def remember(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    def recording_step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(DivergenceGuard, "__init__", remember)
    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    return made, rates


def state_at(made, model):
    """What a recovery must put back: parameters, AdamW's moments, the weight average."""
    opt_state = made[0].opt.state_dict()["state"][0]
    return (
        model.weight.detach().clone(),
        opt_state["exp_avg"].clone(),
        opt_state["exp_avg_sq"].clone(),
        made[0].ema["w"].clone(),
    )


def test_a_divergence_puts_back_an_older_state_and_halves_the_learning_rate(guards):
    made, rates = guards
    model, params = conv()
    seen = {}

    def watch(done, total, loss):
        if done in (50, 112):
            seen[done] = state_at(made, model)

    result = fit(model, params, batches(spikes={110, 111}), CONFIG, on_step=watch)
    # snapshots at steps 0, 50 and 100; two outliers in a row show the divergence at step 112: back to
    # the newest snapshot at least 50 steps older
    assert result.recoveries == [Recovery(step=112, back_to=50, lr_scale=0.5)] and result.skipped_steps == 0
    for before, after in zip(seen[50], seen[112], strict=True):
        assert torch.equal(before, after)
    kept = next(s for s in made[0]._snapshots if s.step == 50)  # training on did not write into it
    assert torch.equal(kept.optimizer["state"][0]["exp_avg"], seen[50][1])
    assert len(rates) == CONFIG.steps - 2  # the two outlier steps made no update
    assert rates[:110] == [learning_rate(CONFIG, s) for s in range(110)]
    assert rates[110:] == [learning_rate(CONFIG, s) * 0.5 for s in range(112, CONFIG.steps)]
    assert torch.isfinite(model.weight).all() and result.final_loss < 1.0


def test_one_outlier_batch_is_skipped_without_a_recovery(guards):
    made, rates = guards
    model, params = conv()
    result = fit(model, params, batches(spikes={80}), CONFIG)
    assert result.recoveries == [] and result.skipped_steps == 1
    assert rates == [learning_rate(CONFIG, s) for s in range(CONFIG.steps) if s != 80]


def test_an_outlier_right_after_a_recovery_is_judged_afresh():
    # 110 and 111 recover; 112 is a first outlier again (skipped), 113 is ordinary
    model, params = conv()
    result = fit(model, params, batches(spikes={110, 111, 112}), CONFIG)
    assert result.recoveries == [Recovery(112, 50, 0.5)] and result.skipped_steps == 1


def test_snapshots_are_copies_in_cpu_memory(guards):
    made, _ = guards
    model, params = conv()
    fit(model, params, batches(), CONFIG)
    for snapshot in made[0]._snapshots:
        w = snapshot.params["w"]
        assert w.device.type == "cpu" and w.data_ptr() != model.weight.data_ptr()


def test_diverging_again_from_the_same_state_goes_further_back():
    model, params = conv()
    result = fit(model, params, batches(spikes={110, 111, 114, 115}), CONFIG)
    assert result.recoveries == [Recovery(112, 50, 0.5), Recovery(116, 0, 0.25)]


def test_a_run_that_never_diverges_is_the_same_bit_for_bit(guards, monkeypatch):
    made, _ = guards
    model, params = conv()
    guarded = fit(model, params, batches(), CONFIG)
    assert guarded.recoveries == [] and len(made[0]._snapshots) == 3  # it did take snapshots
    monkeypatch.setattr(guard_module.DivergenceGuard, "healthy", lambda self, step, value: True)
    plain, plain_params = conv()
    unguarded = fit(plain, plain_params, batches(), CONFIG)
    assert torch.equal(model.weight, plain.weight)
    assert guarded.loss_curve == unguarded.loss_curve


def test_a_non_finite_loss_at_the_first_step_goes_back_to_the_start():
    model, params = conv()
    start = model.weight.detach().clone()
    make = batches()
    seen = {}

    def infinite_first(step, g):
        x, y = make(step, g)
        return (torch.full_like(x, torch.inf) if step == 0 else x), y

    def watch(done, total, loss):
        if done == 1:
            seen[1] = model.weight.detach().clone()

    result = fit(model, params, infinite_first, CONFIG, on_step=watch)
    assert result.recoveries == [Recovery(step=1, back_to=0, lr_scale=0.5)]
    assert torch.equal(seen[1], start) and torch.isfinite(model.weight).all()


def test_a_run_that_keeps_diverging_stops_with_a_clear_error():
    model, params = conv()
    with pytest.raises(InvalidInputError, match="diverged at step .* after 4 recoveries"):
        fit(model, params, batches(spikes=set(range(30, 160))), CONFIG)


def interrupted(tmp_path, spikes, stop_at):
    """A run killed at `stop_at`, then resumed from its last checkpoint (every 10 steps)."""
    config = TrainConfig(**{**CONFIG.__dict__, "checkpoint_every": 10})

    def stop(done, total, loss):
        if done == stop_at:
            raise Interrupt

    ckpt = Checkpoint(tmp_path / "c.safetensors", config.to_json())
    model, params = conv()
    with pytest.raises(Interrupt):
        fit(model, params, batches(spikes), config, checkpoint=ckpt, on_step=stop)
    model, params = conv()
    return model, fit(model, params, batches(spikes), config, checkpoint=ckpt, resume=True)


def test_a_recovered_run_resumes_at_its_lowered_learning_rate(tmp_path):
    whole, whole_params = conv()
    straight = fit(whole, whole_params, batches(spikes={110, 111}), CONFIG)
    model, resumed = interrupted(tmp_path, {110, 111}, stop_at=125)
    assert resumed.resumed_from == 120
    assert resumed.recoveries == straight.recoveries  # still reported after the resume
    assert torch.equal(model.weight, whole.weight)  # as if never interrupted: still at half the rate


def test_a_skipped_step_is_still_counted_after_a_resume(tmp_path):
    _, resumed = interrupted(tmp_path, {75}, stop_at=85)  # skipped before the step-80 checkpoint
    assert resumed.resumed_from == 80 and resumed.skipped_steps == 1 and resumed.recoveries == []


def test_a_resumed_run_still_judges_its_losses(tmp_path):
    # resumed at step 100, 10 steps before the spike: the losses before the interruption are its
    # median, so the divergence is caught (back to the resumed state, the only snapshot)
    _, resumed = interrupted(tmp_path, {110, 111}, stop_at=105)
    assert resumed.resumed_from == 100
    assert resumed.recoveries == [Recovery(step=112, back_to=100, lr_scale=0.5)]


def test_a_damaged_record_in_a_checkpoint_is_refused():
    model, params = conv()
    opt = torch.optim.AdamW(params.values())
    damaged = (
        "{",
        "[]",
        '{"history": [1, "x"], "recoveries": []}',
        '{"history": [-1], "recoveries": []}',
        '{"history": [], "recoveries": [], "skipped": 1.5}',
        '{"history": "123", "recoveries": []}',
        '{"history": [1e400], "recoveries": []}',
        '{"history": [' + "9" * 400 + '], "recoveries": []}',
        '{"history": [], "recoveries": [{"step": Infinity, "back_to": 0, "lr_scale": 0.5}]}',
        '{"history": [], "recoveries": [{"step": 5, "back_to": 9, "lr_scale": 0.5}]}',
        '{"history": [], "recoveries": [], "outlier_before": 1}',
        "[" * 100000,
    )
    for saved in damaged:
        with pytest.raises(InvalidInputError, match="damaged"):
            DivergenceGuard(params, opt, None, "l1", 0, saved)


def test_the_psnr_loss_is_judged_by_its_rmse():
    assert loss_scale(-20.0, "psnr") == pytest.approx(0.1)
    assert loss_scale(0.25, "l1") == 0.25
    model, params = conv()
    config = TrainConfig(**{**CONFIG.__dict__, "loss": "psnr"})
    assert fit(model, params, batches(), config).recoveries == []
    model, params = conv()
    assert fit(model, params, batches(spikes={110, 111}), config).recoveries == [Recovery(112, 50, 0.5)]


def test_the_summary_says_what_was_recovered(capsys):
    from colora.cli import output

    output.recoveries([Recovery(412, 350, 0.5)], skipped=2)
    said = capsys.readouterr().err
    assert "Training diverged at step 412: went back to step 350 and went on at 0.5x the learning rate" in said
    assert "Skipped the update of 2 step(s)" in said
