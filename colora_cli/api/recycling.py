"""LoRA Recycle: a task's adapter mixed from the zoo with no training (`adapt`), the distilled
meta-adapter (`recycle distill | show`), and the degradation signatures behind `restore --task auto`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from colora.api.progress import SILENT, Reporter
from colora.core.defaults import DISTILL_STEPS, REFINE_STEPS, SEED
from colora.core.errors import ColoraError, ConflictError, IntegrityError, InvalidInputError, NotFoundError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from colora.store.schema import Adapter, Backbone
    from colora.store.store import Store

SIGNATURE_PAIRS = 32  # training inputs per task that make its signature (bench/auto_classify.py: 16 chose worse)
MAX_CLEAN = 64  # clean images the meta-adapter's surrogate episodes are drawn from
SURROGATE_SIZE = 96  # px of the data-free episodes' synthetic clean images


def load_zoo(store: Store, backbone_row: Backbone, backbone, *, exclude: str | None = None, dtype=None):
    """(rows, ZooAdapters) of every trained adapter on this backbone (but `exclude`'s), checked like any adapter."""
    import torch

    from colora.api.models import adapter_file
    from colora.core.recycle.mixture import zoo_adapter

    rows = store.zoo(backbone_row, exclude=exclude)
    if not rows:
        raise NotFoundError(
            f"the adapter zoo is empty: no other task has a trained adapter on backbone '{backbone_row.name}'",
            hint="train adapters for other tasks first (`colora train NAME`)",
        )
    zoo = []
    for row in rows:
        tensors, meta = adapter_file(store, row)
        zoo.append(zoo_adapter(row.task.name, tensors, meta, backbone, dtype or torch.float32))
    return rows, zoo


def signatures(store: Store, backbone_row: Backbone, backbone) -> tuple[dict[str, dict], list[str]]:
    """task -> signature for every adapter on this backbone whose task has training pairs (cached in
    the store) or a cached signature (a starter's, installed with it); and the tasks left out
    because they have neither."""
    import torch

    from colora.core.data.crops import to_tensor
    from colora.core.data.images import load_image
    from colora.core.recycle.signature import image_features, signature, usable

    found, skipped = {}, []
    for row in store.adapters(backbone_row):
        try:  # the cache is the store's text: a damaged one is recomputed
            cached = json.loads(row.signature) if row.signature else None
        except ValueError:
            cached = None
        if usable(cached):
            found[row.task.name] = cached
            continue
        pairs = store.pairs(row.task, "train")[:SIGNATURE_PAIRS]
        if not pairs:
            skipped.append(row.task.name)
            continue
        embeddings = torch.stack([image_features(to_tensor(load_image(p.input_path)[0]), backbone) for p in pairs])
        sig = signature(embeddings)
        store.set_signature(row, json.dumps(sig))
        found[row.task.name] = sig
    return found, skipped


# ---------------------------------------------------------------- adapt


@dataclass
class AdaptOptions:
    meta: bool = False  # predict the mixture with the distilled meta-adapter
    # one coefficient per adapter and network stage (None: per stage for a fitted mixture, per adapter
    # with --meta); bench/recycle.py: 76 % of the gap closed at K = 4 against 64 % per adapter
    per_stage: bool | None = None
    keep_input: bool = True  # the built-in "leave the image alone" direction (core.recycle.mixture)
    pairs: int = 32
    steps: int | None = None  # refinement steps [default: REFINE_STEPS per stage, 0 per adapter]
    seconds: float = 10.0  # the whole adaptation's, not only the fit's
    seed: int = SEED
    replace: bool = False


@dataclass
class AdaptOutcome:
    task: str
    method: str  # recycled-mixture | recycled-meta
    mixture: object  # core.recycle.mixture.Mixture
    k: int  # example pairs used
    trainable_params: int
    adapter_bytes: int
    seconds: float
    adapters: int = 0  # zoo adapters the mixture was fitted over (the built-in keep-input not counted)


def adapt_task(
    store: Store, name: str, options: AdaptOptions | None = None, reporter: Reporter = SILENT
) -> AdaptOutcome:
    """Build the task's adapter from the other tasks' adapters, fitted on its few pairs; no training."""
    import torch

    from colora.api.models import backbone_model
    from colora.api.tasks import pair_tensors

    o = options or AdaptOptions()
    if o.meta and o.per_stage:
        raise InvalidInputError(
            "--meta predicts per-adapter coefficients; --per-stage applies to the fitted mixture only",
            hint="drop one of the two options",
        )
    per_stage = not o.meta if o.per_stage is None else o.per_stage
    steps = (REFINE_STEPS if per_stage else 0) if o.steps is None else o.steps
    started = time.perf_counter()
    task = store.task(name)
    current = store.adapter(task)
    if current is not None and not current.recycled and not o.replace:
        raise ConflictError(
            f"task '{name}' already has a trained adapter",
            hint=f"pass --replace to replace it with a recycled one, or `colora eval {name}` to use it",
        )
    backbone_row = store.backbone()
    backbone = backbone_model(store, backbone_row).eval()
    examples = pair_tensors(store, task, "train", o.pairs)
    if not examples:
        raise InvalidInputError(
            f"task '{name}' has no training pairs to adapt from",
            hint=f"add at least one pair: `colora task add {name} FOLDER`",
        )
    zoo_rows, zoo = load_zoo(store, backbone_row, backbone, exclude=name)
    torch.manual_seed(o.seed)
    if o.meta:
        from colora.core.recycle.mixture import score_on_support

        mixture, zoo = _predicted_mixture(store, backbone_row, backbone, zoo_rows, zoo, name, examples, o.seed)
        # a prediction is checked on the examples like a fit: the net scales a linearised solution
        # and never sees the exact mixture's output on them
        mixture = score_on_support(backbone, zoo, mixture, examples, seed=o.seed)
        if mixture.info["support_mse"] >= mixture.info["support_mse_backbone"]:
            raise ColoraError(
                f"the meta-adapter's mixture does not beat the backbone alone on the {len(examples)} "
                f"example pair(s) of '{name}'; no adapter was made",
                hint=f"fit a mixture instead with `colora adapt {name}` (without --meta), or `colora train {name}`",
            )
        method = "recycled-meta"
    else:
        if o.keep_input:
            from colora.core.recycle.mixture import with_keep_input

            zoo = with_keep_input(backbone, zoo)
        # --seconds bounds the whole command: what loading took is not the fit's to spend
        budget = max(0.0, o.seconds - (time.perf_counter() - started))
        mixture = _fitted_mixture(backbone, zoo, examples, o, per_stage, steps, budget, reporter)
        method = "recycled-mixture"
    from colora.core.recycle.mixture import KEEP_INPUT, only_the_input

    adapters = sum(z.name != KEEP_INPUT for z in zoo)
    if not bool((mixture.coef != 0).any()):
        raise ColoraError(
            f"no mixture of the {adapters} zoo adapter(s) beats the backbone alone on the "
            f"{len(examples)} example pair(s) of '{name}'; no adapter was made",
            hint=f"train one with `colora train {name}`, or add pairs and adapt again",
        )
    fit = mixture.info
    beats_input = fit.get("support_mse") is None or fit["support_mse"] < fit["support_mse_input"]
    if not beats_input or only_the_input(mixture):
        raise ColoraError(
            f"no mixture of the {adapters} zoo adapter(s) beats the unrestored input on the "
            f"{len(examples)} example pair(s) of '{name}'; no adapter was made (it would harm such images)",
            hint=f"train one with `colora train {name}`, or add pairs and adapt again",
        )
    rel, trainable = _save_recycled(
        store, task, backbone_row, backbone, zoo_rows, zoo, mixture, method, len(examples), started
    )
    return AdaptOutcome(
        name,
        method,
        mixture,
        len(examples),
        trainable,
        store.path(rel).stat().st_size,
        time.perf_counter() - started,
        adapters,
    )


def _fitted_mixture(
    backbone, zoo, examples, o: AdaptOptions, per_stage: bool, steps: int, seconds: float, reporter: Reporter
):
    from contextlib import nullcontext

    from colora.core.recycle.mixture import KEEP_INPUT, fit_mixture, refined_support

    adapters = sum(z.name != KEEP_INPUT for z in zoo)
    reporter.note(
        f"Fitting a mixture of {adapters} adapter(s){' and the input' if adapters < len(zoo) else ''} "
        f"on {len(examples)} pair(s) ..."
    )
    with reporter.progress("refine", steps) if steps else nullcontext(lambda done: None) as update:
        return fit_mixture(
            backbone,
            zoo,
            examples,
            per_stage=per_stage,
            steps=steps,
            **(refined_support(len(examples)) if per_stage and steps else {}),
            seconds=seconds,
            seed=o.seed,
            on_step=lambda done, total: update(done),
        )


def warm_start_deltas(
    store: Store,
    task,
    backbone_row: Backbone,
    backbone,
    *,
    seed: int,
    reporter: Reporter = SILENT,
):
    """(per-layer deltas, a record) of the zoo's mixture fitted on the task's pairs, as `adapt --per-adapter`
    fits it, for a new adapter to start from; None when no mixture beats the backbone alone.
    NotFoundError when the zoo is empty."""
    from colora.api.tasks import pair_tensors
    from colora.core.recycle.mixture import fit_mixture, mixture_deltas, only_the_input, with_keep_input

    o = AdaptOptions(seed=seed)
    try:
        _, zoo = load_zoo(store, backbone_row, backbone, exclude=task.name)
    except NotFoundError as e:
        raise NotFoundError(
            f"{e.message}: there is nothing to warm-start from",
            hint="train without --warm-start, or train adapters for other tasks first",
        ) from None
    zoo = with_keep_input(backbone, zoo) if o.keep_input else zoo
    examples = pair_tensors(store, task, "train", o.pairs)
    mixture = fit_mixture(backbone.eval(), zoo, examples, seconds=o.seconds, seed=seed)
    if not bool((mixture.coef != 0).any()) or only_the_input(mixture):
        reporter.note("Warm start: no mixture of the zoo helps on these pairs; starting from zero.")
        return None
    used = {n: round(float(c), 4) for n, c in zip(mixture.names, mixture.coef[:, 0]) if float(c) != 0.0}
    reporter.note(
        "Warm start from the zoo: "
        + ", ".join(f"{n} {c:.2f}" for n, c in used.items())
        + f" ({mixture.info['seconds']:.1f} s)."
    )
    return mixture_deltas(zoo, mixture), {"mixture": used, "k": len(examples)}


def _predicted_mixture(store: Store, backbone_row: Backbone, backbone, zoo_rows, zoo, target: str, examples, seed: int):
    """The meta-adapter's mixture of the zoo at hand (the target's own adapter is never in it) and
    the keep-input direction; returns (mixture, the adapters it mixes)."""
    from colora.core.recycle.meta import predict

    net = load_meta_for(store, backbone_row, zoo_rows, target)
    return predict(net, backbone, zoo, examples, seed=seed)


def _save_recycled(
    store: Store, task, backbone_row: Backbone, backbone, zoo_rows, zoo, mixture, method: str, k: int, started: float
) -> tuple[str, int]:
    """Bake the mixture into an ordinary adapter file, marked recycled, and index it."""
    from colora.core.model.lora import lora_parameter_count
    from colora.core.model.weights import AdapterMeta, save_tensors_atomic
    from colora.core.recycle.mixture import bake

    tensors, plan = bake(backbone, zoo, mixture)
    shas = {r.task.name: r.file_sha256 for r in zoo_rows}
    meta = AdapterMeta(
        task=task.name,
        backbone_sha256=backbone_row.sha256,
        rank_plan=plan,
        alpha=None,
        lora_mode="weight",
        plan_method=method,
        trained="nothing: a baked mixture of zoo adapters",
        recycled=True,
        extra={
            "mixture": mixture.as_dict(),
            "k": k,
            "zoo": [{"task": n, "file_sha256": shas[n]} for n in mixture.names if n in shas],  # not keep-input
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    rel = store.new_adapter_relpath(task.name, "recycled")
    save_tensors_atomic(store.path(rel), tensors, meta.to_metadata())
    trainable = lora_parameter_count(backbone, plan)
    store.add_adapter(
        task, backbone_row, rel, trainable_params=trainable, plan_method=method, budget=None, recycled=True
    )
    return rel, trainable


# ---------------------------------------------------------------- the meta-adapter


@dataclass
class Distilled:
    zoo: list[str]
    surrogate: str  # what the episodes were drawn from
    seconds: float


def distill_meta(
    store: Store,
    *,
    steps: int = DISTILL_STEPS,
    clean: Path | None = None,
    seed: int = SEED,
    reporter: Reporter = SILENT,
) -> Distilled:
    """Distil the meta-adapter of the current zoo (offline, once per zoo), for `adapt --meta`.

    Data-free by default: no task's pairs and no photo are read. The episodes' clean images come
    from a synthetic prior and half of them are inverted from the adapters themselves
    (`core.recycle.surrogate`). With `clean`, that folder's photos replace the synthetic prior.
    """
    import torch

    from colora.api.models import backbone_model
    from colora.core.model.weights import save_tensors_atomic
    from colora.core.recycle.meta import check_zoo_size, distill, meta_metadata
    from colora.core.recycle.surrogate import dead_leaves, surrogate_bank

    backbone_row = store.backbone()
    check_zoo_size(len(store.zoo(backbone_row)))  # before any weight or image is read
    backbone = backbone_model(store, backbone_row).eval()
    zoo_rows, zoo = load_zoo(store, backbone_row, backbone)
    started = time.perf_counter()
    if clean is None:
        images = list(dead_leaves(MAX_CLEAN, SURROGATE_SIZE, torch.Generator().manual_seed(seed)))
        source = "data-free: dead-leaves images, inputs inverted from the adapters"
        reporter.note(f"Inverting surrogate inputs from {len(zoo)} adapters (no pairs, no photos).")
        with reporter.progress("invert", len(zoo)) as update:
            bank = surrogate_bank(backbone, zoo, seed=seed, on_adapter=lambda done, total: update(done))
    else:
        images, bank = _clean_images(clean), None
        source = f"{len(images)} clean photo(s)"
    reporter.note(
        f"Distilling a meta-adapter for {len(zoo)} adapters ({', '.join(z.name for z in zoo)}) "
        f"on {source}, {steps} episodes."
    )
    with reporter.progress("distill", steps, loss=True) as update:
        net, curve = distill(
            backbone,
            zoo,
            images,
            steps=steps,
            seed=seed,
            bank=bank,
            on_step=lambda done, total, loss: update(done, loss),
        )
    zoo_record = [{"task": r.task.name, "file_sha256": r.file_sha256} for r in zoo_rows]
    rel = store.new_meta_adapter_relpath()
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    save_tensors_atomic(
        store.path(rel),
        state,
        meta_metadata(backbone_row.sha256, zoo_record, steps, curve, surrogate=source, support=net.support),
    )
    store.set_meta_adapter(
        rel,
        backbone_sha256=backbone_row.sha256,
        zoo=zoo_record,
        steps=steps,
        final_loss=sum(curve[-20:]) / max(1, len(curve[-20:])),
    )
    return Distilled([z.name for z in zoo], source, time.perf_counter() - started)


def meta_status(store: Store) -> dict:
    """The distilled meta-adapter and whether the zoo still matches it."""
    record = store.meta_adapter()
    if record is None:
        raise NotFoundError("no meta-adapter yet", hint="distill one with `colora recycle distill`")
    backbone_row = store.backbone()
    current = {r.task.name: r.file_sha256 for r in store.zoo(backbone_row)}
    zoo = record.zoo_list()
    stale = record.backbone_sha256 != backbone_row.sha256 or current != {z["task"]: z["file_sha256"] for z in zoo}
    return {
        "path": record.path,
        "backbone_sha256": record.backbone_sha256,
        "zoo": zoo,
        "steps": record.steps,
        "final_loss": record.final_loss,
        "created": record.created_at,
        "up_to_date": not stale,
    }


def load_meta_for(store: Store, backbone_row: Backbone, zoo_rows: list[Adapter], target: str):
    """The distilled meta-adapter. Refuses one distilled for another backbone or another set of
    adapters (the target task's own adapter aside: it is left out of the mixture)."""
    from colora.core.model.weights import read_tensors
    from colora.core.recycle.meta import load_meta

    record = store.meta_adapter()
    if record is None:
        raise NotFoundError("no meta-adapter yet", hint="distill one with `colora recycle distill`")
    if record.backbone_sha256 != backbone_row.sha256:
        raise IntegrityError(
            "the meta-adapter was distilled for another backbone", hint="distill it again with `colora recycle distill`"
        )
    current = {r.task.name: r.file_sha256 for r in zoo_rows}
    zoo = record.zoo_list()
    names = [z["task"] for z in zoo]
    changed = [z["task"] for z in zoo if z["task"] != target and current.get(z["task"]) != z["file_sha256"]]
    added = [t for t in current if t not in names]
    if changed or added:
        raise IntegrityError(
            f"the adapter zoo changed since the meta-adapter was distilled ({', '.join(changed + added)})",
            hint="distill it again with `colora recycle distill`",
        )
    tensors, metadata = read_tensors(store.path(record.path), record.file_sha256)
    net, _ = load_meta(tensors, metadata)
    return net


def _clean_images(folder: Path):
    """Up to MAX_CLEAN clean photos of `folder` as (3, H, W) tensors."""
    from colora.core.data.crops import to_tensor
    from colora.core.data.images import is_image_file, load_image

    if not Path(folder).is_dir():
        raise NotFoundError(f"clean-image folder not found: {folder}", hint="give a folder of clean photos")
    paths = sorted(p for p in Path(folder).iterdir() if is_image_file(p) and p.is_file())[:MAX_CLEAN]
    if not paths:
        raise InvalidInputError(
            f"no images in {folder}", hint="give a folder of clean photos, or leave out --clean to distil data-free"
        )
    return [to_tensor(load_image(p)[0]) for p in paths]
