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

import re
from pathlib import Path

import torch

from core.errors import InvalidInputError, NotFoundError
from core.model.backbone import BackboneConfig, NAFNet
from core.model.weights import MAX_WEIGHTS_BYTES, expected_shapes, read_tensors

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")
WRAPPER_KEYS = ("params_ema", "params", "state_dict")  # BasicSR's keys first; EMA weights are the better ones
SAFE_LOAD_HINT = ("colora reads .pth files only with torch.load(weights_only=True), which runs no code; "
                  "where you trust the file, convert it to a plain state dict or .safetensors")


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict of a BasicSR-style checkpoint and where in the file it was ("params_ema",
    "params", "state_dict" or "bare"), with a `module.` prefix removed."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"checkpoint not found: {path}", hint="check the path")
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise InvalidInputError(f"{path.name} is not a .pth or .safetensors checkpoint",
                                hint="give a NAFNet checkpoint (.pth, .pt) or a .safetensors file")
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise InvalidInputError(f"{path.name} is larger than {MAX_WEIGHTS_BYTES // 1024**3} GiB; refusing to load it")
    if path.suffix.lower() == ".safetensors":
        loaded: object = read_tensors(path)[0]
    else:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # the restricted unpickler raises UnpicklingError, RuntimeError, ... by version
            reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
            raise InvalidInputError(f"{path.name} cannot be read as plain weights ({reason})",
                                    hint=SAFE_LOAD_HINT) from None
    source = "bare"
    if isinstance(loaded, dict):
        for key in WRAPPER_KEYS:
            if isinstance(loaded.get(key), dict):
                loaded, source = loaded[key], key
                break
    if not isinstance(loaded, dict) or not loaded:
        raise InvalidInputError(f"{path.name} holds no state dict (expected tensors by name, or under 'params')",
                                hint="give a NAFNet checkpoint saved by BasicSR or as a state dict")
    bad = [k for k, v in loaded.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise InvalidInputError(f"{path.name}: entry {str(bad[0])[:60]!r} of its state dict is not a named tensor",
                                hint="give a NAFNet checkpoint saved by BasicSR or as a state dict")
    state = dict(loaded)
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, source


def _indices(state: dict[str, torch.Tensor], prefix: str) -> int:
    """How many consecutive children 0, 1, ... have tensors under `prefix.` (a gap ends the count;
    stray names past it are reported as unexpected by the shape check)."""
    pattern = re.compile(re.escape(prefix) + r"\.(\d{1,4})\.")
    found = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    n = 0
    while n in found:
        n += 1
    return n


def infer_config(state: dict[str, torch.Tensor], source: str = "the checkpoint") -> BackboneConfig:
    """The NAFNet layout these tensors are, from their names and shapes; bounds checked (nothing allocated)."""
    intro = state.get("intro.weight")
    if intro is None or intro.dim() != 4:
        raise InvalidInputError(f"{source} is not a NAFNet checkpoint (it has no 'intro.weight' conv)",
                                hint="colora imports NAFNet checkpoints (BasicSR, spandrel, chaiNNer)")
    levels = _indices(state, "downs")
    encoders = [_indices(state, f"encoders.{i}") for i in range(levels)]
    decoders = [_indices(state, f"decoders.{i}") for i in range(_indices(state, "ups"))]
    if levels == 0 or len(decoders) != levels:
        raise InvalidInputError(f"{source} is not a complete NAFNet: {levels} down- and {len(decoders)} "
                                "up-sampling levels", hint="the checkpoint is partial or of another architecture")
    try:
        config = BackboneConfig(width=int(intro.shape[0]), enc_blocks=tuple(encoders),
                                middle_blocks=_indices(state, "middle_blks"), dec_blocks=tuple(decoders),
                                in_channels=int(intro.shape[1]), pad_mode="zeros")
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
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    misshaped = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or extra or misshaped:
        example = (missing or extra or misshaped)[0]
        raise InvalidInputError(
            f"{name} does not match the NAFNet layout its tensors suggest ({describe_layout(config)}): {len(missing)} "
            f"missing, {len(extra)} unexpected, {len(misshaped)} mis-shaped, e.g. {example[:80]!r}",
            hint="the checkpoint is partial, damaged or of another architecture")
    not_float = [k for k, t in state.items() if not t.is_floating_point()]
    if not_float:
        raise InvalidInputError(f"{name}: tensor {not_float[0]!r} is {state[not_float[0]].dtype}, not floating point")
    model = NAFNet(config)
    model.load_state_dict({k: t.to(torch.float32) for k, t in state.items()})
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, source


def describe_layout(config: BackboneConfig) -> str:
    """`width 32, encoders 2,2,4,8, middle 12, decoders 2,2,2,2`: how NAFNet papers name a size."""
    return (f"width {config.width}, encoders {','.join(map(str, config.enc_blocks))}, middle {config.middle_blocks}, "
            f"decoders {','.join(map(str, config.dec_blocks))}")
