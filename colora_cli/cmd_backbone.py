"""`colora backbone list | show`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from colora_cli import output
from colora_cli.options import Device, Home, Json

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from store.store import Store  # noqa: F401

app = typer.Typer(help="The store's backbones: list, show, pre-train, import and export.", no_args_is_help=True)


@app.command("list")
def list_backbones(home: Home = None, as_json: Json = False) -> None:
    """Every backbone in the store; the default is marked with *.

    Example: colora backbone list
    """
    from store.store import Store
    store = Store.open(home)
    default = store.default_backbone_name()
    rows = [{"name": b.name, "default": b.name == default, "pretrained": b.pretrained, "label": b.label,
             "params": b.params, "sha256": b.sha256, "size_bytes": b.size_bytes, "created": b.created_at}
            for b in store.backbones()]
    if as_json:
        output.print_json(rows)
        return
    output.table(None, ["backbone", "default", "params", "size", "sha256", "description"],
                 [[r["name"], "*" if r["default"] else "", output.human_count(r["params"]),
                   output.human_bytes(r["size_bytes"]), r["sha256"][:12], r["label"]] for r in rows], justify_numbers=False)


@app.command("show")
def show(
    name: Annotated[Optional[str], typer.Argument(help="Backbone name (default: the store's default).")] = None,
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Config, recipe and training summary of one backbone.

    Example: colora backbone show prod-small
    """
    from store.store import Store
    store = Store.open(home)
    b = store.backbone(name)
    curve = json.loads(b.loss_curve) if b.loss_curve else None
    info = {"name": b.name, "label": b.label, "pretrained": b.pretrained, "params": b.params, "sha256": b.sha256,
            "file": b.path, "size_bytes": b.size_bytes, "config": json.loads(b.config),
            "recipe": json.loads(b.recipe) if b.recipe else None,
            "final_loss": curve[-1][1] if curve else None, "created": b.created_at}
    if as_json:
        output.print_json(info)
        return
    output.table(f"backbone {b.name}", ["field", "value"],
                 [[k, json.dumps(v) if isinstance(v, (dict, list)) else v] for k, v in info.items()], justify_numbers=False)


@app.command("pretrain")
def pretrain(
    clean_dir: Annotated[Path, typer.Argument(help="Folder of clean images (at least --patch-size on each side).")],
    name: Annotated[str, typer.Option("--name", help="Name of the new backbone in the store.")] = "prod-small",
    config: Annotated[str, typer.Option("--config", help="Backbone size: tiny, small or base.")] = "small",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training steps.")] = 10000,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 8,
    patch_size: Annotated[int, typer.Option("--patch-size", min=8)] = 96,
    lr: Annotated[float, typer.Option("--lr", min=0.0)] = 1e-3,
    mode: Annotated[str, typer.Option("--mode", help="Degradation chains: random (PROD), fixed (canonical order) or single.")] = "random",
    max_degradations: Annotated[int, typer.Option("--max-degradations", min=1, help="Longest chain (N).")] = 3,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", min=1)] = 250,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint of this --name.")] = False,
    default: Annotated[bool, typer.Option("--default/--no-default", help="Make it the store's default backbone.")] = False,
    device: Device = "auto",
    home: Home = None,
) -> None:
    """Pre-train a backbone with PROD (random-order degradation chains) and add it to the store.

    Example: colora backbone pretrain ./clean-photos --name prod-small --steps 10000
    """
    import tempfile

    from core.model.backbone import PRESETS
    from core.device import resolve_device
    from core.errors import ConflictError, InvalidInputError
    from core.training.pretrain import pretrain as run_pretrain
    from core.training.pretrain import save_pretrained
    from core.data.prod import MODES, ProdSampler
    from core.training.loop import TrainConfig
    from store.names import validate_slug
    from store.store import Store

    validate_slug(name, "backbone")
    if config not in PRESETS:
        raise InvalidInputError(f"unknown backbone config {config!r}; use one of {', '.join(PRESETS)}")
    if mode not in MODES:
        raise InvalidInputError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    store = Store.open(home)
    if any(b.name == name for b in store.backbones()):
        raise ConflictError(f"backbone '{name}' already exists", hint="choose another --name")
    dev = resolve_device(device)
    train_config = TrainConfig(steps=steps, batch_size=batch_size, patch_size=patch_size, lr=lr, seed=seed,
                               checkpoint_every=checkpoint_every, warmup_steps=min(200, steps // 10), log_every=50)
    sampler = ProdSampler(mode=mode, max_degradations=max_degradations)
    checkpoint = store.path(f"pretrain/{name}/checkpoint.safetensors")
    if checkpoint.exists() and not resume:
        raise ConflictError(f"an unfinished pre-training of '{name}' exists",
                            hint="continue it with --resume, or choose another --name")
    output.note(f"Pre-training '{name}' ({config}, PROD mode {mode}) on {clean_dir} for {steps} steps, device {dev.type}.")
    with output.progress(f"pretrain {name}", steps, loss=True) as update:
        model, result, recipe = run_pretrain(
            clean_dir, PRESETS[config], train_config, sampler, device=dev, checkpoint_path=checkpoint, resume=resume,
            on_step=lambda done, total, value: update(done, value))
    recipe["config_name"] = config
    description = f"PROD pre-trained ({mode} order, {steps} steps on {recipe['data']['images']} clean images)"
    with tempfile.TemporaryDirectory(dir=store.root) as tmp:
        path = Path(tmp) / "backbone.safetensors"
        save_pretrained(path, model, result, recipe, description)
        from colora_cli.backbones import install_file

        row = install_file(store, path, name, make_default=default)
    checkpoint.unlink(missing_ok=True)
    output.note(f"Pre-trained '{row.name}' in {result.wall_time_s / 60:.1f} min, final loss {result.final_loss:.4f}"
                f"{' (now the default backbone)' if default else ''}.")


@app.command("import")
def import_backbone(
    file: Annotated[Path, typer.Argument(help="A colora backbone .safetensors file.")],
    name: Annotated[str, typer.Option("--name", help="Name in the store.")],
    default: Annotated[bool, typer.Option("--default/--no-default", help="Make it the default backbone.")] = False,
    home: Home = None,
) -> None:
    """Add a backbone file (safetensors only; shapes are checked against its config).

    Example: colora backbone import prod-small.safetensors --name prod-small
    """
    from colora_cli.backbones import install_file
    from core.errors import InvalidInputError
    from store.names import validate_slug
    from store.store import Store

    validate_slug(name, "backbone")
    if file.suffix.lower() != ".safetensors":
        raise InvalidInputError(f"{file.name} is not a .safetensors file", hint="colora loads weights only from safetensors")
    store = Store.open(home)
    row = install_file(store, file, name, make_default=default)
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
    from core.errors import ConflictError
    from core.files import copy_atomic
    from store.store import Store

    store = Store.open(home)
    b = store.backbone(name)
    if file.exists() and not overwrite:
        raise ConflictError(f"{file} already exists", hint="pass --overwrite to replace it")
    copy_atomic(store.path(b.path), file)
    output.note(f"Exported '{b.name}' to {file}.")


@app.command("default")
def set_default(name: Annotated[str, typer.Argument(help="Backbone name.")], home: Home = None) -> None:
    """Make a backbone the default for new adapters.

    Example: colora backbone default prod-small
    """
    from store.store import Store
    store = Store.open(home)
    store.set_default_backbone(name)
    output.note(f"'{name}' is now the default backbone.")
