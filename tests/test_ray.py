"""`colora restore --ray local`: Ray Data on a local Ray instance, killed halfway and run again."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from helpers import err, invoke, ok, textured

pytest.importorskip("ray.data", reason="Ray Data (the ray extra, in dev) runs restore --ray")


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(10):
        noisy = np.clip(textured(rng, 96, 128) + rng.normal(0, 20, (96, 128, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"img{i:02d}.png")
    return folder


def ray_restore(trained_store, photos, out, *extra):
    """The restore in its own process group (the driver and the Ray instance it starts)."""
    env = {**os.environ, "COLORA_HOME": str(trained_store.home)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "colora",
            "restore",
            "--task",
            "noise",
            str(photos),
            "-o",
            str(out),
            "--ray",
            "local",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def test_ray_restore_killed_halfway_then_rerun_equals_the_plain_restore(trained_store, photos, tmp_path):
    out = tmp_path / "ray-out"
    job = ray_restore(trained_store, photos, out, "--workers", "1")
    deadline = time.monotonic() + 240
    while job.poll() is None and time.monotonic() < deadline and not any(out.glob("img*.png")):
        time.sleep(0.05)
    halfway = len(list(out.glob("img*.png"))) if out.exists() else 0
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=60)
    assert halfway < 10, "the job finished before it could be stopped"

    job = ray_restore(trained_store, photos, out, "--workers", "2")
    text, _ = job.communicate(timeout=600)
    assert job.returncode == 0 and "Traceback" not in text, text
    counts = re.search(r"Ray: (\d+) restored, (\d+) skipped \(already there\), 0 failed", text)
    assert counts, text
    restored, skipped = map(int, counts.groups())
    assert restored + skipped == 10 and skipped >= halfway

    plain = tmp_path / "plain"
    ok(invoke("restore", "--task", "noise", photos, "-o", plain, "--engine", "torch", "--home", trained_store.home))
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in plain.iterdir())  # once each, no leftovers
    for mine in plain.iterdir():
        assert (out / mine.name).read_bytes() == mine.read_bytes(), mine.name


def test_ray_restore_refuses_what_it_cannot_do(trained_store, photos, tmp_path):
    r = invoke(
        "restore", "--task", "auto", photos, "-o", tmp_path / "o", "--ray", "local", "--home", trained_store.home
    )
    assert r.exit_code == 1 and "--task auto runs without --ray" in err(r)
    r = invoke(
        "restore",
        "--task",
        "noise",
        photos,
        "-o",
        trained_store.home / "x",
        "--ray",
        "local",
        "--home",
        trained_store.home,
    )
    assert r.exit_code == 1 and "inside the store" in err(r)


def test_ray_restore_to_an_address_that_never_answers_fails_within_seconds(trained_store, photos, tmp_path):
    import socket
    import threading

    # a host that accepts connections and says nothing: Ray alone waits minutes on it, silently
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        held = []
        threading.Thread(target=lambda: held.append(silent.accept()), daemon=True).start()
        address = "127.0.0.1:%d" % silent.getsockname()[1]
        started = time.monotonic()
        r = invoke(
            "restore", "--task", "noise", photos, "-o", tmp_path / "o", "--ray", address, "--home", trained_store.home
        )
        assert time.monotonic() - started < 30
    assert r.exit_code == 1 and f"no Ray cluster answers at {address} (no answer within 5 s)" in err(r)
    assert "Traceback" not in err(r) and not any((tmp_path / "o").glob("*.png"))
    for bad in ("127.0.0.1:1", "not-an-address"):
        r = invoke(
            "restore", "--task", "noise", photos, "-o", tmp_path / "o", "--ray", bad, "--home", trained_store.home
        )
        assert r.exit_code == 1 and ("no Ray cluster answers" in err(r) or "is not a Ray address" in err(r))
