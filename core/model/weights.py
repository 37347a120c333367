"""Weights on disk: safetensors only (never pickle), written atomically, with metadata.

A backbone file carries its config; an adapter file carries everything needed to apply it
(format version, the backbone's fingerprint, task, rank plan, alpha, what was trained), so
the adapter file is the portable truth. The fingerprint of a backbone is the sha256 of its
tensors (names, dtypes, shapes, bytes), independent of how the file was serialised.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from core.model.backbone import BackboneConfig, NAFNet
from core.errors import IntegrityError, InvalidInputError, NotFoundError
from core.files import atomic_write
from core.model.lora import adapter_state, inject_lora, load_adapter_state

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


def save_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a safetensors file atomically (core.files.atomic_write)."""
    with atomic_write(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"weights file not found: {path}")
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise InvalidInputError(f"{path} is larger than {MAX_WEIGHTS_BYTES // 1024**3} GiB; refusing to load it")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise InvalidInputError(
            f"{path.name} is not a valid safetensors file ({e})",
            hint="colora reads weights only from .safetensors files",
        ) from None
    return tensors, metadata


# ---------------------------------------------------------------- backbones


def save_backbone(path: Path, model: NAFNet, extra: dict[str, str] | None = None) -> str:
    """Returns the backbone's fingerprint."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    fp = state_fingerprint(state)
    meta = {"format": BACKBONE_FORMAT, "config": model.config.to_json(), "sha256": fp}
    meta.update(extra or {})
    save_tensors_atomic(path, state, meta)
    return fp


def load_backbone(path: Path, expected_sha256: str | None = None) -> tuple[NAFNet, dict[str, str]]:
    tensors, meta = read_tensors(path)
    if meta.get("format") != BACKBONE_FORMAT or "config" not in meta:
        raise InvalidInputError(f"{Path(path).name} is not a colora backbone (no backbone metadata)")
    try:
        config = BackboneConfig.from_json(meta["config"])
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{Path(path).name} has an unreadable backbone config ({e})") from None
    model = NAFNet(config)
    expected = model.state_dict()
    problems = [k for k in expected if k not in tensors or tensors[k].shape != expected[k].shape]
    problems += [k for k in tensors if k not in expected]
    if problems:
        raise InvalidInputError(
            f"{Path(path).name} does not match its config: {len(problems)} tensor(s) missing, extra or "
            f"mis-shaped, e.g. {problems[0]}"
        )
    bad_dtype = [k for k, t in tensors.items() if t.dtype != torch.float32]
    if bad_dtype:
        raise InvalidInputError(f"{Path(path).name}: tensor {bad_dtype[0]} is {tensors[bad_dtype[0]].dtype}, expected float32")
    fp = state_fingerprint(tensors)
    if expected_sha256 is not None and fp != expected_sha256:
        raise IntegrityError(
            f"backbone {Path(path).name} has fingerprint {fp[:12]}, but {expected_sha256[:12]} was recorded",
            hint="the file was changed or replaced; run `colora doctor`",
        )
    model.load_state_dict(tensors)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    meta["sha256"] = fp
    return model, meta


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
        if meta.get("format") != ADAPTER_FORMAT:
            raise InvalidInputError(f"{name} is not a colora adapter (no adapter metadata)")
        version = int(meta.get("format_version", "0"))
        if version > ADAPTER_FORMAT_VERSION:
            raise InvalidInputError(
                f"{name} uses adapter format {version}, newer than this colora understands ({ADAPTER_FORMAT_VERSION})",
                hint="upgrade colora",
            )
        try:
            return cls(
                task=meta["task"],
                backbone_sha256=meta["backbone_sha256"],
                rank_plan={k: int(v) for k, v in json.loads(meta["rank_plan"]).items()},
                alpha=json.loads(meta.get("alpha", "null")),
                lora_mode=meta.get("lora_mode", "weight"),
                plan_method=meta.get("plan_method", "uniform"),
                trained=meta.get("trained", ""),
                recycled=json.loads(meta.get("recycled", "false")),
                extra=json.loads(meta.get("extra", "{}")),
            )
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise InvalidInputError(f"{name} has broken adapter metadata ({e})") from None


def save_adapter(path: Path, model: torch.nn.Module, meta: AdapterMeta) -> None:
    save_tensors_atomic(path, adapter_state(model), meta.to_metadata())


def read_adapter(path: Path) -> tuple[dict[str, torch.Tensor], AdapterMeta]:
    tensors, raw = read_tensors(path)
    return tensors, AdapterMeta.from_metadata(raw, Path(path).name)


def read_adapter_for(backbone_sha256: str, path: Path) -> tuple[dict[str, torch.Tensor], AdapterMeta]:
    """An adapter file's tensors and metadata, refused unless it was trained on this backbone."""
    tensors, meta = read_adapter(path)
    if meta.backbone_sha256 != backbone_sha256:
        raise IntegrityError(
            f"adapter for task '{meta.task}' was trained on backbone {meta.backbone_sha256[:12]}, "
            f"not on this one ({backbone_sha256[:12]})",
            hint="retrain it with `colora train " + meta.task + "` on the current backbone",
        )
    return tensors, meta


def apply_adapter(model: NAFNet, backbone_sha256: str, path: Path, mode: str | None = None) -> AdapterMeta:
    """Inject the adapter's LoRA layers into `model` (whose fingerprint is `backbone_sha256`)."""
    tensors, meta = read_adapter_for(backbone_sha256, path)
    inject_lora(model, meta.rank_plan, meta.alpha, mode or meta.lora_mode)
    load_adapter_state(model, tensors)
    return meta
