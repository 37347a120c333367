"""Every fixed list of choices, in one torch-free place: colora.core validates against these, the
command line offers them (`--help`, shell completion) and the store may read them."""

from __future__ import annotations

LOSSES = ("l1", "psnr")  # the training loss (core.training.loop)
RANK_METHODS = ("faig", "uniform")  # how a rank plan is made (core.training.ranks)
PROD_MODES = ("random", "fixed", "single")  # PROD degradation chains (core.data.prod)
DEVICES = ("auto", "cpu", "cuda")  # where tensors live (core.device)
BACKBONE_SIZES = ("tiny", "small", "medium", "base")  # core.model.backbone.PRESETS, in size order
ADAPTER_FORMATS = ("colora", "peft")  # `colora adapter export --format`
ENGINES = ("auto", "torch", "onnxruntime", "openvino")  # what runs a restore

# Bounds of the size-like options, stated in their --help and checked where they are used.
MAX_BATCH_SIZE = 256  # crops per training step (per process): more does not fit in memory usefully
MAX_PATCH_SIZE = 1024  # side of a training crop
MAX_RANK = 256  # a uniform LoRA rank; each layer's rank is also capped at its own full rank
MIN_TILE = 16  # restoring tiles (0: the whole image at once); smaller ones are one forward per few pixels
