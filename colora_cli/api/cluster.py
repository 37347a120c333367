"""`colora restore --ray ADDRESS`: batch restoration on a Ray cluster, through Ray Data.

The file paths become a dataset; `map_batches` runs them through an actor pool of `Restorer`s
(`--workers` of them, one GPU each where there are GPUs), each of which loads the task's model
once and decodes, restores and writes its images with the very code of a plain `colora restore`
(core/inference/pipeline.py): atomic writes that never replace a file, so inputs are never
overwritten and a killed job leaves no half-written output. Outputs that already exist are
skipped, so running the same command again finishes a job that was stopped. Every machine must
see the store folder, the inputs and the output folder at the same paths (a shared mount).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from colora.api.progress import SILENT, Reporter
from colora.core.defaults import DEVICE, RAY_WORKERS, TILE
from colora.core.errors import ColoraError, InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from colora.store.store import Store

BATCH = 4  # images per call of an actor: small, so progress and failures surface early
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
CONNECT_TIMEOUT_S = 5  # as for --db: a host that never answers is reported, not waited for
RAY_CLIENT_PORT = 10001
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # + empty SETTINGS


@dataclass
class ClusterOutcome:
    done: int
    skipped: int  # outputs that existed already (a rerun of a stopped job)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    workers: int = 0

    @property
    def jobs(self) -> int:
        return self.done + self.skipped + len(self.failed)


class Restorer:
    """A Ray Data actor: the task's model, loaded once; restores a batch of (source, destination)."""

    def __init__(self, home: str, url: str | None, task: str, tile: int, max_pixels: int | None, device: str):
        import torch

        from colora.api.models import task_model
        from colora.core.device import resolve_device
        from colora.store.store import Store

        store = Store.open(home, url=url)
        adapter = store.adapter(store.task(task))
        if adapter is None:
            raise NotFoundError(f"task '{task}' has no adapter yet")
        self.device = resolve_device(device)
        self.store = store
        self.model = task_model(store, adapter)[0].to(self.device)
        self.tile, self.max_pixels = tile, max_pixels
        torch.set_grad_enabled(False)

    def __call__(self, batch: dict) -> dict:
        from colora.core.inference.pipeline import restore_many
        from colora.core.inference.tiles import restore_tensor
        from colora.core.output_folder import OutputFolder

        jobs = [(Path(s), Path(d)) for s, d in zip(batch["src"], batch["dst"])]
        # each batch holds the output folder and checks it as held: one swapped for a link into
        # the store between batches is refused, and within a batch files go in through the handle
        with OutputFolder.hold(jobs[0][1].parent) as folder:
            self.store.refuse_inside(folder.real_path, "the output folder")
            failed = dict(
                restore_many(
                    jobs,
                    lambda src, image: restore_tensor(self.model, image.to(self.device), self.tile),
                    overwrite=False,
                    threads=False,
                    max_pixels=self.max_pixels,
                    folder=folder,
                )
            )
        return {"src": [str(s) for s, _ in jobs], "error": [failed.get(s, "") for s, _ in jobs]}


def restore_on_ray(
    store: Store,
    task: str,
    inputs: list[Path],
    out_dir: Path,
    *,
    address: str = "local",
    workers: int = RAY_WORKERS,
    tile: int = TILE,
    max_pixels: int | None = None,
    device: str = DEVICE,
    reporter: Reporter = SILENT,
) -> ClusterOutcome:
    """Restore image files and folders into `out_dir` on Ray (`address`: "local" starts a Ray
    instance on this machine, "auto" joins the running cluster, or ray://host:10001)."""
    from colora.api.restoring import list_jobs

    if task == "auto":
        raise InvalidInputError("--ray restores with one task's adapter; --task auto runs without --ray")
    if workers < 1:
        raise InvalidInputError(f"--workers must be at least 1, not {workers}")
    from colora.api.models import adapter_file

    adapter = store.adapter(store.task(task))
    if adapter is None:
        raise NotFoundError(f"task '{task}' has no adapter yet", hint=f"train it with `colora train {task}`")
    adapter_file(store, adapter)  # a changed or damaged file is refused here, before any worker starts
    store.refuse_inside(out_dir, "the output folder")
    jobs, broken = list_jobs(inputs, out_dir)
    failed = [(p, "broken link") for p in broken]
    todo = [(s, d) for s, d in jobs if not (d.exists() or d.is_symlink())]
    skipped = len(jobs) - len(todo)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_own_leftovers(out_dir, {d.name for _, d in todo})
    if not todo:
        return ClusterOutcome(0, skipped, failed, workers)
    if address != "local":  # Ray may take a while to give up on a cluster that is not there
        reporter.note(f"Connecting to Ray at {address} ...")
    ray = _ray(address)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 and device != "cpu" else 0
    reporter.note(
        f"Restoring {len(todo)} image(s) on Ray ({_where(address)}) with {workers} worker(s)"
        + (", one GPU each" if gpus else "")
        + (f"; {skipped} already restored, skipped." if skipped else ".")
    )
    dataset = ray.data.from_items([{"src": str(s), "dst": str(d)} for s, d in todo])
    results = dataset.map_batches(
        Restorer,
        batch_size=BATCH,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_gpus=gpus,
        fn_constructor_kwargs={
            "home": str(store.root),
            "url": store.url,
            "task": task,
            "tile": tile,
            "max_pixels": max_pixels,
            "device": "cuda" if gpus else "cpu",
        },
    )
    done = 0
    with reporter.progress(f"restore ({task}, ray)", len(todo)) as update:
        try:
            for count, row in enumerate(results.iter_rows(), 1):
                if row["error"]:
                    failed.append((Path(row["src"]), row["error"]))
                else:
                    done += 1
                update(count)
        except ray.exceptions.RayError as e:
            raise _colora_error(e) from None
    return ClusterOutcome(done, skipped, failed, workers)


