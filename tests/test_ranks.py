"""CoLoRA rank plans: FAIG scores, the budget mapping, and adapters trained with a plan."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open
from torch import nn

import helpers
from colora.core.errors import InvalidInputError
from colora.core.model.backbone import PRESETS, build_backbone, count_parameters
from colora.core.model.lora import lora_parameter_count, lora_targets
from colora.core.training.ranks import faig_scores, full_rank, plan_from_scores, uniform_plan
from helpers import make_pairs


def pair_paths(folder):
    return [(str(p), str(folder / "target" / p.name)) for p in sorted((folder / "input").iterdir())]


@pytest.mark.parametrize("budget", [0.1, 0.2, 0.4])
def test_plan_respects_budget_and_names_only_targets(budget):
    model = build_backbone(PRESETS["tiny"], seed=0)
    targets = lora_targets(model)
    scores = {p: float(i % 5) for i, p in enumerate(targets)}
    plan = plan_from_scores(model, scores, budget)
    assert set(plan.ranks) == set(targets)
    assert plan.params == lora_parameter_count(model, plan.ranks)
    assert plan.params <= budget * count_parameters(model)
    assert all(1 <= r <= full_rank(targets[p]) for p, r in plan.ranks.items())
    uni = uniform_plan(model, budget)
    assert uni.params <= budget * count_parameters(model)


def test_higher_contribution_gets_no_lower_rank_per_unit_cost():
    model = build_backbone(PRESETS["tiny"], seed=0)
    paths = list(lora_targets(model))
    scores = {p: 0.0 for p in paths}
    scores["encoders.0.0.conv1"] = 10.0
    plan = plan_from_scores(model, scores, 0.3)
    assert plan.ranks["encoders.0.0.conv1"] > 1
    assert all(plan.ranks[p] == 1 for p in paths if p != "encoders.0.0.conv1")


def test_unknown_path_is_an_error():
    model = build_backbone(PRESETS["tiny"], seed=0)
    with pytest.raises(InvalidInputError, match="not LoRA targets"):
        plan_from_scores(model, {"encoders.9.0.conv1": 1.0}, 0.1)


def test_budget_too_small_is_an_error():
    model = build_backbone(PRESETS["tiny"], seed=0)
    with pytest.raises(InvalidInputError, match="minimum rank"):
        plan_from_scores(model, {}, 0.001)


def test_faig_scores_are_deterministic_for_a_seed(tmp_path):
    folder = make_pairs(tmp_path / "p", n=3, size=(24, 24))
    model = build_backbone(PRESETS["tiny"], seed=0)
    kwargs = dict(probe_steps=5, path_steps=3, batch_size=2, patch_size=16)
    a = faig_scores(model, pair_paths(folder), seed=1, **kwargs)
    b = faig_scores(model, pair_paths(folder), seed=1, **kwargs)
    c = faig_scores(model, pair_paths(folder), seed=2, **kwargs)
    assert a == b
    assert a != c
    assert set(a) == set(lora_targets(model)) and sum(a.values()) > 0


class DeadBranch(nn.Module):
    """`dead` never reaches the output: its gradient is exactly zero."""

    def __init__(self):
        super().__init__()
        self.live = nn.Conv2d(3, 3, 3, padding=1)
        self.dead = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        self.dead(x)
        return x + self.live(x)


def test_layer_with_zero_gradient_gets_the_minimum_rank(tmp_path):
    folder = make_pairs(tmp_path / "p", n=2, size=(16, 16))
    model = DeadBranch()
    scores = faig_scores(model, pair_paths(folder), probe_steps=3, path_steps=2, batch_size=2, patch_size=16)
    assert scores["dead"] == 0.0 and scores["live"] > 0
    plan = plan_from_scores(model, scores, 0.9, min_rank=1)
    assert plan.ranks["dead"] == 1 and plan.ranks["live"] > 1


def test_training_with_a_plan_gives_exactly_the_planned_ranks(tmp_path, isolated_home):
    def ok(*args):
        return helpers.ok(helpers.invoke(*args))

    ok("init", "--random-init", "--config", "tiny")
    ok("task", "add", "noise", make_pairs(tmp_path / "p", n=4, size=(32, 32)))
    plan = json.loads(ok("ranks", "noise", "--probe-steps", 4, "--path-steps", 2, "--budget", 0.2, "--json").stdout)
    assert plan["params"] <= plan["budget_params"]
    ok("train", "noise", "--steps", 3, "--patch-size", 16, "--batch-size", 2)
    adapter = next((isolated_home / "tasks" / "noise").glob("adapter-*.safetensors"))
    with safe_open(str(adapter), "pt") as f:
        meta = f.metadata()
        for path, rank in plan["ranks"].items():
            assert f.get_tensor(f"{path}.lora_A").shape[0] == rank
            assert f.get_tensor(f"{path}.lora_B").shape[1] == rank
    assert json.loads(meta["rank_plan"]) == plan["ranks"]
    assert meta["plan_method"] == "faig"
    assert json.loads(meta["extra"])["plan_info"]["settings"]["probe_steps"] == 4
    listing = json.loads(ok("list", "--json").stdout)[0]
    assert listing["plan_method"] == "faig" and listing["budget_percent"] == 20.0
    # --rank forces a uniform plan
    ok("train", "noise", "--steps", 2, "--patch-size", 16, "--batch-size", 2, "--rank", 2)
    adapter = next((isolated_home / "tasks" / "noise").glob("adapter-*.safetensors"))
    with safe_open(str(adapter), "pt") as f:
        assert f.metadata()["plan_method"] == "uniform"
        assert f.get_tensor("encoders.0.0.conv1.lora_A").shape[0] == 2
