"""colora adapters <-> Hugging Face PEFT LoRA adapters (`adapter_config.json` + `adapter_model.safetensors`).

PEFT's LoRA for a Conv2d is colora's: lora_A copies the base conv's geometry with r outputs,
lora_B is a 1x1 conv from r, and the update is scaled by lora_alpha / r. So a colora adapter is
a PEFT adapter whose `target_modules` are its layer paths, whose per-layer CoLoRA ranks and
alphas are `rank_pattern` and `alpha_pattern`, and whose tensors are named
`base_model.model.<path>.lora_A.weight` (PEFT's names with the adapter name removed).
`peft.PeftModel.from_pretrained(NAFNet(...), folder)` loads it onto colora's backbone module.

colora's own metadata rides along in the safetensors header (key `colora`), so a round trip
loses nothing; an adapter made by PEFT itself is read from its config alone.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import torch

from colora.core.errors import ConflictError, InvalidInputError, NotFoundError
from colora.core.files import atomic_write, sha256_file
from colora.core.interop.pattern_keys import UnsupportedPattern, key_matcher
from colora.core.model.weights import (
    MAX_ALPHA,
    MAX_RANK,
    MIN_ALPHA,
    AdapterMeta,
    read_tensors,
    save_tensors_atomic,
)

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."
MAX_CONFIG_BYTES = 1024 * 1024
# PEFT options that change what the weights compute; colora's LoRA has none of them
UNSUPPORTED = {
    "use_dora": "DoRA",
    "modules_to_save": "extra trained modules",
    "layers_to_transform": "layer filters",
    "layer_replication": "layer replication",
    "lora_bias": "LoRA biases",
}
# initialisations that also change the base weights: such an adapter is wrong on the original backbone
BASE_CHANGING_INITS = ("pissa", "olora", "corda", "loftq")
MAX_LAYERS, MAX_PATTERNS = 4096, 256
MAX_PATTERN = 200  # characters in one pattern key


def write_peft(folder: Path, tensors: dict[str, torch.Tensor], meta: AdapterMeta, *, overwrite: bool = False) -> None:
    """A PEFT adapter folder for a colora adapter (each file written atomically)."""
    folder = Path(folder)
    existing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if (folder / n).exists() or (folder / n).is_symlink()]
    if folder.suffix.lower() == ".safetensors" or folder.exists() and not folder.is_dir():
        raise ConflictError(
            f"{folder} is not a folder path", hint="a PEFT adapter is a folder: give one like rain-peft/"
        )
    odd = [n for n in existing if not (folder / n).is_file()]
    if odd:  # checked before either file is written, so the folder is never left half replaced
        raise ConflictError(f"{folder / odd[0]} exists and is not a file", hint="choose another folder")
    if existing and not overwrite:
        raise ConflictError(
            f"{folder} already holds a PEFT adapter ({existing[0]})", hint="pass --overwrite to replace it"
        )
    ranks = meta.rank_plan
    alphas = {p: float(meta.alpha if meta.alpha is not None else r) for p, r in ranks.items()}
    r0 = Counter(ranks.values()).most_common(1)[0][0]
    a0 = Counter(alphas.values()).most_common(1)[0][0]
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": None,
        "revision": None,
        "r": r0,
        "lora_alpha": a0,
        "target_modules": sorted(ranks),
        # every layer named, with its exact path, so no pattern depends on PEFT's matching rules
        "rank_pattern": dict(sorted(ranks.items())),
        "alpha_pattern": dict(sorted(alphas.items())),
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "inference_mode": True,
    }
    peft_tensors = {}
    for path in ranks:
        for ab in "AB":
            peft_tensors[f"{PREFIX}{path}.lora_{ab}.weight"] = tensors[f"{path}.lora_{ab}"]
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors_atomic(
        folder / WEIGHTS_NAME, peft_tensors, {"format": "pt", "colora": json.dumps(meta.to_metadata(), sort_keys=True)}
    )
    with atomic_write(folder / CONFIG_NAME) as tmp:
        tmp.write_text(json.dumps(config, indent=2) + "\n")


def read_peft(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, int], AdapterMeta | None, str]:
    """A PEFT LoRA adapter folder as colora tensors (`<path>.lora_A` / `.lora_B`) and rank plan.

    Per-layer scalings alpha / r (or alpha / sqrt(r) with rsLoRA) are folded into B, so the
    tensors are meant with colora's default alpha = rank (scaling 1): the merged weights are the
    same. Returns also colora's own metadata when the folder was written by colora, and the
    file's sha256 (the bytes that were parsed)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotFoundError(
            f"PEFT adapter folder not found: {folder}", hint="give the folder holding adapter_config.json"
        )
    config = _read_config(folder / CONFIG_NAME)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise NotFoundError(
            f"{folder.name} has no {WEIGHTS_NAME}", hint="colora reads PEFT adapters saved as safetensors"
        )
    digest = sha256_file(weights)
    raw, header = read_tensors(weights, digest)  # parsed only if the bytes are the ones hashed
    colora_meta = None
    if "colora" in header:
        try:
            embedded = json.loads(header["colora"])
        except (ValueError, RecursionError):
            embedded = None
        if not isinstance(embedded, dict) or not all(isinstance(v, str) for v in embedded.values()):
            raise InvalidInputError(f"{weights.name} has broken colora metadata", hint="export the adapter again")
        colora_meta = AdapterMeta.from_metadata(embedded, weights.name)
    paths = _layer_paths(raw, weights.name)
    rslora = config.get("use_rslora", False)
    tensors, plan = {}, {}
    for path in paths:
        a, b = raw[f"{PREFIX}{path}.lora_A.weight"], raw[f"{PREFIX}{path}.lora_B.weight"]
        if a.dim() != 4 or b.dim() != 4 or a.shape[0] != b.shape[1] or a.shape[0] < 1:
            raise InvalidInputError(
                f"{weights.name}: the LoRA tensors of {path} are not a conv LoRA pair "
                f"(shapes {tuple(a.shape)} and {tuple(b.shape)})"
            )
        rank = int(a.shape[0])
        if rank > MAX_RANK:
            raise InvalidInputError(f"{weights.name}: {path} has rank {rank}; colora reads ranks up to {MAX_RANK}")
        expected_rank = _pattern(config, "rank_pattern", path, config.get("r"), limit=MAX_RANK)
        if expected_rank != rank:
            raise InvalidInputError(f"{weights.name}: {path} has rank {rank}, but its config says {expected_rank}")
        alpha = _pattern(config, "alpha_pattern", path, config.get("lora_alpha", 8), limit=MAX_ALPHA, low=MIN_ALPHA)
        scaling = alpha / (math.sqrt(rank) if rslora else rank)
        plan[path] = rank
        tensors[f"{path}.lora_A"] = a
        tensors[f"{path}.lora_B"] = b if scaling == 1.0 else b * scaling
    if colora_meta is not None and colora_meta.rank_plan != plan:
        colora_meta = None  # the tensors were changed after colora wrote them: trust what is there
    if colora_meta is not None:
        colora_meta.alpha = None  # the config's scalings are folded into B above
    return tensors, plan, colora_meta, digest


