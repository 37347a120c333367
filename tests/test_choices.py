"""One source per default and per choice list: the command line shows what the use cases use."""

from __future__ import annotations

import dataclasses

import pytest
import typer

from colora.api.backbones import PretrainOptions
from colora.api.training import TrainOptions
from colora.core import choices


def command_defaults(app_or_command, name: str | None = None) -> dict:
    if name is None:
        app = typer.Typer()
        app.command()(app_or_command)
        command = typer.main.get_command(app)
    else:
        command = typer.main.get_command(app_or_command).commands[name]
    return {p.name: p.default for p in command.params}


@pytest.mark.parametrize(
    "options, command",
    [
        (TrainOptions, lambda: command_defaults(__import__("colora.cli.cmd_train", fromlist=["train"]).train)),
        (
            PretrainOptions,
            lambda: command_defaults(__import__("colora.cli.cmd_backbone", fromlist=["app"]).app, "pretrain"),
        ),
    ],
)
def test_option_defaults_are_the_use_cases_defaults(options, command):
    shown = command()
    fields = {f.name: f.default for f in dataclasses.fields(options)}
    common = {name for name in fields if name in shown and name not in ("steps", "minutes")}
    assert len(common) >= 8
    assert {n: shown[n] for n in common} == {n: fields[n] for n in common}


def function_defaults(function) -> dict:
    import inspect

    return {
        n: p.default
        for n, p in inspect.signature(function).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def cli(module: str, attribute: str, name: str | None = None) -> dict:
    return command_defaults(getattr(__import__(f"colora.cli.{module}", fromlist=[attribute]), attribute), name)


@pytest.mark.parametrize(
    "use_case, command, least",
    [
        ("colora.api.restoring:restore_images", lambda: cli("cmd_restore", "restore"), 5),
        ("colora.api.cluster:restore_on_ray", lambda: cli("cmd_restore", "restore"), 3),
        ("colora.api.evaluation:evaluate_task", lambda: cli("cmd_eval", "eval_task"), 4),
        ("colora.api.compare:compare_grid", lambda: cli("cmd_compare", "compare"), 3),
        ("colora.api.backbones:init_store", lambda: cli("cmd_store", "init"), 3),
        ("colora.api.tasks:add_task", lambda: cli("cmd_task", "app", "add"), 1),
        ("colora.api.adapters:export_adapter", lambda: cli("cmd_adapter", "app", "export"), 2),
        ("colora.api.recycling:distill_meta", lambda: cli("cmd_recycle", "app", "distill"), 2),
        ("colora.api.ranking:PlanOptions", lambda: cli("cmd_ranks", "ranks"), 5),
        ("colora.api.recycling:AdaptOptions", lambda: cli("cmd_recycle", "adapt"), 6),
        ("colora:init", lambda: cli("cmd_store", "init"), 3),
    ],
)
def test_every_command_shows_its_use_case_s_defaults(use_case, command, least):
    module, name = use_case.split(":")
    target = getattr(__import__(module, fromlist=[name]), name)
    if dataclasses.is_dataclass(target):
        defaults = {f.name: f.default for f in dataclasses.fields(target)}
    else:
        defaults = function_defaults(target)
    shown = command()
    aliases = {"as_json": "json", "default": "make_default"}  # the option's name where it differs
    common = {n for n in shown if aliases.get(n, n) in defaults and shown[n] is not None}
    assert len(common) >= least, common
    assert {n: shown[n] for n in common} == {n: defaults[aliases.get(n, n)] for n in common}


def test_the_choice_lists_are_the_ones_the_core_checks():
    from colora.api.adapters import FORMATS
    from colora.api.exporting import ENGINE_CHOICES
    from colora.core.data.prod import MODES
    from colora.core.device import DEVICES
    from colora.core.model.backbone import PRESETS
    from colora.core.training.loop import LOSSES
    from colora.core.training.ranks import METHODS

    assert tuple(PRESETS) == choices.BACKBONE_SIZES
    assert (LOSSES, METHODS, MODES, DEVICES, FORMATS, ENGINE_CHOICES) == (
        choices.LOSSES,
        choices.RANK_METHODS,
        choices.PROD_MODES,
        choices.DEVICES,
        choices.ADAPTER_FORMATS,
        choices.ENGINES,
    )
