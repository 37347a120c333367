"""`colora adapter export | import`: adapters are portable safetensors files."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from colora_cli import output
from colora_cli.options import Home
from core.errors import ConflictError, InvalidInputError, NotFoundError
from store.names import validate_slug

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from store.store import Store  # noqa: F401

app = typer.Typer(help="Share adapters: export a task's adapter, import one into a task.", no_args_is_help=True)


@app.command("export")
def export_adapter(
    task: Annotated[str, typer.Argument(help="Task name.")],
    file: Annotated[Path, typer.Argument(help="Destination .safetensors file.")],
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    home: Home = None,
) -> None:
    """Copy a task's adapter out of the store (it carries its rank plan and backbone fingerprint).

    Example: colora adapter export rain rain-adapter.safetensors
    """
    from core.files import copy_atomic
    from store.store import Store
    store = Store.open(home)
    adapter = store.adapter(store.task(task))
    if adapter is None:
        raise NotFoundError(f"task '{task}' has no adapter yet", hint=f"train it with `colora train {task}`")
    if file.exists() and not overwrite:
        raise ConflictError(f"{file} already exists", hint="pass --overwrite to replace it")
    copy_atomic(store.path(adapter.path), file)
    output.note(f"Exported the adapter of '{task}' to {file} (backbone '{adapter.backbone.name}').")


@app.command("import")
def import_adapter(
    file: Annotated[Path, typer.Argument(help="An adapter .safetensors file.")],
    task: Annotated[str, typer.Option("--task", "-t", help="Task to attach it to (created, without pairs, if missing).")],
    home: Home = None,
) -> None:
    """Add an adapter file to a task, after checking its metadata, backbone, shapes and values.

    Example: colora adapter import rain-adapter.safetensors --task rain
    """
    import copy
    import time

    from colora_cli.loading import load_store_backbone
    from core.model.lora import lora_parameter_count
    from core.model.weights import apply_adapter, read_adapter
    from core.files import copy_atomic
    from store.store import Store

    validate_slug(task)
    if file.suffix.lower() != ".safetensors":
        raise InvalidInputError(f"{file.name} is not a .safetensors file", hint="colora loads weights only from safetensors")
    store = Store.open(home)
    _, meta = read_adapter(file)
    backbone_row = store.backbone_by_sha256(meta.backbone_sha256)
    if backbone_row is None:
        raise NotFoundError(f"the adapter was trained on backbone {meta.backbone_sha256[:12]}, which this store does not have",
                            hint="import that backbone first with `colora backbone import FILE --name NAME`")
    backbone = load_store_backbone(store, backbone_row)
    apply_adapter(copy.deepcopy(backbone), backbone_row.sha256, file)  # shapes, dtypes, values, plan paths
    try:
        task_row = store.task(task)
    except NotFoundError:
        task_row = store.add_task(task, "(imported adapter)", [], val_folder=None, val_fraction=None, seed=0)
    rel = f"tasks/{task}/adapter-imported-{int(time.time())}.safetensors"
    copy_atomic(file, store.path(rel))
    store.add_adapter(task_row, backbone_row, rel, trainable_params=lora_parameter_count(backbone, meta.rank_plan),
                      rank_plan=meta.rank_plan, plan_method=meta.plan_method,
                      budget=(meta.extra.get("plan_info") or {}).get("budget"), recycled=meta.recycled)
    output.note(f"Imported the adapter into task '{task}' (trained for '{meta.task}', backbone '{backbone_row.name}').")