def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise NotFoundError(
            f"{path.parent.name} has no {CONFIG_NAME}",
            hint="give a folder saved by PEFT or `colora adapter export --format peft`",
        )
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise InvalidInputError(f"{path.name} is larger than 1 MiB; refusing to read it")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"{path.name} is not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise InvalidInputError(
            f"{path.name} is not a PEFT LoRA config (peft_type must be LORA)", hint="colora reads LoRA adapters only"
        )
    for key, what in UNSUPPORTED.items():
        if isinstance(config.get(key), str) and key.startswith("use_"):  # "false" is truthy to PEFT too
            raise InvalidInputError(f"{path.name}: {key} must be true or false, not the text {config[key][:20]!r}")
        if config.get(key):
            raise InvalidInputError(f"{path.name} uses {what} ({key}), which colora's LoRA cannot represent")
    if not isinstance(config.get("use_rslora", False), bool):
        raise InvalidInputError(
            f"{path.name}: use_rslora must be true or false, not {str(config.get('use_rslora'))[:20]!r}"
        )
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower().startswith(BASE_CHANGING_INITS):
        raise InvalidInputError(
            f"{path.name} was initialised with {init[:20]!r}, which also changes the base weights",
            hint="convert it to a plain LoRA adapter in PEFT first (see PEFT's docs on PiSSA/OLoRA)",
        )
    if config.get("bias", "none") != "none":
        raise InvalidInputError(
            f"{path.name} trains biases (bias={str(config.get('bias'))[:20]!r}), which colora's LoRA cannot represent",
            hint="export it from PEFT with bias='none'",
        )
    for key in ("rank_pattern", "alpha_pattern"):
        if not isinstance(config.get(key) or {}, dict):
            raise InvalidInputError(f"{path.name}: {key} must be a mapping of layer names to numbers")
        if len(config.get(key) or {}) > MAX_PATTERNS:
            raise InvalidInputError(f"{path.name}: {key} has more than {MAX_PATTERNS} entries")
    return config


