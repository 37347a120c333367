"""PROD: pre-training on clean images degraded by a Random-Order chain of Degradations.

Park, Kim, Chun (CoLoRA, ECCV 2024): one backbone that has seen "everything a little" is a
better starting point for task adapters than a random or single-task one. A chain is 1..N
degradations from `core.degradations.DEGRADATIONS`, each with a random strength:

    sampler = ProdSampler(mode="random", max_degradations=3)
    degraded, recipe = sampler(clean, gen)     # recipe: [{"name", "params", "seed"}, ...]
    again = apply_recipe(clean, recipe)        # bit-identical replay, e.g. from a JSON log

Modes:
  "random"  k ~ uniform 1..N, a random subset of k names, applied in random order (the paper's).
  "fixed"   the same random subset and strengths, applied in `CANONICAL_ORDER` (ablation).
  "single"  exactly one random degradation (a "one degradation at a time" baseline).

At most one degradation per family in `ONE_PER_FAMILY` goes into a chain: two noises or two
blurs stacked read as one stronger noise or blur, so they would waste a slot of the chain and
push the image towards garbage. When fewer slots exist than the drawn k (a narrow `names`),
the chain is shorter.

`weights` tilts the mix towards what users restore most (e.g. {"low_light": 3, "gaussian_noise": 2}):
names are picked in a weighted random order (unlisted names weigh 1), so a weight-3 name is three
times as likely to be first in line. Uniform weights draw exactly what the unweighted sampler draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from colora.core.choices import PROD_MODES
from colora.core.data.degradations import DEGRADATIONS

Tensor = torch.Tensor

MODES = PROD_MODES
ONE_PER_FAMILY = frozenset({"noise", "blur"})

# The classic real-world capture pipeline: the scene's atmosphere (haze, then rain falling in
# front of it), the optics (defocus, shake, residual blur), the sensor (sampling, exposure,
# noise) and last the codec.
CANONICAL_ORDER: tuple[str, ...] = (
    "haze",
    "rain",
    "defocus_blur",
    "motion_blur",
    "gaussian_blur",
    "resize",
    "low_light",
    "poisson_noise",
    "realistic_noise",
    "camera_noise",
    "gaussian_noise",
    "jpeg",
)

_SEED_LIMIT = 2**62  # step seeds stay well inside int64 and JSON's safe range for most readers


def apply_recipe(img: Tensor, recipe: list[dict], gen: torch.Generator | None = None) -> Tensor:
    """Apply a recipe's steps in order.

    A step's "seed" drives a fresh CPU generator for that step, so replay is exact on any
    device and needs no `gen`; steps without a seed draw from `gen` (ValueError if none).
    """
    out = img
    for step in recipe:
        deg = DEGRADATIONS.get(step.get("name"))
        if deg is None:
            raise ValueError(f"unknown degradation {step.get('name')!r}")
        if "seed" in step:
            step_gen = torch.Generator().manual_seed(int(step["seed"]))
        elif gen is not None:
            step_gen = gen
        else:
            raise ValueError(f"step {step['name']!r} has no seed and no generator was given")
        out = deg.apply(out, step["params"], step_gen)
    return out


@dataclass
class ProdSampler:
    """Draws PROD chains. `names` defaults to every registered degradation."""

    mode: str = "random"
    names: tuple[str, ...] | None = None
    max_degradations: int = 3
    # the share of empty chains (clean in, clean out): a backbone that has also seen images that need
    # nothing learns to leave a mild input almost as it is instead of over-processing it
    clean_fraction: float = 0.0
    # relative pick weights by name (unlisted: 1); None or all equal is the paper's uniform mix
    weights: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        names = tuple(DEGRADATIONS) if self.names is None else tuple(self.names)
        unknown = [n for n in names if n not in DEGRADATIONS]
        if unknown or not names or len(set(names)) != len(names):
            raise ValueError(f"names must be distinct registered degradations; bad: {unknown or names}")
        if self.mode == "fixed" and any(n not in CANONICAL_ORDER for n in names):
            raise ValueError("every name needs a place in CANONICAL_ORDER for mode 'fixed'")
        if int(self.max_degradations) < 1:
            raise ValueError("max_degradations must be at least 1")
        if not 0.0 <= float(self.clean_fraction) < 1.0:
            raise ValueError(f"clean_fraction must be in [0, 1), got {self.clean_fraction}")
        self.clean_fraction = float(self.clean_fraction)
        weights = dict(self.weights or {})
        stray = sorted(set(weights) - set(names))
        if stray:
            raise ValueError(f"weights name degradations outside the mix: {stray}")
        if any(not (0 < float(w) < float("inf")) for w in weights.values()):
            raise ValueError(f"weights must be positive and finite, got {weights}")
        # stored only when they tilt the mix, so an all-equal dict describes and draws as uniform
        uniform = len({float(weights.get(n, 1.0)) for n in names}) == 1
        self.weights = None if uniform else {n: float(weights.get(n, 1.0)) for n in names}
        self.names = names
        self.max_degradations = int(self.max_degradations)

    def sample_recipe(self, gen: torch.Generator) -> list[dict]:
        """Draw names, order, strengths and per-step seeds; JSON-serialisable."""
        # drawn only when used: a sampler without clean samples draws exactly what it always drew
        if self.clean_fraction > 0 and float(torch.rand((), generator=gen, device=gen.device)) < self.clean_fraction:
            return []
        n_max = 1 if self.mode == "single" else self.max_degradations
        k = int(torch.randint(1, n_max + 1, (), generator=gen, device=gen.device).item())
        perm = self._pick_order(gen)
        chosen: list[str] = []
        families: set[str] = set()
        for i in perm:  # walk a random permutation: the pick order is already a random order
            if len(chosen) == k:
                break
            name = self.names[i]
            family = DEGRADATIONS[name].family
            if family in ONE_PER_FAMILY and family in families:
                continue
            chosen.append(name)
            families.add(family)
        if self.mode == "fixed":
            chosen.sort(key=CANONICAL_ORDER.index)
        recipe = []
        for name in chosen:
            params = DEGRADATIONS[name].sample_params(gen)
            seed = int(torch.randint(_SEED_LIMIT, (), generator=gen, device=gen.device).item())
            recipe.append({"name": name, "params": params, "seed": seed})
        return recipe

    def _pick_order(self, gen: torch.Generator) -> list[int]:
        """A random order of all names: uniform, or weighted sampling without replacement."""
        if self.weights is None:
            return torch.randperm(len(self.names), generator=gen, device=gen.device).tolist()
        w = torch.tensor([self.weights[n] for n in self.names], dtype=torch.float64, device=gen.device)
        return torch.multinomial(w, len(self.names), replacement=False, generator=gen).tolist()

    def __call__(self, img: Tensor, gen: torch.Generator) -> tuple[Tensor, list[dict]]:
        """Degrade `img` ((3, H, W) or (N, 3, H, W) in [0, 1]; a batch shares one recipe)."""
        recipe = self.sample_recipe(gen)
        return apply_recipe(img, recipe), recipe

    def describe(self) -> dict:
        """The settings and parameter ranges, for a model card."""
        return {
            "mode": self.mode,
            "names": list(self.names),
            "max_degradations": 1 if self.mode == "single" else self.max_degradations,
            **({"clean_fraction": self.clean_fraction} if self.clean_fraction else {}),
            **({"weights": dict(self.weights)} if self.weights else {}),
            "one_per_family": sorted(ONE_PER_FAMILY),
            "order": [n for n in CANONICAL_ORDER if n in self.names] if self.mode == "fixed" else "random",
            "degradations": {n: DEGRADATIONS[n].describe() for n in self.names},
        }
