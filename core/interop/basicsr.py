"""BasicSR / official NAFNet checkpoints -> a colora NAFNet.

BasicSR saves `{"params": state_dict}` (`params_ema` too when it keeps an EMA) with torch.save;
people also share bare state dicts, DataParallel adds `module.` to every name, and some convert
them to safetensors. The official NAFNet's module paths are colora's (core/model/backbone.py), so
reading one is unwrapping, reading the layout (width, blocks per stage) off the tensors' names
and shapes, and checking every tensor against that layout before a model is built.

A `.pth` is untrusted code for full pickle: it is read only with `torch.load(weights_only=True)`,
PyTorch's restricted unpickler, and refused when that cannot read it.
"""

from __future__ import annotations

import math
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from colora.core.errors import InvalidInputError, NotFoundError
from colora.core.model.backbone import LIMITS, BackboneConfig, NAFNet
from colora.core.model.lora import MAX_WEIGHT
from colora.core.model.weights import MAX_WEIGHTS_BYTES, expected_shapes, read_tensors

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")
WRAPPER_KEYS = ("params_ema", "params", "state_dict")  # BasicSR's keys first; EMA weights are the better ones
SAFE_LOAD_HINT = (
    "colora reads .pth files only with torch.load(weights_only=True), which runs no code; "
    "where you trust the file, convert it to a plain state dict or .safetensors"
)


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict of a BasicSR-style checkpoint and where in the file it was ("params_ema",
    "params", "state_dict" or "bare"), with a `module.` prefix removed."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"checkpoint not found: {path}", hint="check the path")
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise InvalidInputError(
            f"{path.name} is not a .pth or .safetensors checkpoint",
            hint="give a NAFNet checkpoint (.pth, .pt) or a .safetensors file",
        )
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise InvalidInputError(f"{path.name} is larger than {MAX_WEIGHTS_BYTES // 1024**3} GiB; refusing to load it")
    if path.suffix.lower() == ".safetensors":
        loaded: object = read_tensors(path)[0]
    else:
        _check_archive(path)
        try:
            with warnings.catch_warnings():  # torch's warnings about odd files are not the user's business
                warnings.simplefilter("ignore")
                loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:  # what the restricted unpickler raises for anything but tensors and containers
            raise InvalidInputError(
                f"{path.name} cannot be read as plain weights: it holds objects that only full "
                "pickle could load, and full pickle can run code",
                hint=SAFE_LOAD_HINT,
            ) from None
        except Exception as e:  # noqa: BLE001 - a damaged or foreign file: torch raises many kinds
            raise InvalidInputError(
                f"{path.name} cannot be read as plain weights (not a readable PyTorch checkpoint: {type(e).__name__})",
                hint="check that the file is complete",
            ) from None
    source = "bare"
    if isinstance(loaded, dict):
        for key in WRAPPER_KEYS:
            if isinstance(loaded.get(key), dict) and loaded[key]:
                loaded, source = loaded[key], key
                break
    if not isinstance(loaded, dict) or not loaded:
        raise InvalidInputError(
            f"{path.name} holds no state dict (expected tensors by name, or under 'params')",
            hint="give a NAFNet checkpoint saved by BasicSR or as a state dict",
        )
    bad = [k for k, v in loaded.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise InvalidInputError(
            f"{path.name}: entry {str(bad[0])[:60]!r} of its state dict is not a named tensor",
            hint="give a NAFNet checkpoint saved by BasicSR or as a state dict",
        )
    # a tensor is plain data: dense, on the CPU, and no larger than the bytes behind it (an expanded
    # view of one number could otherwise ask for gigabytes once copied)
    odd = [
        k
        for k, t in loaded.items()
        if t.layout != torch.strided
        or t.device.type != "cpu"
        or t.numel() * t.element_size() > t.untyped_storage().nbytes()
    ]
    if odd:
        raise InvalidInputError(
            f"{path.name}: tensor {odd[0][:60]!r} is not plain dense data (a sparse tensor, or a "
            "view larger than its storage)",
            hint="save the checkpoint from plain, contiguous tensors",
        )
    state = dict(loaded)
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state, source


_CHILD = re.compile(r"^(encoders|decoders|downs|ups|middle_blks)\.(\d{1,5})\.(?:(\d{1,5})\.)?")


def _children(state: dict[str, torch.Tensor]) -> dict[str, set[int]]:
    """`downs` -> {0, 1, ...}, `encoders.0` -> {0, 1, ...}: the numbered children named in the keys (one pass)."""
    found: dict[str, set[int]] = {}
    for key in state:
        m = _CHILD.match(key)
        if m:
            found.setdefault(m.group(1), set()).add(int(m.group(2)))
            if m.group(3) is not None and m.group(1) in ("encoders", "decoders"):
                found.setdefault(f"{m.group(1)}.{m.group(2)}", set()).add(int(m.group(3)))
    return found


def _count(found: dict[str, set[int]], prefix: str) -> int:
    """Consecutive children 0, 1, ... (a gap ends the count; names past it show up as unexpected)."""
    indices, n = found.get(prefix, set()), 0
    while n in indices:
        n += 1
    return n


def infer_config(state: dict[str, torch.Tensor], source: str = "the checkpoint") -> BackboneConfig:
    """The NAFNet layout these tensors are, from their names and shapes; bounds checked (nothing allocated)."""
    intro = state.get("intro.weight")
    if intro is None:
        raise InvalidInputError(
            f"{source} is not a NAFNet checkpoint (it has no 'intro.weight' conv)",
            hint="colora imports NAFNet checkpoints (BasicSR, spandrel, chaiNNer)",
        )
    if intro.dim() != 4:
        raise InvalidInputError(
            f"{source}: 'intro.weight' has {intro.dim()} dimensions, not a convolution's 4",
            hint="the checkpoint is damaged or of another architecture",
        )
    found = _children(state)
    levels, ups = _count(found, "downs"), _count(found, "ups")
    if max(levels, ups) > LIMITS["levels"]:
        raise InvalidInputError(
            f"{source} has more than {LIMITS['levels']} down- or up-sampling levels",
            hint="colora builds NAFNets of at most that many levels",
        )
    encoders = [_count(found, f"encoders.{i}") for i in range(levels)]
    decoders = [_count(found, f"decoders.{i}") for i in range(ups)]
    if levels == 0 or len(decoders) != levels:
        raise InvalidInputError(
            f"{source} is not a complete NAFNet: {levels} down- and {len(decoders)} up-sampling levels",
            hint="the checkpoint is partial or of another architecture",
        )
    try:
        config = BackboneConfig(
            width=int(intro.shape[0]),
            enc_blocks=tuple(encoders),
            middle_blocks=_count(found, "middle_blks"),
            dec_blocks=tuple(decoders),
            in_channels=int(intro.shape[1]),
            pad_mode="zeros",
        )
    except ValueError as e:
        raise InvalidInputError(f"{source} is not a NAFNet layout colora can build ({e})") from None
    config.check(source)
    return config


def nafnet_from_checkpoint(path: Path) -> tuple[NAFNet, str]:
    """A frozen colora NAFNet with the checkpoint's weights (float32), and where they were in the file.

    Every tensor is checked by name and shape against the inferred layout before the model is built."""
    name = Path(path).name
    state, source = read_checkpoint(path)
    config = infer_config(state, name)
    expected = expected_shapes(config)
    size = 4 * sum(math.prod(shape) for shape in expected.values())
    if size > MAX_WEIGHTS_BYTES:
        raise InvalidInputError(
            f"{name} describes a NAFNet of {size / 1024**3:.1f} GiB of weights; colora refuses "
            f"more than {MAX_WEIGHTS_BYTES // 1024**3} GiB"
        )
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    misshaped = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or extra or misshaped:
        example = (missing or extra or misshaped)[0]
        raise InvalidInputError(
            f"{name} does not match the NAFNet layout its tensors suggest ({describe_layout(config)}): {len(missing)} "
            f"missing, {len(extra)} unexpected, {len(misshaped)} mis-shaped, e.g. {example[:80]!r}",
            hint="the checkpoint is partial, damaged or of another architecture",
        )
    not_float = [k for k, t in state.items() if not t.is_floating_point()]
    if not_float:
        raise InvalidInputError(f"{name}: tensor {not_float[0]!r} is {state[not_float[0]].dtype}, not floating point")
    absurd = [k for k, t in state.items() if not (torch.isfinite(t).all() and t.abs().max() <= MAX_WEIGHT)]
    if absurd:
        raise InvalidInputError(
            f"{name}: tensor {absurd[0]!r} holds NaN, infinite or absurd values (beyond +-{MAX_WEIGHT:g})",
            hint="the file is damaged, or its training diverged",
        )
    model = NAFNet(config)
    model.load_state_dict({k: t.to(torch.float32) for k, t in state.items()})
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, source


def _check_archive(path: Path) -> None:
    """A torch.save zip, checked before it is unpickled: its entries stored (torch never compresses
    them; a compressed entry could inflate to gigabytes) and their sizes within bounds."""
    if not zipfile.is_zipfile(path):
        return  # the legacy format: torch.load reads its sizes from the file, which bounds them
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise InvalidInputError(f"{path.name} cannot be read as plain weights (a damaged archive: {e})") from None
    if any(e.compress_type != zipfile.ZIP_STORED for e in entries):
        raise InvalidInputError(
            f"{path.name} has compressed entries, which torch.save never writes",
            hint="save the checkpoint again with torch.save",
        )
    if sum(e.file_size for e in entries) > MAX_WEIGHTS_BYTES:
        raise InvalidInputError(
            f"{path.name} unpacks to more than {MAX_WEIGHTS_BYTES // 1024**3} GiB; refusing to load it"
        )


def describe_layout(config: BackboneConfig) -> str:
    """`width 32, encoders 2,2,4,8, middle 12, decoders 2,2,2,2`: how NAFNet papers name a size."""
    return (
        f"width {config.width}, encoders {','.join(map(str, config.enc_blocks))}, middle {config.middle_blocks}, "
        f"decoders {','.join(map(str, config.dec_blocks))}"
    )


# ---------------------------------------------------------------- writing (colora export-model)

EXPORT_SUFFIXES = (".pth", ".safetensors")


def save_checkpoint(
    path: Path, model: NAFNet, *, overwrite: bool = False, metadata: dict[str, str] | None = None
) -> None:
    """`model`'s weights in BasicSR's NAFNet layout, which spandrel, chaiNNer and BasicSR load:
    `{"params": state_dict}` saved by torch.save (tensors only) for .pth, the bare state dict for
    .safetensors (with `metadata` in its header). Written atomically; only a regular file is replaced."""
    from safetensors.torch import save_file

    from colora.core.files import atomic_write

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EXPORT_SUFFIXES:
        raise InvalidInputError(
            f"{path.name}: write a .pth or .safetensors file",
            hint="name the file NAME.pth (BasicSR, chaiNNer) or NAME.safetensors",
        )
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_write(path, overwrite=overwrite) as tmp:
        if suffix == ".pth":
            torch.save({"params": state}, tmp)
        else:
            save_file(state, str(tmp), metadata=metadata)


def nafnet_arguments(config: BackboneConfig) -> dict:
    """The official NAFNet's constructor arguments for this layout (BasicSR's option names)."""
    return {
        "img_channel": config.in_channels,
        "width": config.width,
        "middle_blk_num": config.middle_blocks,
        "enc_blk_nums": list(config.enc_blocks),
        "dec_blk_nums": list(config.dec_blocks),
    }
