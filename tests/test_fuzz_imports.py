"""Property test: whatever file `adapter import` or `backbone import` is handed, the answer is
an import or one clean refusal: never a traceback, never a partial write, memory bounded.

Files are valid colora weight files mutated by hypothesis: random bytes, truncations, flipped
header bytes, metadata fields replaced by arbitrary JSON, tensor entries with other shapes and
dtypes.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import copy_store, err, invoke

pytestmark = pytest.mark.usefixtures("one_torch_thread")

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
MEMORY_BOUND_MB = 600  # the growth of this process's peak memory over every example together


def split(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


@st.composite
def mutated(draw, original: bytes) -> bytes:
    kind = draw(st.sampled_from(["bytes", "truncate", "flip", "metadata", "tensor"]))
    if kind == "bytes":
        return draw(st.binary(max_size=4096))
    if kind == "truncate":
        return original[: draw(st.integers(0, len(original) - 1))]
    if kind == "flip":
        data = bytearray(original)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, min(len(data) - 1, 8 + struct.unpack("<Q", original[:8])[0])))
            data[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    header, body = split(original)
    if kind == "metadata":
        meta = header.setdefault("__metadata__", {})
        key = draw(st.sampled_from(sorted(meta) + ["extra", "recycled", "budget", "config", "sha256"]))
        value = draw(JSON)
        meta[key] = value if draw(st.booleans()) else json.dumps(value)
        return join(header, body)
    name = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
    entry = header[name]
    if draw(st.booleans()):
        entry["shape"] = draw(st.lists(st.integers(0, 10**6), max_size=5))
    else:
        entry["dtype"] = draw(st.sampled_from(["F16", "F64", "I32", "U8", "BOOL", "F32", "??"]))
    return join(header, body)


def files(home: Path) -> dict[str, str]:
    return {
        p.relative_to(home).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.rglob("*"))
        if p.is_file() and not p.name.startswith("colora.db")
    }


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check_import(home: Path, tmp: Path, data: bytes, *args) -> None:
    path = tmp / "candidate.safetensors"
    path.write_bytes(data)
    before = files(home)
    result = invoke(*args[:2], path, *args[2:], "--home", home)  # fails the test on any traceback
    assert result.exit_code in (0, 1), result.output
    if result.exit_code == 1:
        message = err(result)
        assert message.startswith("Error: ") and not message.startswith("Error: unexpected "), message[:500]
        assert files(home) == before, "a refused import changed the store"
        assert not list(home.rglob("*.part")), "a temporary file was left behind"


@pytest.fixture(scope="module")
def fuzz_home(trained_store, tmp_path_factory) -> Path:
    return copy_store(trained_store.home, tmp_path_factory.mktemp("fuzz") / "home")


def test_adapter_import_survives_any_file(fuzz_home, tmp_path_factory):
    original = next((fuzz_home / "tasks" / "noise").glob("adapter-*.safetensors")).read_bytes()
    tmp = tmp_path_factory.mktemp("adapter-candidates")
    start = peak_mb()
    counter = iter(range(10**6))

    @settings(
        max_examples=int(os.environ.get("COLORA_FUZZ_EXAMPLES", 80)),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(mutated(original))
    def run(data):
        check_import(fuzz_home, tmp, data, "adapter", "import", "--task", f"fuzz-{next(counter)}")

    run()
    assert peak_mb() - start < MEMORY_BOUND_MB


def test_backbone_import_survives_any_file(fuzz_home, tmp_path_factory):
    original = (fuzz_home / "backbones" / "random-tiny.safetensors").read_bytes()
    tmp = tmp_path_factory.mktemp("backbone-candidates")
    start = peak_mb()
    counter = iter(range(10**6))

    @settings(
        max_examples=int(os.environ.get("COLORA_FUZZ_EXAMPLES", 80)),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(mutated(original))
    def run(data):
        check_import(fuzz_home, tmp, data, "backbone", "import", "--name", f"fuzz-{next(counter)}")

    run()
    assert peak_mb() - start < MEMORY_BOUND_MB
