"""`colora backbone list | show | pretrain | import | export | default`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from colora.api.backbones import PretrainOptions
from colora.cli import output
from colora.cli.options import Device, Home, Json, Size, choice, command_group
from colora.core.choices import MAX_BATCH_SIZE, MAX_PATCH_SIZE, PROD_MODES

PRETRAIN = PretrainOptions()  # the one place pre-training's defaults live: the options below show them

app = command_group("The store's backbones: list, show, pre-train, import and export.")


@app.command("list")
def list_backbones(home: Home = None, as_json: Json = False) -> None:
    """Every backbone in the store; the default is marked with *.

    Example: colora backbone list
    """
    from colora.api.backbones import backbone_rows
    from colora.store.store import Store

    rows = backbone_rows(Store.open(home))
    if as_json:
        output.print_json(rows)
        return
    output.table(
        None,
        ["backbone", "default", "params", "size", "sha256", "description"],
        [
            [
                r["name"],
                "*" if r["default"] else "",
                output.human_count(r["params"]),
                output.human_bytes(r["size_bytes"]),
                r["sha256"][:12],
                r["label"],
            ]
            for r in rows
        ],
        justify_numbers=False,
    )


@app.command("show")
def show(
    name: Annotated[Optional[str], typer.Argument(help="Backbone name (default: the store's default).")] = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Config, recipe and training summary of one backbone.

    Example: colora backbone show prod-small
    """
    from colora.api.backbones import backbone_details
    from colora.store.store import Store

    info = backbone_details(Store.open(home), name)
    if as_json:
        output.print_json(info)
        return
    output.table(
        f"backbone {info['name']}",
        ["field", "value"],
        [[k, json.dumps(v) if isinstance(v, (dict, list)) else v] for k, v in info.items()],
        justify_numbers=False,
    )


@app.command("pretrain")
def pretrain(
    clean_dirs: Annotated[
        list[Path], typer.Argument(help="Folders of clean images (at least --patch-size on each side), one pool.")
    ],
    name: Annotated[str, typer.Option("--name", help="Name of the new backbone in the store.")] = PRETRAIN.name,
    config: Size = PRETRAIN.config,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training steps.")] = PRETRAIN.steps,
    minutes: Annotated[
        Optional[float],
        typer.Option(
            "--minutes",
            min=0.01,
            help="Train for the steps this many minutes allow here (measured first), instead of --steps.",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=0,
            max=64,
            help="Processes that build the degraded crops ahead of each step (0: none). Pays on a "
            "GPU or with spare cores.",
        ),
    ] = PRETRAIN.workers,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=MAX_BATCH_SIZE, help="Crops per step (per process).")
    ] = PRETRAIN.batch_size,
    patch_size: Annotated[
        int, typer.Option("--patch-size", min=8, max=MAX_PATCH_SIZE, help="Side of the random square crops.")
    ] = PRETRAIN.patch_size,
    lr: Annotated[float, typer.Option("--lr", min=0.0)] = PRETRAIN.lr,
    mode: Annotated[
        choice(PROD_MODES),
        typer.Option("--mode", help="Degradation chains: random (PROD), fixed (canonical order) or single."),
    ] = PRETRAIN.mode,
    max_degradations: Annotated[
        int, typer.Option("--max-degradations", min=1, help="Longest chain (N).")
    ] = PRETRAIN.max_degradations,
    clean_fraction: Annotated[
        float,
        typer.Option(
            "--clean-fraction",
            min=0.0,
            max=0.99,
            help="Share of crops left clean (an empty chain), so the backbone learns to leave "
            "images that need nothing alone.",
        ),
    ] = PRETRAIN.clean_fraction,
    weight: Annotated[
        Optional[list[str]],
        typer.Option(
            "--weight",
            metavar="NAME=W",
            help="Pick a degradation W times as often as the others (repeatable), e.g. --weight "
            "low_light=3 --weight gaussian_noise=2 (an unknown name lists the names).",
        ),
    ] = None,
    ema: Annotated[
        float,
        typer.Option(
            "--ema",
            min=0.0,
            max=0.9999,
            help="Keep a moving average of the weights with this decay (BasicSR's params_ema; 0.999 is "
            "usual) and save the average as the backbone. 0: the last step's weights.",
        ),
    ] = PRETRAIN.ema,
    seed: Annotated[int, typer.Option("--seed")] = PRETRAIN.seed,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", min=1)] = PRETRAIN.checkpoint_every,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint of this --name.")] = False,
    default: Annotated[
        bool, typer.Option("--default/--no-default", help="Make it the store's default backbone.")
    ] = False,
    init_from: Annotated[
        Optional[str],
        typer.Option(
            "--init-from",
            help="Continue from this backbone's weights: one more chunk of a longer pre-training "
            "(its size; --config is ignored).",
        ),
    ] = None,
    device: Device = PRETRAIN.device,
    home: Home = None,
) -> None:
    """Pre-train a backbone with PROD (random-order degradation chains) and add it to the store.

    Example: colora backbone pretrain ./clean-photos ./more-photos --name prod-mine --config medium --minutes 120
    """
    from colora.api.backbones import PretrainOptions, parse_weights, pretrain_backbone
    from colora.store.store import Store

    options = PretrainOptions(
        name=name,
        config=config,
        steps=steps,
        batch_size=batch_size,
        patch_size=patch_size,
        lr=lr,
        mode=mode,
        max_degradations=max_degradations,
        clean_fraction=clean_fraction,
        weights=parse_weights(weight or []),
        ema=ema,
        seed=seed,
        checkpoint_every=checkpoint_every,
        resume=resume,
        make_default=default,
        device=device,
        init_from=init_from,
        minutes=minutes,
        workers=workers,
    )
    done = pretrain_backbone(Store.open(home), clean_dirs, options, output.REPORTER)
    if done is None:  # one of several torchrun processes: the leader reports
        return
    output.note(
        f"Pre-trained '{done.backbone.name}' in {done.result.wall_time_s / 60:.1f} min, final loss "
        f"{done.result.final_loss:.4f}{' (now the default backbone)' if default else ''}."
    )
    output.recoveries(done.result.recoveries, done.result.skipped_steps)


