"""Evaluating a task: PSNR/SSIM of input, backbone and adapter on its validation pairs; the HTML report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from colora.api.progress import SILENT, Reporter
from colora.core.defaults import DEVICE, TILE
from colora.core.errors import InvalidInputError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from colora.store.schema import Backbone
    from colora.store.store import Store

REPORT_PANELS = ("backbone", "adapter")  # the models whose outputs the report's example strips show
ENSEMBLED = "adapter x8"  # the subject of `eval --self-ensemble`: the adapter averaged over 8 flips/turns


@dataclass
class EvalOutcome:
    task: str
    backbone: Backbone
    n_val_pairs: int
    # per subject: subject, psnr, ssim, delta_psnr_vs_input, pairs; unrounded, as recorded (a display
    # rounds once: a table printed from values already rounded to 3 places was 0.005 dB off its record)
    rows: list[dict]
    has_adapter: bool
    report: Path | None = None

    @property
    def harm(self) -> float | None:
        """How many dB the adapter loses against the unrestored input, when it does (do no harm)."""
        delta = next((r["delta_psnr_vs_input"] for r in self.rows if r["subject"] == "adapter"), None)
        # a loss that rounds to 0.000 dB (what --json shows) is none, as when the rows were rounded
        return -delta if delta is not None and round(delta, 3) < 0 else None


@dataclass
class _Crops:
    """`evaluate`'s observer for the report: each pair's crop where its input is most wrong, as 8-bit."""

    panels: tuple[str, ...]
    views: dict = field(default_factory=dict)  # stem -> {"box", "size", "images": {panel: uint8 array}}

    def __call__(self, stem: str, x, y, outputs: dict) -> None:
        from colora.core.data.crops import to_numpy
        from colora.core.report.images import error_crop, to_uint8

        degraded, target = to_numpy(x), to_numpy(y)
        top, left, ch, cw = error_crop(degraded, target)
        full = {"input": degraded, **{s: to_numpy(outputs[s]) for s in self.panels if s in outputs}, "target": target}
        self.views[stem] = {
            "box": (top, left, ch, cw),
            "size": (degraded.shape[1], degraded.shape[0]),
            "images": {s: to_uint8(img[top : top + ch, left : left + cw]) for s, img in full.items()},
        }


def evaluate_task(
    store: Store,
    name: str,
    *,
    against: list[str] | None = None,
    report: Path | None = None,
    overwrite: bool = False,
    device: str = DEVICE,
    tile: int = TILE,
    command: str | None = None,
    self_ensemble: bool = False,
    reporter: Reporter = SILENT,
) -> EvalOutcome:
    """Score the task's validation pairs (and, `against`, other tasks' adapters on them); record the
    results in the store; with `report`, write the HTML report folder there. `self_ensemble`: the
    adapter is also scored restoring with the x8 self-ensemble (subject `adapter x8`)."""
    from colora.api.models import backbone_model, task_model
    from colora.api.tasks import require_adapters, require_unchanged
    from colora.core.device import resolve_device
    from colora.core.inference.evaluate import evaluate

    task = store.task(name)
    val_pairs = store.pairs(task, "val")
    if not val_pairs:
        raise InvalidInputError(
            f"task '{name}' has no validation pairs",
            hint=f"re-add it with --val-fraction 0.2 or --val DIR (`colora task rm {name} --yes` first)",
        )
    others = list(against or [])
    if name in others:
        raise InvalidInputError(
            f"--against lists '{name}' itself", hint="its own adapter is always scored; list other tasks"
        )
    other_adapters = require_adapters(store, others, "--against")
    if report is not None:
        from colora.core.report.page import check_report_dir

        store.refuse_inside(report, "the report folder")
        check_report_dir(report, overwrite)  # before any work, so a refusal writes nothing
    require_unchanged(name, val_pairs)
    dev = resolve_device(device)
    adapter = store.adapter(task)
    backbone_row = adapter.backbone if adapter is not None else store.backbone()
    backbone = backbone_model(store, backbone_row)
    models, meta = {"input": None, "backbone": backbone}, None
    if adapter is not None:
        models["adapter"], meta = task_model(store, adapter, backbone)
        if self_ensemble:
            models[ENSEMBLED] = models["adapter"]
    else:
        reporter.note(
            f"Task '{name}' has no adapter yet (train it with `colora train {name}`); scoring input and backbone"
            + (" (--self-ensemble applies to an adapter: nothing to ensemble)." if self_ensemble else ".")
        )
    for other, other_adapter in zip(others, other_adapters):
        own = backbone if other_adapter.backbone_id == backbone_row.id else None
        models[f"adapter:{other}"] = task_model(store, other_adapter, own)[0]
    crops = _Crops(REPORT_PANELS) if report is not None else None
    with reporter.progress(f"eval {name}", len(val_pairs)) as update:
        results = evaluate(
            models,
            [(p.stem, p.input_path, p.target_path) for p in val_pairs],
            device=dev,
            tile=tile,
            on_pair=lambda done, total: update(done),
            observe=crops,
            self_ensemble={ENSEMBLED},
        )
    stored = store.record_eval(task, backbone_row, adapter, results)
    base = results["input"][0]
    rows = [
        {
            "subject": s,
            "psnr": p,
            "ssim": q,
            "delta_psnr_vs_input": p - base,
            "pairs": len(per),
        }
        for s, (p, q, per) in results.items()
    ]
    outcome = EvalOutcome(name, backbone_row, len(val_pairs), rows, adapter is not None)
    if report is not None:
        data = _report_data(
            store,
            task,
            adapter,
            meta,
            backbone_row,
            results,
            stored,
            crops,
            command or f"colora eval {name} --report {report}",
        )
        data["harm"] = outcome.harm
        from colora.core.report.page import write_report

        outcome.report = write_report(report, data, overwrite=overwrite)
    return outcome


def harm_of(store: Store, task) -> float | None:
    """dB the task's adapter lost against the unrestored input at its last evaluation, if it lost."""
    adapter = store.adapter(task)
    scored, unrestored = store.last_eval(task, "adapter"), store.last_eval(task, "input")
    if adapter is None or scored is None or unrestored is None or scored.adapter_id != adapter.id:
        return None
    return unrestored.psnr - scored.psnr if scored.psnr < unrestored.psnr else None


