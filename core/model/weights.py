"""Weights on disk: safetensors only (never pickle), written atomically, with metadata.

A backbone file carries its config; an adapter file carries everything needed to apply it
(format version, the backbone's fingerprint, task, rank plan, alpha, what was trained), so
the adapter file is the portable truth. The fingerprint of a backbone is the sha256 of its
tensors (names, dtypes, shapes, bytes), independent of how the file was serialised (and of its
padding, where that is not colora's default).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file

from colora.core.errors import IntegrityError, InvalidInputError, NotFoundError
from colora.core.files import atomic_write, safetensors_header
from colora.core.model.backbone import BackboneConfig, NAFNet
from colora.core.model.lora import (
    DAMAGED_HINT,
    LORA_MODES,
    adapter_deltas,
    adapter_state,
    inject_lora,
    load_adapter_state,
)

ADAPTER_FORMAT = "colora-adapter"
ADAPTER_FORMAT_VERSION = 1
BACKBONE_FORMAT = "colora-backbone"
MAX_WEIGHTS_BYTES = 2 * 1024**3  # refuse absurd files before reading them


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def backbone_fingerprint(state: dict[str, torch.Tensor], config: BackboneConfig) -> str:
    """A backbone's identity: its tensors, and how it pads where that is not colora's default (the same
    tensors with zero padding compute other borders, so adapters must not be shared between them)."""
    fp = state_fingerprint(state)
    if config.pad_mode == "replicate":
        return fp  # every fingerprint recorded before pad_mode existed stays valid
    return hashlib.sha256(f"{fp}|pad_mode={config.pad_mode}".encode()).hexdigest()


def save_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a safetensors file atomically (core.files.atomic_write)."""
    with atomic_write(path) as tmp:
        try:
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        except SafetensorError as e:  # its I/O errors are text: give the file system's own error back
            code = re.search(r"os error (\d+)", str(e))
            if code is None:
                raise
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None


