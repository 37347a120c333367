"""Defaults that more than one layer states, one place each and torch-free (the command line reads
them to build `--help`): the options of `colora ...`, the keyword arguments of `colora.api` and of
the Python API, and core's functions all default to these. Training and pre-training keep theirs
in their options dataclasses (colora.api.training.TrainOptions, colora.api.backbones.PretrainOptions),
recycling's `adapt` in colora.api.recycling.AdaptOptions."""

from __future__ import annotations

SEED = 0  # every seeded choice: splits, crops, initialisations, episodes
TILE = 512  # restoring tile side in pixels (0: the whole image at once)
DEVICE = "auto"  # where to compute: a GPU if there is one (colora.core.choices.DEVICES)
ENGINE = "auto"  # what runs a restore (colora.core.choices.ENGINES)
RAY_WORKERS = 2  # restoring actors of `restore --ray`
AUTO_CANDIDATES = 1  # `restore --task auto`: the nearest signatures the backbone settles between (1: the nearest)
INIT_SIZE = "small"  # the backbone size of `init --random-init`
VAL_FRACTION = 0.2  # the share of a task's pairs held out for validation
DISTILL_STEPS = 400  # episodes of `recycle distill`
REFINE_STEPS = 20  # gradient steps of `adapt`'s per-stage refinement (bench/recycle.py)
RANK_METHOD = "faig"  # how `colora ranks` makes a plan (colora.core.choices.RANK_METHODS)
ADAPTER_FORMAT = "colora"  # `adapter export --format` (colora.core.choices.ADAPTER_FORMATS)
