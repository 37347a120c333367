"""`colora eval`."""
from __future__ import annotations

from typing import Annotated

import typer

from colora_cli import output
from colora_cli.options import Device, Home, Json, Tile
from core.errors import InvalidInputError
from store.store import Store


def eval_task(
    name: Annotated[str, typer.Argument(help="Task name.")],
    as_json: Json = False,
    device: Device = "auto",
    tile: Tile = 512,
    home: Home = None,
) -> None:
    """PSNR and SSIM on the task's validation pairs: input, backbone alone, backbone + adapter.

    Example: colora eval rain --json
    """
    from colora_cli.loading import load_store_adapter, load_store_backbone
    from colora_cli.manifest import require_unchanged
    from core.adapters import evaluate
    from core.device import resolve_device

    store = Store.open(home)
    task = store.task(name)
    val_pairs = store.pairs(task, "val")
    if not val_pairs:
        raise InvalidInputError(f"task '{name}' has no validation pairs",
                                hint=f"re-add it with --val-fraction 0.2 or --val DIR (`colora task rm {name} --yes` first)")
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
    with output.progress(f"eval {name}", len(val_pairs)) as update:
        results = evaluate(models, [(p.stem, p.input_path, p.target_path) for p in val_pairs], device=dev, tile=tile,
                           on_pair=lambda done, total: update(done))
    store.record_eval(task, backbone_row, adapter, results)
    base_psnr = results["input"][0]
    rows = [{"subject": s, "psnr": round(p, 3), "ssim": round(q, 4), "delta_psnr_vs_input": round(p - base_psnr, 3),
             "pairs": len(per)} for s, (p, q, per) in results.items()]
    if as_json:
        output.print_json({"task": name, "backbone": backbone_row.name, "results": rows})
        return
    output.table(f"{name}: {len(val_pairs)} validation pairs, backbone '{backbone_row.name}' ({backbone_row.label})",
                 ["subject", "PSNR (dB)", "SSIM", "ΔPSNR vs input"],
                 [[r["subject"], f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", f"{r['delta_psnr_vs_input']:+.2f}"] for r in rows])