def _subject_label(subject: str, task: str, backbone_name: str) -> str:
    if subject == "input":
        return "degraded input, unrestored"
    if subject == "backbone":
        return f"backbone '{backbone_name}' alone"
    if subject == "adapter":
        return f"backbone + the adapter of '{task}'"
    if subject == ENSEMBLED:
        return f"backbone + the adapter of '{task}', self-ensemble x8"
    return f"the adapter of task '{subject.split(':', 1)[1]}' (on its own backbone)"


def _report_data(
    store: Store, task, adapter, meta, backbone_row: Backbone, results: dict, stored: dict, crops: _Crops, command: str
) -> dict:
    """What core.report.page renders: this evaluation's rows as stored, crops, the training record, the plan."""
    from colora.api.ranking import plan_scores
    from colora.core.report.images import pick_examples

    metrics = [
        {
            "subject": s,
            "label": _subject_label(s, task.name, backbone_row.name),
            "psnr": row.psnr,
            "ssim": row.ssim,
            "n_pairs": row.n_pairs,
            "eval_id": row.id,
        }
        for s, row in stored.items()
    ]
    per_pair = {s: {stem: (p, q) for stem, p, q in per} for s, (_, _, per) in results.items()}
    ranked_by = "adapter" if "adapter" in results else "backbone"
    examples = []
    for kinds, stem in pick_examples(results[ranked_by][2]):
        view = crops.views[stem]
        images = {s: img.astype("float32") / 255 for s, img in view["images"].items()}
        examples.append(
            {
                **view,
                "images": images,
                "kinds": kinds,
                "stem": stem,
                "scores": {s: per_pair[s][stem] for s in images if s in per_pair},
            }
        )
    run = store.last_run(task)
    run_info, curve = None, None
    if run is not None:
        train = (json.loads(run.config) if run.config else {}).get("train", {})
        run_info = {
            "id": run.id,
            "status": str(run.status),
            "steps_done": run.steps_done,
            "wall_time_s": run.wall_time_s,
            "loss": train.get("loss"),
            "pairs": len(store.pairs(task, "train")),
        }
        curve = json.loads(run.loss_curve) if run.loss_curve else None
    return {
        "task": task.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "n_val_pairs": len(results["input"][2]),
        "backbone": {"name": backbone_row.name, "label": backbone_row.label},
        "adapter": None
        if adapter is None
        else {
            "plan_method": adapter.plan_method,
            "trainable_params": adapter.trainable_params,
            "backbone_params": adapter.backbone_params,
            "size_bytes": adapter.size_bytes,
            "created_at": adapter.created_at,
        },
        "metrics": metrics,
        "ranked_by": ranked_by,
        "examples": examples,
        "run": run_info,
        "loss_curve": curve,
        "rank_plan": meta.rank_plan if meta is not None else None,
        "scores": plan_scores(task, adapter.backbone.sha256) if adapter is not None else None,
    }
