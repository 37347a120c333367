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