@app.command("import")
def import_backbone(
    file: Annotated[
        Path,
        typer.Argument(
            help="A colora backbone .safetensors file, or a NAFNet checkpoint "
            "(BasicSR .pth with params/params_ema, a state dict, .safetensors)."
        ),
    ],
    name: Annotated[str, typer.Option("--name", help="Name in the store.")],
    default: Annotated[bool, typer.Option("--default/--no-default", help="Make it the default backbone.")] = False,
    home: Home = None,
) -> None:
    """Add a backbone file: colora's own, or a NAFNet checkpoint (BasicSR, spandrel, chaiNNer).

    A NAFNet's size is read off its tensors; .pth files are read with torch.load(weights_only=True)
    only. Example: colora backbone import NAFNet-SIDD-width32.pth --name nafnet-sidd
    """
    from colora.api.backbones import import_backbone as run_import
    from colora.store.names import validate_slug
    from colora.store.store import Store

    validate_slug(name, "backbone")
    row = run_import(Store.open(home), file, name, make_default=default)
    output.note(f"Imported backbone '{row.name}' ({row.label}, sha256 {row.sha256[:12]}).")


@app.command("export")
def export_backbone(
    name: Annotated[str, typer.Argument(help="Backbone name.")],
    file: Annotated[Path, typer.Argument(help="Destination .safetensors file.")],
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    home: Home = None,
) -> None:
    """Copy a backbone out of the store as a .safetensors file.

    Example: colora backbone export prod-small ./prod-small.safetensors
    """
    from colora.api.backbones import export_backbone as run_export
    from colora.store.store import Store

    row = run_export(Store.open(home), name, file, overwrite=overwrite)
    output.note(f"Exported '{row.name}' to {file}.")


@app.command("default")
def set_default(name: Annotated[str, typer.Argument(help="Backbone name.")], home: Home = None) -> None:
    """Make a backbone the default for new adapters.

    Example: colora backbone default prod-small
    """
    from colora.store.store import Store

    Store.open(home).set_default_backbone(name)
    output.note(f"'{name}' is now the default backbone.")
