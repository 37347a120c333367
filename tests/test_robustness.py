"""Killed and concurrent commands leave a consistent store: real subprocesses, real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import make_pairs

COLORA = [sys.executable, "-c", "from colora.cli.main import run; run()"]


def colora(home, *args, check=True, **kwargs):
    env = {**os.environ, "COLORA_HOME": str(home), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*COLORA, *map(str, args)], env=env, capture_output=True, text=True, **kwargs)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def start(home, *args):
    env = {**os.environ, "COLORA_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [*COLORA, *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture
def home_with_task(tmp_path, isolated_home):
    colora(isolated_home, "init", "--random-init", "--config", "tiny")
    colora(isolated_home, "task", "add", "noise", make_pairs(tmp_path / "p", n=4, size=(32, 32)))
    return isolated_home


def wait_for(path, proc, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_sigkill_during_training_then_doctor_and_resume(home_with_task):
    home = home_with_task
    train = (
        "train",
        "noise",
        "--rank",
        2,
        "--steps",
        400,
        "--patch-size",
        16,
        "--batch-size",
        2,
        "--checkpoint-every",
        10,
    )
    proc = start(home, *train)
    wait_for(home / "tasks" / "noise" / "checkpoint.safetensors", proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    report = json.loads(colora(home, "doctor", "--json").stdout)  # exit 0: consistent
    assert not [f for f in report if f["severity"] == "error"]
    assert any(f["kind"] == "resumable_run" for f in report)
    assert json.loads(colora(home, "list", "--json").stdout)[0]["adapter"] == "interrupted"

    resumed = colora(home, *train, "--resume")
    assert "resumed at step" in resumed.stderr
    assert json.loads(colora(home, "list", "--json").stdout)[0]["adapter"] == "trained"
    colora(home, "eval", "noise")  # the adapter loads and scores
    report = json.loads(colora(home, "doctor", "--json").stdout)
    assert [f for f in report if f["severity"] != "cleanup"] == []


def test_concurrent_trainings_and_list_on_one_store(home_with_task, tmp_path):
    home = home_with_task
    colora(home, "task", "add", "noise2", make_pairs(tmp_path / "q", n=4, size=(32, 32), seed=5))
    args = ("--rank", 2, "--steps", 30, "--patch-size", 16, "--batch-size", 2)
    procs = [start(home, "train", "noise", *args), start(home, "train", "noise2", *args)]
    listings = 0
    while any(p.poll() is None for p in procs):
        colora(home, "list", "--json")
        listings += 1
    for p in procs:
        assert p.returncode == 0, p.stderr.read()
    rows = {r["task"]: r for r in json.loads(colora(home, "list", "--json").stdout)}
    assert rows["noise"]["adapter"] == rows["noise2"]["adapter"] == "trained"
    assert listings >= 1
    colora(home, "doctor")


def test_racing_task_adds_one_wins_one_gets_a_clear_error(tmp_path, isolated_home):
    colora(isolated_home, "init", "--random-init", "--config", "tiny")
    folder = make_pairs(tmp_path / "p", n=3)
    procs = [start(isolated_home, "task", "add", "same", folder) for _ in range(2)]
    results = [(p.wait(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, err in results if code == 1)
    assert "already exists" in loser and "Traceback" not in loser
    assert len(json.loads(colora(isolated_home, "list", "--json").stdout)) == 1


def test_second_training_of_the_same_task_is_refused_while_one_runs(home_with_task):
    home = home_with_task
    # far more steps than the test lasts (the first run is killed at the end): a run that finished
    # before the second one starts would make the refusal untestable
    train = (
        "train",
        "noise",
        "--rank",
        2,
        "--steps",
        100_000,
        "--patch-size",
        16,
        "--batch-size",
        2,
        "--checkpoint-every",
        10,
    )
    proc = start(home, *train)
    try:
        wait_for(home / "tasks" / "noise" / "checkpoint.safetensors", proc)
        second = colora(home, *train, check=False)
        assert second.returncode == 1 and "already being trained" in second.stderr
    finally:
        proc.kill()
        proc.wait()


def test_task_rm_is_refused_while_the_task_trains_and_then_leaves_nothing(home_with_task):
    home = home_with_task
    train = ("train", "noise", "--rank", 2, "--steps", 100_000, "--patch-size", 16, "--batch-size", 2)
    proc = start(home, *train, "--checkpoint-every", 10)
    try:
        wait_for(home / "tasks" / "noise" / "checkpoint.safetensors", proc)
        refused = colora(home, "task", "rm", "noise", "--yes", check=False)
        assert refused.returncode == 1 and "is being trained (process" in refused.stderr
        assert "Traceback" not in refused.stderr and proc.poll() is None  # the training goes on
    finally:
        proc.kill()
        proc.wait()
    colora(home, "task", "rm", "noise", "--yes")  # its process is gone: the run is dead
    assert not (home / "tasks" / "noise").exists()
    assert json.loads(colora(home, "list", "--json").stdout) == []
    assert "is consistent" in colora(home, "doctor", "--fix").stderr


def test_a_training_whose_task_was_removed_ends_in_one_line_and_leaves_nothing(home_with_task):
    from colora.store.store import Store

    store = Store.open(home_with_task)
    task = store.task("noise")
    run = store.start_run(task, store.backbone(), "{}")
    adapter = store.path("tasks/noise/adapter-x.safetensors")
    adapter.parent.mkdir(parents=True, exist_ok=True)
    adapter.write_bytes(b"weights")
    with store.session() as s:  # as a `task rm` on another machine that judged this run dead
        from colora.store.schema import Task

        s.delete(s.get_one(Task, task.id))
    from colora.core.errors import ConflictError

    with pytest.raises(ConflictError, match="was removed while this training ran"):
        store.finish_run(
            run,
            task,
            adapter_rel="tasks/noise/adapter-x.safetensors",
            trainable_params=1,
            backbone_params=1,
            plan_method="uniform",
            budget=None,
            loss_curve=[],
            steps_done=1,
            wall_time_s=1.0,
        )
    assert not adapter.exists()
    with pytest.raises(ConflictError, match="was removed"):
        store.heartbeat(run)
    from colora.store.status import RunStatus

    store.mark_run(run, RunStatus.FAILED, error="x")  # no row left to mark: quietly nothing


def kill_when(proc, condition, timeout=120):
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None or time.time() > deadline:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def assert_consistent(home):
    result = colora(home, "doctor", "--json", check=False)
    assert result.returncode == 0, result.stderr
    assert not [f for f in json.loads(result.stdout) if f["severity"] == "error"]
    colora(home, "list")


def test_sigkill_during_task_add_restore_and_pretrain(home_with_task, tmp_path):
    home = home_with_task
    # task add: killed while validating a larger folder -> no half task
    big = make_pairs(tmp_path / "big", n=40, size=(64, 48))
    proc = start(home, "task", "add", "big", big)
    kill_when(proc, lambda: False, timeout=1.0)
    assert_consistent(home)
    names = [r["task"] for r in json.loads(colora(home, "list", "--json").stdout)]
    assert names in (["big", "noise"], ["noise"])
    # restore: killed after the first output appears
    colora(home, "train", "noise", "--rank", 2, "--steps", 3, "--patch-size", 16, "--batch-size", 2)
    out = tmp_path / "out"
    proc = start(home, "restore", "--task", "noise", big / "input", "-o", out)
    kill_when(proc, lambda: out.exists() and any(out.glob("*.png")))
    assert_consistent(home)
    assert all(p.stat().st_size > 0 for p in (big / "input").iterdir())
    # pretrain: killed after its first checkpoint, then resumed to the end
    clean = big / "target"
    args = (
        "backbone",
        "pretrain",
        clean,
        "--config",
        "tiny",
        "--steps",
        200,
        "--batch-size",
        2,
        "--patch-size",
        16,
        "--checkpoint-every",
        5,
        "--name",
        "p",
    )
    proc = start(home, *args)
    kill_when(proc, lambda: (home / "pretrain" / "p" / "checkpoint.safetensors").exists())
    assert_consistent(home)
    colora(home, *args, "--resume")
    assert any(b["name"] == "p" for b in json.loads(colora(home, "backbone", "list", "--json").stdout))
    assert_consistent(home)
