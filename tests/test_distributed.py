"""`torchrun --nproc-per-node 2` on the CPU (gloo): data-parallel training equals one process with
the whole batch, and a killed run resumes. Real processes, real torch.distributed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from colora.store.store import Store
from helpers import TINY_INIT, invoke, make_pairs, ok, textured

# both tasks from zero: the single-process run must repeat the distributed one (no warm start from it)
TRAIN = ("--rank", "2", "--patch-size", "16", "--lr", "5e-3", "--cold-start")


def torchrun(home: Path, *args, wait: bool = True):
    """`torchrun --nproc-per-node 2 -m colora ARGS` on the CPU, one thread per process."""
    env = {**os.environ, "COLORA_HOME": str(home), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(29500 + os.getpid() % 1000),
        "-m",
        "colora",
        *map(str, args),
    ]
    if not wait:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    return done


def adapter_tensors(home: Path, task: str) -> dict[str, torch.Tensor]:
    store = Store.open(home)
    return load_file(store.path(store.adapter(store.task(task)).path))


def loss_curve(home: Path, task: str) -> list:
    store = Store.open(home)
    return json.loads(store.last_run(store.task(task)).loss_curve)


def close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture
def two_tasks(tmp_path, isolated_home):
    """Tasks 'ddp' and 'single' on the same pairs (no validation pairs: nothing but training differs)."""
    pairs = make_pairs(tmp_path / "pairs", n=5)
    ok(invoke(*TINY_INIT))
    for name in ("ddp", "single"):
        ok(invoke("task", "add", name, pairs, "--val-fraction", "0"))
    return isolated_home


def test_two_processes_of_batch_2_train_as_one_process_of_batch_4(two_tasks):
    home = two_tasks
    done = torchrun(home, "train", "ddp", *TRAIN, "--steps", "6", "--batch-size", "2")
    assert "2 processes of batch 2" in done.stdout + done.stderr
    ok(invoke("train", "single", *TRAIN, "--steps", "6", "--batch-size", "4"))
    ddp, single = loss_curve(home, "ddp"), loss_curve(home, "single")
    assert [s for s, _ in ddp] == [s for s, _ in single]
    assert np.allclose([v for _, v in ddp], [v for _, v in single], rtol=1e-5, atol=0)
    assert close(adapter_tensors(home, "ddp"), adapter_tensors(home, "single")) < 1e-5
    runs = [Store.open(home).last_run(Store.open(home).task(t)) for t in ("ddp", "single")]
    assert all(r.status == "done" for r in runs)  # one run row, written by the leader only


def test_pretraining_under_torchrun_equals_one_process(tmp_path, isolated_home):
    clean = tmp_path / "clean"
    clean.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(textured(rng, 40, 56)).save(clean / f"{i}.png")
    ok(invoke(*TINY_INIT))
    common = (
        "backbone",
        "pretrain",
        clean,
        "--config",
        "tiny",
        "--steps",
        "4",
        "--patch-size",
        "16",
        "--checkpoint-every",
        "2",
    )
    torchrun(isolated_home, *common, "--name", "ddp", "--batch-size", "2")
    ok(invoke(*common, "--name", "single", "--batch-size", "4"))
    store = Store.open(isolated_home)
    ddp, single = (load_file(store.path(store.backbone(n).path)) for n in ("ddp", "single"))
    assert close(ddp, single) < 1e-5
    curves = [json.loads(store.backbone(n).loss_curve) for n in ("ddp", "single")]
    assert np.allclose([v for _, v in curves[0]], [v for _, v in curves[1]], rtol=1e-5)
    assert json.loads(store.backbone("ddp").recipe)["processes"] == 2


def _rank_pids(home: Path) -> dict[int, int]:
    """rank -> pid of the torchrun workers training in this store."""
    pids = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = dict(item.split("=", 1) for item in (proc / "environ").read_text().split("\0") if "=" in item)
        except OSError:
            continue
        if env.get("COLORA_HOME") == str(home) and "RANK" in env and "TORCHELASTIC_RUN_ID" in env:
            pids[int(env["RANK"])] = int(proc.name)
    return pids


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks' processes through /proc")
@pytest.mark.parametrize("victim", [1, 0])
def test_resume_after_a_rank_is_killed_finishes_the_same_training(two_tasks, victim):
    home = two_tasks
    steps = 120
    job = torchrun(
        home, "train", "ddp", *TRAIN, "--steps", steps, "--batch-size", "2", "--checkpoint-every", "5", wait=False
    )
    checkpoint = home / "tasks" / "ddp" / "checkpoint.safetensors"
    deadline = time.monotonic() + 300
    while not checkpoint.exists() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.2)
    assert checkpoint.exists(), job.stdout.read() if job.poll() is not None else "no checkpoint in time"
    os.kill(_rank_pids(home)[victim], signal.SIGKILL)
    job.wait(timeout=120)
    assert job.returncode != 0  # torchrun stops the other rank and fails
    torchrun(home, "train", "ddp", *TRAIN, "--steps", steps, "--batch-size", "2", "--checkpoint-every", "5", "--resume")
    run = Store.open(home).last_run(Store.open(home).task("ddp"))
    assert run.status == "done" and run.steps_done == steps
    ok(invoke("train", "single", *TRAIN, "--steps", steps, "--batch-size", "4", "--checkpoint-every", "5"))
    assert close(adapter_tensors(home, "ddp"), adapter_tensors(home, "single")) < 1e-4
