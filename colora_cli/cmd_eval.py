"""`colora eval`."""
from __future__ import annotations

import json
import shlex
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from colora_cli import output
from colora_cli.options import Device, Home, Json, Tile
from core.errors import InvalidInputError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from store.store import Store  # noqa: F401


def eval_task(
    name: Annotated[str, typer.Argument(help="Task name.")],
    as_json: Json = False,
    report: Annotated[Optional[Path], typer.Option("--report", help="Also write an HTML report (metrics, example crops, loss curve, rank plan) into this folder.")] = None,
    against: Annotated[Optional[str], typer.Option("--against", help="Also score the adapters of these other tasks (comma-separated) on this task's validation pairs.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier report in the --report folder.")] = False,
    device: Device = "auto",
    tile: Tile = 512,
    home: Home = None,
) -> None:
    """PSNR and SSIM on the task's validation pairs: input, backbone alone, backbone + adapter.

    Example: colora eval rain --json

    Example: colora eval rain --report reports/rain --against noise,haze
    """
    from colora_cli.cmd_compare import require_adapters, task_list
    from colora_cli.loading import load_store_adapter, load_store_backbone
    from colora_cli.manifest import require_unchanged
    from core.inference.evaluate import evaluate
    from core.device import resolve_device
    from store.store import Store

    if overwrite and report is None:
        raise typer.BadParameter("--overwrite only applies to a --report folder", param_hint="--overwrite")
    store = Store.open(home)
    task = store.task(name)
    val_pairs = store.pairs(task, "val")
    if not val_pairs:
        raise InvalidInputError(f"task '{name}' has no validation pairs",
                                hint=f"re-add it with --val-fraction 0.2 or --val DIR (`colora task rm {name} --yes` first)")
    others = task_list(against, "--against") if against is not None else []
    if name in others:
        raise InvalidInputError(f"--against lists '{name}' itself", hint="its own adapter is always scored; list other tasks")
    other_adapters = require_adapters(store, others, "--against")
    if report is not None:
        from core.report.page import check_report_dir

        check_report_dir(report, overwrite)  # before any work, so a refusal writes nothing
    require_unchanged(name, val_pairs)
    dev = resolve_device(device)
    adapter = store.adapter(task)
    if adapter is not None:
        backbone_row = adapter.backbone
        backbone, adapted = load_store_adapter(store, adapter)
    else:
        backbone_row = store.backbone()
        backbone, adapted = load_store_backbone(store, backbone_row), None
        output.note(f"Task '{name}' has no adapter yet (train it with `colora train {name}`); scoring input and backbone.")
    models = {"input": None, "backbone": backbone}
    if adapted is not None:
        models["adapter"] = adapted
    for other, other_adapter in zip(others, other_adapters):
        models[f"adapter:{other}"] = load_store_adapter(store, other_adapter)[1]
    with output.progress(f"eval {name}", len(val_pairs)) as update:
        results = evaluate(models, [(p.stem, p.input_path, p.target_path) for p in val_pairs], device=dev, tile=tile,
                           on_pair=lambda done, total: update(done))
    store.record_eval(task, backbone_row, adapter, results)
    report_path = None
    if report is not None:
        command = " ".join(["colora", "eval", name, "--report", shlex.quote(str(report))]
                           + (["--against", ",".join(others)] if others else []))
        report_path = _write_report(store, task, adapter, backbone_row, val_pairs, list(results), models, report,
                                    command=command, overwrite=overwrite, device=dev, tile=tile)
    base_psnr = results["input"][0]
    rows = [{"subject": s, "psnr": round(p, 3), "ssim": round(q, 4), "delta_psnr_vs_input": round(p - base_psnr, 3),
             "pairs": len(per)} for s, (p, q, per) in results.items()]
    if as_json:
        data = {"task": name, "backbone": backbone_row.name, "results": rows}
        if report_path is not None:
            data["report"] = str(report_path)
        output.print_json(data)
    else:
        output.table(f"{name}: {len(val_pairs)} validation pairs, backbone '{backbone_row.name}' ({backbone_row.label})",
                     ["subject", "PSNR (dB)", "SSIM", "ΔPSNR vs input"],
                     [[r["subject"], f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", f"{r['delta_psnr_vs_input']:+.2f}"] for r in rows])
    if report_path is not None:
        output.note(f"Wrote the report to {report_path}")


def _subject_label(subject: str, task: str, backbone_name: str) -> str:
    if subject == "input":
        return "degraded input, unrestored"
    if subject == "backbone":
        return f"backbone '{backbone_name}' alone"
    if subject == "adapter":
        return f"backbone + the adapter of '{task}'"
    return f"the adapter of task '{subject.split(':', 1)[1]}' (on its own backbone)"


def _write_report(store: Store, task, adapter, backbone_row, val_pairs, subjects: list[str], models: dict,
                  dest: Path, *, command: str, overwrite: bool, device, tile: int) -> Path:
    """Read this evaluation's rows back from the store and hand them, with crops and the training record, to core.report."""
    from core.report.examples import example_views
    from core.report.images import pick_examples
    from core.report.page import write_report

    stored = {s: store.last_eval(task, s) for s in subjects}
    metrics = [{"subject": s, "label": _subject_label(s, task.name, backbone_row.name), "psnr": row.psnr,
                "ssim": row.ssim, "n_pairs": row.n_pairs, "eval_id": row.id} for s, row in stored.items()]
    per_pair = {s: {stem: (p, q) for stem, p, q in json.loads(row.per_pair)} for s, row in stored.items()}
    ranked_by = "adapter" if "adapter" in stored else "backbone"
    panel_models = {s: models[s] for s in ("backbone", "adapter") if s in models}
    by_stem = {p.stem: p for p in val_pairs}
    examples = []
    for kinds, stem in pick_examples(json.loads(stored[ranked_by].per_pair)):
        pair = by_stem[stem]
        view = example_views(panel_models, pair.input_path, pair.target_path, tile=tile, device=device)
        view.update(kinds=kinds, stem=stem, scores={s: per_pair[s][stem] for s in view["images"] if s in per_pair})
        examples.append(view)
    run = store.last_run(task)
    run_info, curve = None, None
    if run is not None:
        config = json.loads(run.config) if run.config else {}
        train = config.get("train", {})
        run_info = {"id": run.id, "status": run.status, "steps_done": run.steps_done, "wall_time_s": run.wall_time_s,
                    "loss": train.get("loss"), "pairs": len(store.pairs(task, "train"))}
        curve = json.loads(run.loss_curve) if run.loss_curve else None
    plan, scores = None, None
    if adapter is not None:
        plan = json.loads(adapter.rank_plan)
        info = json.loads(task.rank_plan_info) if task.rank_plan_info else {}
        if info.get("scores") and info.get("backbone_sha256", adapter.backbone.sha256) == adapter.backbone.sha256:
            scores = info["scores"]
    data = {
        "task": task.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "n_val_pairs": len(val_pairs),
        "backbone": {"name": backbone_row.name, "label": backbone_row.label},
        "adapter": None if adapter is None else {
            "plan_method": adapter.plan_method, "trainable_params": adapter.trainable_params,
            "backbone_params": adapter.backbone_params, "size_bytes": adapter.size_bytes, "created_at": adapter.created_at},
        "metrics": metrics,
        "ranked_by": ranked_by,
        "examples": examples,
        "run": run_info,
        "loss_curve": curve,
        "rank_plan": plan,
        "scores": scores,
    }
    return write_report(dest, data, overwrite=overwrite)
