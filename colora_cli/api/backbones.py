"""Backbones: creating a store with one, installing, pre-training (PROD), importing and exporting."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from colora.api.progress import SILENT, Reporter
from colora.core.defaults import DEVICE, INIT_SIZE, SEED

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from colora.core.training.loop import TrainResult
    from colora.store.schema import Backbone
    from colora.store.store import Store


@dataclass
class InitResult:
    store: Store
    backbone: Backbone
    created: bool  # False: the store was already set up
    starters: list[str] = field(default_factory=list)  # the starter adapters' tasks installed
    starters_skipped: list[str] = field(default_factory=list)  # one line per damaged starter file


def init_store(
    home=None, *, random_init: bool = False, config: str = INIT_SIZE, seed: int = SEED, starters: bool = True
) -> InitResult:
    """Create the store (idempotent) and install its default backbone: the bundled PROD one, or a
    random one with `random_init` (or when the package ships none); with the bundled one, also the
    package's starter adapters unless `starters` is False."""
    from colora.core.model.backbone import preset
    from colora.core.model.bundled import bundled_backbone
    from colora.store.store import Store

    preset(config)  # before anything is created
    store = Store.create(home)
    if store.default_backbone_name() is not None:
        return InitResult(store, store.backbone(), created=False)
    if random_init or bundled_backbone() is None:
        return InitResult(store, install_random(store, config, seed), created=True)
    row = install_bundled(store)
    if not starters:
        return InitResult(store, row, created=True)
    from colora.api.starters import install_starters

    report = install_starters(store)
    return InitResult(store, row, created=True, starters=report.installed, starters_skipped=report.problems)


def install_random(store: Store, config_name: str, seed: int, name: str | None = None) -> Backbone:
    from colora.core.model.backbone import build_backbone, count_parameters, preset
    from colora.core.model.weights import save_backbone

    model = build_backbone(preset(config_name), seed)
    with tempfile.TemporaryDirectory(dir=store.root) as tmp:
        path = Path(tmp) / "backbone.safetensors"
        sha = save_backbone(path, model, {"pretrained": "false", "seed": str(seed)})
        return store.add_backbone(
            name or f"random-{config_name}",
            path,
            sha256=sha,
            config=model.config.to_json(),
            params=count_parameters(model),
            pretrained=False,
            description="random init, not pre-trained",
            recipe={"seed": seed, "config": config_name},
        )


def install_file(store: Store, path: Path, name: str, *, make_default: bool = False) -> Backbone:
    """A backbone safetensors file (bundled or user-supplied), validated before it is copied in."""
    from colora.core.model.backbone import count_parameters
    from colora.core.model.weights import load_backbone
    from colora.store.names import validate_slug

    validate_slug(name, "backbone")
    model, meta = load_backbone(path)
    return store.add_backbone(
        name,
        path,
        sha256=meta["sha256"],
        config=model.config.to_json(),
        params=count_parameters(model),
        pretrained=meta.get("pretrained", "false") == "true",
        description=meta.get("description", "imported backbone"),
        recipe=json.loads(meta["recipe"]) if "recipe" in meta else None,
        loss_curve=json.loads(meta["loss_curve"]) if "loss_curve" in meta else None,
        make_default=make_default,
    )


def install_bundled(store: Store) -> Backbone:
    from colora.core.model.bundled import bundled_backbone

    path, name = bundled_backbone()
    return install_file(store, path, name, make_default=True)


def import_backbone(store: Store, file: Path, name: str, *, make_default: bool = False) -> Backbone:
    """A colora backbone file, or an ecosystem NAFNet checkpoint (BasicSR `.pth` with `params` /
    `params_ema`, a bare or `module.`-prefixed state dict, or the same as `.safetensors`), converted
    to a colora backbone file with its layout inferred from the tensors' shapes."""
    from colora.core.errors import InvalidInputError
    from colora.store.names import validate_slug

    validate_slug(name, "backbone")
    file = Path(file)
    if file.suffix.lower() not in (".safetensors", ".pth", ".pt"):
        raise InvalidInputError(
            f"{file.name} is not a .safetensors or .pth file",
            hint="give a colora backbone (.safetensors) or a NAFNet checkpoint (.pth, .safetensors)",
        )
    if _is_colora_backbone(file):
        return install_file(store, file, name, make_default=make_default)
    return install_checkpoint(store, file, name, make_default=make_default)


def _is_colora_backbone(file: Path) -> bool:
    from colora.core.files import read_safetensors_header

    if file.suffix.lower() != ".safetensors":
        return False
    try:
        kind = read_safetensors_header(file)[1].get("format")
    except (OSError, ValueError):
        return True  # unreadable: install_file reports why, in colora's words
    if kind == "colora-adapter":
        from colora.core.errors import InvalidInputError

        raise InvalidInputError(
            f"{file.name} is a colora adapter, not a backbone",
            hint="import it with `colora adapter import FILE --task NAME`",
        )
    return kind == "colora-backbone"


