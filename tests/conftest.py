"""Every test gets its own store in a tmp dir; tiny images are made here, never read from ../shared.

One trained store (`trained_store`) is built once per session and shared: tests that only read
it use it in place; tests that change it work on a copy (`helpers.copy_store`). Its pairs
folder is never modified.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import FAST_TRAIN, TINY_INIT, invoke, make_pairs, ok


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch) -> Path:
    """Point COLORA_HOME at a fresh folder so no test touches a real store."""
    home = tmp_path / "colora-home"
    monkeypatch.setenv("COLORA_HOME", str(home))
    monkeypatch.delenv("COLORA_DEBUG", raising=False)
    monkeypatch.delenv("COLORA_DB_URL", raising=False)  # the SQLite file unless a test asks for a server
    return home


@pytest.fixture(scope="module")
def one_torch_thread():
    """On a busy 2-core machine, several intra-op threads make tiny models many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def wide_console(monkeypatch):
    """Rich reads COLUMNS on every print: keep table cells from being wrapped or cut."""
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture
def pairs_dir(tmp_path) -> Path:
    return make_pairs(tmp_path / "pairs")


@dataclass
class TrainedStore:
    home: Path
    pairs: Path  # 6 noisy/clean pairs of 40 x 32 px: 5 train, 1 val
    train: object  # the CliRunner result of `colora train noise`
    backbone_sha_before: str  # the backbone file's sha256 before training
    steps: int  # what FAST_TRAIN asked for


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory) -> TrainedStore:
    """A store with task 'noise' whose adapter is trained (FAST_TRAIN: uniform rank 2)."""
    import torch

    root = tmp_path_factory.mktemp("trained")
    home, pairs = root / "home", make_pairs(root / "pairs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLORA_HOME", str(home))
        mp.delenv("COLORA_DEBUG", raising=False)
        mp.setenv("COLUMNS", "250")
        ok(invoke(*TINY_INIT))
        ok(invoke("task", "add", "noise", pairs))
        before = hashlib.sha256((home / "backbones" / "random-tiny.safetensors").read_bytes()).hexdigest()
        result = ok(invoke("train", "noise", *FAST_TRAIN))
    torch.set_num_threads(threads)
    return TrainedStore(home, pairs, result, before, int(FAST_TRAIN[FAST_TRAIN.index("--steps") + 1]))


# ---------------------------------------------------------------- a real PostgreSQL server, when there is one

PG_URL = os.environ.get("COLORA_TEST_PG_URL", "postgresql+psycopg://colora:colora@localhost/postgres")


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The URL of a PostgreSQL server the tests may create databases on (.ci/run starts one);
    the tests that need it skip, saying why, where there is none."""
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[dev]')")
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL)
    try:
        psycopg.connect(
            url.set(drivername="postgresql").render_as_string(hide_password=False), connect_timeout=3
        ).close()
    except psycopg.Error as e:
        pytest.skip(
            f"no PostgreSQL server at {url.render_as_string(hide_password=True)} ({str(e).strip()[:120]}); "
            "set COLORA_TEST_PG_URL, or install and start postgresql as .ci/run does"
        )
    return PG_URL


@pytest.fixture
def pg_database(pg_server) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped afterwards; its URL."""
    import secrets

    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(pg_server)
    name = f"colora_test_{secrets.token_hex(4)}"
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield server.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, monkeypatch) -> str:
    """Each store test once on the store's own SQLite file, once on a PostgreSQL database."""
    if request.param == "postgresql":
        monkeypatch.setenv("COLORA_DB_URL", request.getfixturevalue("pg_database"))
    else:
        monkeypatch.delenv("COLORA_DB_URL", raising=False)
    return request.param


# ---------------------------------------------------------------- the command-line tests' stores


@pytest.fixture
def store(isolated_home) -> Path:
    """An initialised store at $COLORA_HOME (tiny random backbone)."""
    ok(invoke(*TINY_INIT))
    return isolated_home


@pytest.fixture
def store_with_task(store, pairs_dir) -> Path:
    """`store` with task 'noise' (6 pairs: 5 train, 1 val) from this test's own pairs."""
    ok(invoke("task", "add", "noise", pairs_dir))
    return store


@pytest.fixture
def trained(trained_store):
    """The session's store with task 'noise' (5 train / 1 val pairs), its adapter trained (FAST_TRAIN)."""
    return trained_store