def _layer_paths(raw: dict[str, torch.Tensor], name: str) -> list[str]:
    """Layer paths of `base_model.model.<path>.lora_{A,B}.weight` tensors, each with both halves."""
    halves: dict[str, set[str]] = {}
    for key in raw:
        if not key.startswith(PREFIX) or not key.endswith((".lora_A.weight", ".lora_B.weight")):
            raise InvalidInputError(
                f"{name}: unexpected tensor {key[:80]!r} (expected {PREFIX}<layer>.lora_A.weight / .lora_B.weight)",
                hint="colora reads PEFT LoRA adapters of convolution layers",
            )
        path, ab = key[len(PREFIX) : -len(".lora_A.weight")], key[-len("A.weight")]
        halves.setdefault(path, set()).add(ab)
    if len(halves) > MAX_LAYERS:
        raise InvalidInputError(f"{name}: LoRA tensors for more than {MAX_LAYERS} layers")
    broken = [p for p, h in halves.items() if h != {"A", "B"}]
    if broken or not halves:
        raise InvalidInputError(
            f"{name}: " + (f"layer {broken[0]!r} lacks lora_A or lora_B" if broken else "no LoRA tensors")
        )
    return sorted(halves)


def _pattern(config: dict, key: str, path: str, default, *, limit: float, low: float = 0.0):
    r"""PEFT's per-layer value, by PEFT's own rule (peft.utils.other.get_pattern_key): the first
    pattern key, in order, for which `(.*\.)?(KEY)$` matches the layer's path; else the default.
    Matched in linear time (core/interop/pattern_keys.py): a hostile key cannot stall the import."""
    value = default
    for pattern, candidate in (config.get(key) or {}).items():
        if _matcher(pattern, key)(path):
            value = candidate
            break
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value <= limit and value >= low):
        span = f"[{low:g}, {limit:g}]" if low else f"(0, {limit:g}]"
        raise InvalidInputError(f"{CONFIG_NAME}: {key} for {path} is {str(value)[:20]!r}, not a number in {span}")
    return value


@lru_cache(maxsize=2 * MAX_PATTERNS)
def _matcher(pattern, key: str):
    """A pattern key from an untrusted file, as a linear-time matcher of layer paths."""
    if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN:
        raise InvalidInputError(
            f"{CONFIG_NAME}: {key} has a pattern colora does not read ({str(pattern)[:40]!r})",
            hint=f"use layer names or regular expressions of at most {MAX_PATTERN} characters",
        )
    try:
        return key_matcher(pattern)
    except re.error as e:
        raise InvalidInputError(
            f"{CONFIG_NAME}: {key} has an invalid regular expression {pattern[:40]!r} ({e})"
        ) from None
    except UnsupportedPattern as e:
        raise InvalidInputError(
            f"{CONFIG_NAME}: {key} has a pattern colora does not read ({pattern[:40]!r}: {e})",
            hint="use layer names or plain regular expressions (no back-references, look-arounds or inline flags)",
        ) from None
