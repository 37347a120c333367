"""colora: one frozen image-restoration backbone, many small low-rank adapters (the Python API).

    import colora

    store = colora.init()                                   # $COLORA_HOME or the user data dir
    colora.add_task(store, "rain", "pairs")                 # a folder of (degraded, clean) pairs
    colora.train(store, "rain", steps=500)                  # the CoLoRA adapter; the backbone stays frozen
    colora.evaluate(store, "rain").rows                     # PSNR / SSIM: input, backbone, adapter
    colora.restore(store, "rain", ["photos"], "restored")   # files and folders, any size
    colora.list_tasks(store)                                # what `colora list --json` prints

Each function is one command's use case (colora.api, where the options are documented) and
returns the same plain data the command prints (unrounded where the command rounds); none of
them prints. Keyword options are the command's (`steps`, `minutes`, `lr` ... for train). Errors
are colora.core.errors.ColoraError subclasses, each with a `hint`. Importing colora imports
neither torch nor SQLAlchemy.

The packages under this name: colora.api (the use cases, with progress reporters), colora.cli
(the command line), colora.core (PyTorch: model, LoRA, training, inference, recycling) and
colora.store (the index and the files).
"""

from __future__ import annotations

from os import PathLike
from typing import TYPE_CHECKING, Any

from colora.core.defaults import INIT_SIZE, SEED

__version__ = "0.2.0"

if TYPE_CHECKING:
    from colora.api.evaluation import EvalOutcome
    from colora.api.recycling import AdaptOutcome
    from colora.api.restoring import RestoreOutcome
    from colora.api.tasks import AddedTask
    from colora.api.training import TrainOutcome
    from colora.store.store import Store

Path_ = str | PathLike


def init(
    home: Path_ | None = None,
    *,
    random_init: bool = False,
    config: str = INIT_SIZE,
    seed: int = SEED,
    starters: bool = True,
) -> Store:
    """The store at `home` (else $COLORA_HOME, else the user data dir), created with the bundled
    backbone and its starter adapters when it does not exist yet (`colora init`); idempotent."""
    from colora.api.backbones import init_store

    return init_store(home, random_init=random_init, config=config, seed=seed, starters=starters).store


def open_store(home: Path_ | None = None) -> Store:
    """An existing store (NotFoundError when there is none: see init)."""
    from colora.store.store import Store

    return Store.open(home)


def add_task(store: Store, name: str, folder: Path_, **options: Any) -> AddedTask:
    """Register a folder of (degraded, clean) pairs (`colora task add`): val_fraction, val, seed."""
    from colora.api.tasks import add_task as run

    return run(store, name, folder, **options)


def train(store: Store, name: str, **options: Any) -> TrainOutcome:
    """Train the task's adapter (`colora train`): options of colora.api.training.TrainOptions."""
    from colora.api.training import TrainOptions, train_task

    return train_task(store, name, TrainOptions(**options))


def evaluate(store: Store, name: str, **options: Any) -> EvalOutcome:
    """Score the validation pairs (`colora eval`): against, report, self_ensemble ..."""
    from colora.api.evaluation import evaluate_task

    return evaluate_task(store, name, **options)


def restore(store: Store, task: str, inputs: Path_ | list[Path_], out_dir: Path_, **options: Any) -> RestoreOutcome:
    """Restore image files and folders into out_dir (`colora restore`): overwrite, tile, engine ...;
    task "auto" picks an adapter per image."""
    from pathlib import Path

    from colora.api.restoring import restore_images

    inputs = [inputs] if isinstance(inputs, (str, PathLike)) else inputs  # one file or folder, or several
    return restore_images(store, task, [Path(p) for p in inputs], Path(out_dir), **options)


def adapt(store: Store, name: str, **options: Any) -> AdaptOutcome:
    """Build the task's adapter from the store's other adapters, no training (`colora adapt`):
    options of colora.api.recycling.AdaptOptions."""
    from colora.api.recycling import AdaptOptions, adapt_task

    return adapt_task(store, name, AdaptOptions(**options))


def list_tasks(store: Store) -> list[dict]:
    """Every task with its pairs, adapter, size and last quality (`colora list --json`)."""
    from colora.store.summary import store_rows

    return store_rows(store.root)