def read_tensors(path: Path, expected_sha256: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file. The file is read once: its sha256, when one was
    recorded, is checked on the very bytes that are then parsed (a changed file is never used)."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"weights file not found: {path}", hint="check the path")
    if not path.is_file():
        raise InvalidInputError(f"{path} is not a regular file", hint="give a .safetensors file")
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise InvalidInputError(f"{path} is larger than {MAX_WEIGHTS_BYTES // 1024**3} GiB; refusing to load it")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InvalidInputError(f"cannot read {path}: {e.strerror or e}") from None
    if expected_sha256 is not None and hashlib.sha256(data).hexdigest() != expected_sha256:
        raise IntegrityError(
            f"{path.name} changed since it was stored (its sha256 is not the one recorded)",
            hint="run `colora doctor`; retrain or re-import what it reports",
        )
    try:
        metadata = safetensors_header(data)[1]
        tensors = load_bytes(data)
    except (SafetensorError, ValueError, TypeError, OverflowError, RecursionError) as e:
        raise InvalidInputError(
            f"{path.name} is not a valid safetensors file ({e})",
            hint="colora reads weights only from .safetensors files",
        ) from None
    return tensors, metadata


# ---------------------------------------------------------------- backbones


def save_backbone(path: Path, model: NAFNet, extra: dict[str, str] | None = None) -> str:
    """Returns the backbone's fingerprint."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    fp = backbone_fingerprint(state, model.config)
    meta = {"format": BACKBONE_FORMAT, "config": model.config.to_json(), "sha256": fp}
    meta.update(extra or {})
    save_tensors_atomic(path, state, meta)
    return fp


def load_backbone(
    path: Path, expected_sha256: str | None = None, *, expected_file_sha256: str | None = None
) -> tuple[NAFNet, dict[str, str]]:
    """A backbone file as a frozen NAFNet, checked before any model is built: its config within
    bounds, every tensor's name, shape and dtype against that config, finite values, and (when
    recorded) the file's sha256 and the tensors' fingerprint."""
    name = Path(path).name
    tensors, meta = read_tensors(path, expected_file_sha256)
    if meta.get("format") != BACKBONE_FORMAT or "config" not in meta:
        raise InvalidInputError(f"{name} is not a colora backbone (no backbone metadata)")
    config = BackboneConfig.parse(meta["config"], name)
    expected = expected_shapes(config)
    problems = [k for k, shape in expected.items() if k not in tensors or tuple(tensors[k].shape) != shape]
    problems += [k for k in tensors if k not in expected]
    if problems:
        raise InvalidInputError(
            f"{name} does not match its config: {len(problems)} tensor(s) missing, extra or "
            f"mis-shaped, e.g. {problems[0]}"
        )
    bad_dtype = [k for k, t in tensors.items() if t.dtype != torch.float32]
    if bad_dtype:
        raise InvalidInputError(f"{name}: tensor {bad_dtype[0]} is {tensors[bad_dtype[0]].dtype}, expected float32")
    not_finite = [k for k, t in tensors.items() if not torch.isfinite(t).all()]
    if not_finite:
        raise InvalidInputError(
            f"{name}: tensor {not_finite[0]} holds NaN or infinite values",
            hint="the file is damaged, or its training diverged",
        )
    fp = backbone_fingerprint(tensors, config)
    if meta.get("sha256") and meta["sha256"] != fp:
        raise IntegrityError(
            f"backbone {name}: its tensors have fingerprint {fp[:12]}, but the file says {meta['sha256'][:12]}",
            hint="the file was changed after colora wrote it; use an intact copy",
        )
    if expected_sha256 is not None and fp != expected_sha256:
        raise IntegrityError(
            f"backbone {name} has fingerprint {fp[:12]}, but {expected_sha256[:12]} was recorded",
            hint="the file was changed or replaced; run `colora doctor`",
        )
    model = NAFNet(config)
    model.load_state_dict(tensors)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    meta["sha256"] = fp
    return model, meta


def expected_shapes(config: BackboneConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a NAFNet of this config and its shape, from a model on the meta device
    (no memory is allocated, whatever the config claims)."""
    with torch.device("meta"):
        model = NAFNet(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- adapters


@dataclass
class AdapterMeta:
    task: str
    backbone_sha256: str
    rank_plan: dict[str, int]
    alpha: float | None = None  # None: alpha = rank per layer
    lora_mode: str = "weight"
    plan_method: str = "uniform"
    trained: str = "lora_A and lora_B of dense convs; backbone frozen"
    recycled: bool = False
    extra: dict = field(default_factory=dict)

    def to_metadata(self) -> dict[str, str]:
        d = asdict(self)
        meta = {"format": ADAPTER_FORMAT, "format_version": str(ADAPTER_FORMAT_VERSION)}
        meta.update({k: json.dumps(v) if not isinstance(v, str) else v for k, v in d.items()})
        return meta

    @classmethod
    def from_metadata(cls, meta: dict[str, str], name: str = "adapter") -> "AdapterMeta":
        """Read from a file (untrusted): every field of the right type, numbers finite, ranks in bounds."""
        if meta.get("format") != ADAPTER_FORMAT:
            raise InvalidInputError(
                f"{name} is not a colora adapter (no adapter metadata)",
                hint="give a file made by `colora adapter export` or `colora train`",
            )
        version = meta.get("format_version", "0")
        if not re.fullmatch(r"[0-9]{1,4}", version):
            raise InvalidInputError(
                f"{name} has broken adapter metadata (format_version {version[:20]!r})", hint=DAMAGED_HINT
            )
        size = sum(len(k) + len(v) for k, v in meta.items())
        if size > MAX_METADATA_BYTES:
            raise InvalidInputError(
                f"{name} carries {size / 2**20:.1f} MiB of metadata; colora reads at most "
                f"{MAX_METADATA_BYTES // 2**10} KiB (its own adapters carry a few)",
                hint=DAMAGED_HINT,
            )
        if int(version) > ADAPTER_FORMAT_VERSION:
            raise InvalidInputError(
                f"{name} uses adapter format {version}, newer than this colora understands ({ADAPTER_FORMAT_VERSION})",
                hint="upgrade colora",
            )
        try:
            plan = _json(meta, "rank_plan", None, dict)
            if plan is None or not all(
                isinstance(r, int) and not isinstance(r, bool) and 1 <= r <= MAX_RANK for r in plan.values()
            ):
                raise ValueError(f"rank_plan must map layers to whole ranks from 1 to {MAX_RANK}")
            alpha = _json(meta, "alpha", None, (int, float))
            if alpha is not None and not (math.isfinite(alpha) and MIN_ALPHA <= alpha <= MAX_ALPHA):
                raise ValueError(f"alpha must be a number in [{MIN_ALPHA:g}, {MAX_ALPHA:g}], not {alpha}")
            mode = meta.get("lora_mode", "weight")
            if mode not in LORA_MODES:
                raise ValueError(f"lora_mode must be one of {', '.join(LORA_MODES)}")
            if "task" not in meta or "backbone_sha256" not in meta:
                raise ValueError("task and backbone_sha256 are required")
            return cls(
                task=meta["task"],
                backbone_sha256=meta["backbone_sha256"],
                rank_plan=plan,
                alpha=None if alpha is None else float(alpha),
                lora_mode=mode,
                plan_method=meta.get("plan_method", "uniform"),
                trained=meta.get("trained", ""),
                recycled=_json(meta, "recycled", False, bool),
                extra=_json(meta, "extra", {}, dict),
            )
        except ValueError as e:
            raise InvalidInputError(f"{name} has broken adapter metadata ({e})", hint=DAMAGED_HINT) from None

    @property
    def budget(self) -> float | None:
        """The parameter budget its plan was made under, where the file says one (a fraction in (0, 1])."""
        info = self.extra.get("plan_info")
        budget = info.get("budget") if isinstance(info, dict) else None
        ok = isinstance(budget, (int, float)) and not isinstance(budget, bool) and 0 < budget <= 1
        return float(budget) if ok else None


MAX_RANK = 4096  # no dense conv of a NAFNet colora can hold has more channels than this
MAX_ALPHA = 1e4  # LoRA scales alpha / rank of about 1 (colora writes alpha = rank); 1e4 is already absurd
MIN_ALPHA = 1e-3  # below it the update is numerically nothing: an adapter that silently does no work
MAX_METADATA_BYTES = 1024 * 1024  # colora's own adapter metadata (plan, scores, recipe) is a few KiB


def _json(meta: dict[str, str], key: str, default, kind):
    """A JSON-encoded metadata field of type `kind` (bools are not numbers), or `default` if absent."""
    if key not in meta:
        return default
    try:
        value = json.loads(meta[key])
    except (ValueError, RecursionError):
        raise ValueError(f"{key} is not JSON (or nested too deep)") from None
    if value is None and default is None:  # an optional field written as null
        return None
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise ValueError(f"{key} has the wrong type")
    if isinstance(value, dict) and key == "rank_plan" and not all(isinstance(k, str) for k in value):
        raise ValueError(f"{key} has the wrong type")
    return value


def save_adapter(path: Path, model: torch.nn.Module, meta: AdapterMeta) -> None:
    save_tensors_atomic(path, adapter_state(model), meta.to_metadata())


def read_adapter(path: Path, expected_sha256: str | None = None) -> tuple[dict[str, torch.Tensor], AdapterMeta]:
    tensors, raw = read_tensors(path, expected_sha256)
    return tensors, AdapterMeta.from_metadata(raw, Path(path).name)


def read_adapter_for(
    backbone_sha256: str, path: Path, expected_sha256: str | None = None
) -> tuple[dict[str, torch.Tensor], AdapterMeta]:
    """An adapter file's tensors and metadata, refused unless it was trained on this backbone
    (and, when its file's sha256 was recorded, unless the file is unchanged)."""
    tensors, meta = read_adapter(path, expected_sha256)
    if meta.backbone_sha256 != backbone_sha256:
        raise IntegrityError(
            f"adapter for task '{meta.task}' was trained on backbone {meta.backbone_sha256[:12]}, "
            f"not on this one ({backbone_sha256[:12]})",
            hint="retrain it with `colora train " + meta.task + "` on the current backbone",
        )
    return tensors, meta


def apply_adapter(model: NAFNet, backbone_sha256: str, path: Path, mode: str | None = None) -> AdapterMeta:
    """Inject the adapter's LoRA layers into `model` (whose fingerprint is `backbone_sha256`), after
    checking its plan and tensors against the model, so nothing is allocated for a bad file."""
    tensors, meta = read_adapter_for(backbone_sha256, path)
    adapter_deltas(model, meta.rank_plan, meta.alpha, tensors)  # paths, ranks, shapes, dtypes, finite merge
    inject_lora(model, meta.rank_plan, meta.alpha, mode or meta.lora_mode)
    load_adapter_state(model, tensors)
    return meta