def install_checkpoint(store: Store, file: Path, name: str, *, make_default: bool = False) -> Backbone:
    """A BasicSR / NAFNet checkpoint, converted (names as they are, weights float32) and installed."""
    from colora.core.interop.basicsr import describe_layout, nafnet_from_checkpoint
    from colora.core.model.weights import save_backbone

    model, source = nafnet_from_checkpoint(file)
    where = "" if source == "bare" else f" ('{source}')"
    description = f"NAFNet checkpoint {file.name}{where}: {describe_layout(model.config)}"
    with tempfile.TemporaryDirectory(dir=store.root) as tmp:
        path = Path(tmp) / "backbone.safetensors"
        save_backbone(
            path,
            model,
            {
                "pretrained": "true",
                "description": description,
                "recipe": json.dumps({"imported_from": file.name, "checkpoint_key": source}),
            },
        )
        return install_file(store, path, name, make_default=make_default)


def export_backbone(store: Store, name: str, file: Path, *, overwrite: bool = False) -> Backbone:
    from colora.core.errors import ConflictError
    from colora.core.files import copy_atomic

    row = store.backbone(name)
    store.refuse_inside(file, "the destination")
    if Path(file).exists() and not overwrite:
        raise ConflictError(f"{file} already exists", hint="pass --overwrite to replace it")
    copy_atomic(store.path(row.path), file, overwrite=overwrite, expected_sha256=row.file_sha256)
    return row


def _preset_name(config) -> str:
    from colora.core.model.backbone import PRESETS

    return next((name for name, preset in PRESETS.items() if preset == config), "custom")


def backbone_rows(store: Store) -> list[dict]:
    default = store.default_backbone_name()
    return [
        {
            "name": b.name,
            "default": b.name == default,
            "pretrained": b.pretrained,
            "label": b.label,
            "params": b.params,
            "sha256": b.sha256,
            "size_bytes": b.size_bytes,
            "created": b.created_at,
        }
        for b in store.backbones()
    ]


def backbone_details(store: Store, name: str | None = None) -> dict:
    b = store.backbone(name)
    curve = json.loads(b.loss_curve) if b.loss_curve else None
    return {
        "name": b.name,
        "label": b.label,
        "pretrained": b.pretrained,
        "params": b.params,
        "sha256": b.sha256,
        "file": b.path,
        "size_bytes": b.size_bytes,
        "config": json.loads(b.config),
        "recipe": json.loads(b.recipe) if b.recipe else None,
        "final_loss": curve[-1][1] if curve else None,
        "created": b.created_at,
    }


# ---------------------------------------------------------------- PROD pre-training


@dataclass
class PretrainOptions:
    name: str = "prod"
    config: str = "medium"  # the size of the bundled backbone
    steps: int = 10000
    batch_size: int = 8
    patch_size: int = 96
    lr: float = 1e-3
    mode: str = "random"
    max_degradations: int = 3
    clean_fraction: float = 0.0  # share of empty chains (clean in, clean out)
    weights: dict[str, float] | None = None  # degradation name -> relative pick weight (unlisted: 1)
    ema: float = 0.0  # decay of a moving average of the weights, saved as the backbone (0: the last step's)
    seed: int = SEED
    checkpoint_every: int = 250
    resume: bool = False
    make_default: bool = False
    device: str = DEVICE
    init_from: str | None = None  # continue from this backbone's weights (its size; a new chunk)
    minutes: float | None = None  # a time budget instead of `steps` (steps measured on this machine first)
    workers: int = 0  # processes that build the batches ahead of the training step (0: the training process)


def parse_weights(pairs: Sequence[str]) -> dict[str, float] | None:
    """`["low_light=3", "gaussian_noise=2"]` -> a weights dict (InvalidInputError says what is wrong)."""
    from colora.core.errors import InvalidInputError

    weights: dict[str, float] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            weight = float(value) if sep else None
        except ValueError:
            weight = None
        if weight is None:
            raise InvalidInputError(f"--weight {pair!r} is not NAME=NUMBER", hint="e.g. --weight low_light=3")
        if name.strip() in weights:
            raise InvalidInputError(f"--weight names {name.strip()!r} twice")
        weights[name.strip()] = weight
    return weights or None


def check_weights(weights: dict[str, float] | None) -> dict[str, float] | None:
    """Known names and positive finite weights, or InvalidInputError listing the names."""
    from colora.core.data.degradations import DEGRADATIONS
    from colora.core.errors import InvalidInputError

    for name, weight in (weights or {}).items():
        if name not in DEGRADATIONS:
            raise InvalidInputError(
                f"--weight: unknown degradation {name!r}", hint=f"use one of {', '.join(DEGRADATIONS)}"
            )
        if not 0 < weight < float("inf"):
            raise InvalidInputError(f"--weight {name}: the weight must be a positive number, not {weight:g}")
    return weights


@dataclass
class Pretrained:
    backbone: Backbone
    result: TrainResult