def _colora_error(error: BaseException) -> ColoraError:
    """A Ray failure as colora's own error: the ColoraError a worker raised, else one line."""
    seen = error
    while seen is not None:
        if isinstance(seen, ColoraError):
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    first = next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return ColoraError(
        f"the Ray job failed ({ANSI.sub('', first)[:200]})",
        hint="restore without --ray to see the error; images restored so far are kept",
    )


def _ray(address: str):
    """Ray, connected to `address`, quiet (its logs and progress bars off colora's output)."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise InvalidInputError("--ray needs Ray Data", hint='pip install "colora[ray]"') from None
    if not ray.is_initialized():
        _check_reachable(address)
        import logging
        import os

        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # its C++ core prints to stderr
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
        options = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": False}
        try:
            with _quiet_stderr():  # Ray's C++ core announces its log level on the process's stderr
                if address == "local":
                    ray.init(include_dashboard=False, **options)
                else:
                    ray.init(address=address, **options)
        except (ConnectionError, ValueError, RuntimeError) as e:
            first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
            raise ColoraError(
                f"cannot start or reach Ray at {address!r} ({first[:160]})",
                hint="--ray local starts Ray here; `auto` needs a running cluster (`ray start --head`); "
                'ray:// addresses need pip install "ray[client]"',
            ) from None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    return ray


def _check_reachable(address: str) -> None:
    """A Ray head answering at `address` within CONNECT_TIMEOUT_S, or a one-line error: Ray itself
    waits minutes, silently, on a host that accepts connections but never answers."""
    import os
    import socket
    from urllib.parse import urlsplit

    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")  # else Ray looks for a cluster on this machine
    if address in ("", "local", "auto"):
        return
    client = address.startswith("ray://")
    try:
        parts = urlsplit(address if "://" in address else "tcp://" + address)
        host, port = parts.hostname, parts.port or (RAY_CLIENT_PORT if client else None)
    except ValueError:
        host = port = None
    if not host or not port:
        raise InvalidInputError(
            f"--ray {address!r} is not a Ray address",
            hint="give local, auto, HOST:PORT (the head's GCS port, 6379) or ray://HOST:10001",
        )
    # Ray's GCS and client server are gRPC: an HTTP/2 server answers a client's preface with its
    # SETTINGS frame at once (with TLS on, only the connection itself can be checked)
    tls = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S) as conn:
            if not tls:
                conn.sendall(HTTP2_PREFACE)
                reply = conn.recv(9)
                if len(reply) < 9 or reply[3] != 0x04:
                    raise ConnectionError("it does not speak gRPC")
    except OSError as e:
        timed_out = isinstance(e, TimeoutError)
        reason = f"no answer within {CONNECT_TIMEOUT_S} s" if timed_out else (e.strerror or str(e) or type(e).__name__)
        raise ColoraError(
            f"no Ray cluster answers at {host}:{port} ({reason})",
            hint="check the address and that the cluster runs (`ray status` on the head node)",
        ) from None


@contextmanager
def _quiet_stderr():
    """File descriptor 2 to /dev/null for a moment (what C++ code writes there bypasses Python)."""
    import os
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _where(address: str) -> str:
    return "a local instance" if address == "local" else address


def _remove_own_leftovers(out_dir: Path, names: set[str]) -> None:
    """Temporary files that a killed earlier run left for outputs still to be written (colora's own
    `.NAME.xxxxxxxx.part` names, core/files.py); nothing else is touched."""
    from colora.core.files import is_temp_name

    for entry in out_dir.iterdir():
        if (
            entry.is_file()
            and not entry.is_symlink()
            and is_temp_name(entry.name)
            and _temp_target(entry.name) in names
        ):
            entry.unlink(missing_ok=True)


def _temp_target(temp_name: str) -> str:
    """`.photo.png.ab12cd34.part` -> `photo.png`."""
    return temp_name[1:].rsplit(".", 2)[0]