def pretrain_backbone(
    store: Store, clean_dir: Path | Sequence[Path], options: PretrainOptions, reporter: Reporter = SILENT
) -> Pretrained | None:
    """PROD pre-training on a folder of clean images; the result is added to the store.

    Resumable: a checkpoint is kept under the store's pretrain/ folder until the end. Under
    `torchrun --nproc-per-node N`, data-parallel with `batch_size` per process: the leader (rank 0)
    writes the checkpoints and the backbone and returns the result, the others return None.
    """
    from colora.core.data.prod import MODES, ProdSampler
    from colora.core.device import resolve_device
    from colora.core.errors import ConflictError, InvalidInputError
    from colora.core.model.backbone import preset
    from colora.core.training.distributed import join
    from colora.core.training.loop import TrainConfig
    from colora.core.training.pretrain import pretrain, save_pretrained
    from colora.store.names import validate_slug

    o = options
    validate_slug(o.name, "backbone")
    config, init = preset(o.config), None
    if o.init_from is not None:
        from colora.api.models import backbone_model
        from colora.core.model.backbone import BackboneConfig

        start = store.backbone(o.init_from)
        config = BackboneConfig.from_json(start.config)
        init = (
            backbone_model(store, start),
            {**(json.loads(start.recipe) if start.recipe else {}), "sha256": start.sha256},
        )
    if o.mode not in MODES:
        raise InvalidInputError(f"unknown mode {o.mode!r}; use one of {', '.join(MODES)}")
    if any(b.name == o.name for b in store.backbones()):
        raise ConflictError(f"backbone '{o.name}' already exists", hint="choose another --name")
    dev = resolve_device(o.device)
    world = join(dev)
    follower = world is not None and not world.leader
    reporter = SILENT if follower else reporter
    train_config = TrainConfig(
        steps=o.steps,
        batch_size=o.batch_size,
        patch_size=o.patch_size,
        lr=o.lr,
        seed=o.seed,
        checkpoint_every=o.checkpoint_every,
        warmup_steps=min(200, o.steps // 10),
        log_every=50,
        ema=o.ema,
    )
    if not 0 <= o.clean_fraction < 1:
        raise InvalidInputError(f"--clean-fraction must be at least 0 and below 1, not {o.clean_fraction}")
    sampler = ProdSampler(
        mode=o.mode,
        max_degradations=o.max_degradations,
        clean_fraction=o.clean_fraction,
        weights=check_weights(o.weights),
    )
    checkpoint = store.path(store.pretrain_checkpoint_relpath(o.name))
    if checkpoint.exists() and not o.resume:
        raise ConflictError(
            f"an unfinished pre-training of '{o.name}' exists",
            hint="continue it with --resume, or choose another --name",
        )
    start_note = f"from '{o.init_from}'" if o.init_from else o.config
    if o.minutes is not None and o.resume:
        raise InvalidInputError(
            "--minutes cannot resume: its step count is measured anew",
            hint="resume with --steps N (the count the first run printed) and --resume",
        )
    folders = [clean_dir] if isinstance(clean_dir, (str, Path)) else list(clean_dir)
    length = f"{o.minutes:g} min" if o.minutes is not None else f"{o.steps} steps"
    reporter.note(
        f"Pre-training '{o.name}' ({start_note}, PROD mode {o.mode}) on {', '.join(map(str, folders))} "
        f"for {length}, device {dev.type}."
    )
    if world is not None:
        world.wait()  # every process has passed the checks above before any checkpoint is written
    with ExitStack() as stack:
        bar = []

        def start(final: TrainConfig) -> None:
            if o.minutes is not None:
                reporter.note(
                    f"{o.minutes:g} min at the speed measured here: {final.steps} steps "
                    f"(to resume after a stop: --steps {final.steps} --resume)."
                )
            bar.append(stack.enter_context(reporter.progress(f"pretrain {o.name}", final.steps, loss=True)))

        model, result, recipe = pretrain(
            folders,
            config,
            train_config,
            sampler,
            device=dev,
            checkpoint_path=checkpoint,
            resume=o.resume,
            on_step=lambda done, total, value: bar[0](done, value),
            init=init,
            world=world,
            workers=o.workers,
            minutes=o.minutes,
            on_start=start,
        )
    if follower:
        return None
    recipe["config_name"] = (init[1].get("config_name") or _preset_name(config)) if init else o.config
    chunks = len(recipe["chunks"])
    description = (
        f"PROD pre-trained ({o.mode} order, {recipe['total_steps']} steps"
        + (f" in {chunks} chunks" if chunks > 1 else "")
        + f" on {recipe['data']['images']} clean images"
        + (
            f", starting from {recipe['started_from'].get('imported_from', o.init_from)}"
            if "started_from" in recipe
            else ""
        )
        + ")"
    )
    with tempfile.TemporaryDirectory(dir=store.root) as tmp:
        path = Path(tmp) / "backbone.safetensors"
        save_pretrained(path, model, result, recipe, description)
        row = install_file(store, path, o.name, make_default=o.make_default)
    checkpoint.unlink(missing_ok=True)
    return Pretrained(row, result)
