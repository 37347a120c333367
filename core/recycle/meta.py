"""The meta-adapter: K example pairs in, a mixture out, in one pass over the examples, no gradient.

The LoRA Recycle analogue (Hu et al., CVPR 2025): distilled once per zoo, offline, without the
adapters' training data. It reads the examples *through the zoo*: on a few small crops of the K
pairs (LoRA Recycle's "double efficiency" carried over: 8 crops of 48², a quarter of the pixels
a fitted mixture sees, at about the same linear fit), every adapter's response d_i = adapter_i(x) - backbone(x)
is compared with what is missing, r = target - backbone(x). Per adapter it sees the linearised
least-squares coefficient (`core.recycle.mixture.linearised_fit`), the cosine of d_i and r, their
relative size and the adapter's own relative error; per episode the backbone's error, the input's
and what the linear fit leaves. A set network (one MLP shared by the adapters, pooled over them:
any order, any zoo size) turns them into one scale of the linear coefficients, in [1/2, 2]
(the keep-input direction capped at 1), starting from 1: the linear solution. Distillation teaches
it what the linearisation misses: how far the nonlinear network needs to be pushed along the mixture.

Each distillation episode is a made-up task on surrogate images (by default dead-leaves images,
`core.recycle.surrogate`; or a folder of clean photos):

* a PROD task: a random chain of 1-2 synthetic degradations (`core.data.prod`), targets the clean crops;
* an adapter task: one zoo adapter is left out and its own outputs on PROD-degraded crops are
  the targets, so the net learns to imitate an adapter it cannot use from the ones it can;
* an inverted task (data-free distillation): inputs inverted from one adapter's weights (it restores
  them, the backbone does not), half the time with that adapter left out.

The loss is the exact mixture's error on the episode's query crops, back-propagated through the
frozen backbone into the net only. The signature-features net this replaces (format 1) closed
-6..18 % of the gap on bench/recycle.py: it never looked at what the adapters do to the examples.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from colora.core.data.prod import ProdSampler, apply_recipe
from colora.core.defaults import DISTILL_STEPS
from colora.core.errors import InvalidInputError
from colora.core.recycle.mixture import (
    KEEP_INPUT,
    Mixture,
    Responses,
    ZooAdapter,
    linearised_fit,
    mixture_forward,
    support_crops,
    with_keep_input,
)
from colora.core.recycle.surrogate import Inverted

META_FORMAT = "colora-meta-adapter"
# 3 records the support crops; 2 (the same net, read through LEGACY_SUPPORT) still loads, and a
# colora that knows only 2 refuses 3 instead of reading its examples through the wrong crops
META_FORMAT_VERSION = 3
OLDEST_META_FORMAT_VERSION = 2
ADAPTER_FEATURES = 6
EPISODE_FEATURES = 4
MIN_CROP = 16
# The support crops the zoo is run on: 8 of 48² (bench/recycle.py, session 17: the same gap closed as
# 8 of 64², 51 against 50 % distilled data-free, in 0.9 s instead of 1.3 s on one core)
SUPPORT_CROP = 48  # px
SUPPORT_CROPS = 8  # how many
SUPPORT = (SUPPORT_CROP, SUPPORT_CROPS)
LEGACY_SUPPORT = (64, 8)  # what files distilled before the support was recorded in them read


SUPPORT_LIMITS = ((MIN_CROP, 256), (1, 64))  # bounds of (crop px, count): a file's values are untrusted


def check_support(support: tuple[int, int]) -> tuple[int, int]:
    """(crop px, count) within SUPPORT_LIMITS, else ValueError (the caller says whose value it was)."""
    crop, count = (int(v) for v in support)
    (lo_crop, hi_crop), (lo_count, hi_count) = SUPPORT_LIMITS
    if not (lo_crop <= crop <= hi_crop and lo_count <= count <= hi_count):
        raise ValueError(f"support crops {crop}x{count} outside {lo_crop}-{hi_crop} px x {lo_count}-{hi_count}")
    return crop, count


MAX_LOG_SCALE = 0.7  # the predicted scale of the linear coefficients stays within [1/2, 2]


class MetaNet(nn.Module):
    """Response features -> one scale of the linear coefficients, the same for any zoo order or size.

    A learned line search: the linearised fit under-estimates how far to go along the mixture (the
    network under-responds to a sum of deltas; measured: the best scale is 1 to 1.5 and task-dependent),
    and a fitted mixture pays one exact forward per candidate scale to find it. Measured, a per-adapter
    correction (c_i = ls_i exp(u_i) + v_i) learnt the surrogate episodes' quirks: distilled data-free,
    it lost half the linear fit's gain on rain; a single bounded scale has little to overfit.
    """

    def __init__(self, hidden: int = 32, support: tuple[int, int] = SUPPORT):
        super().__init__()
        self.support = support  # (crop px, count) of the support crops it reads: fixed at distillation
        self.embed = nn.Sequential(nn.Linear(ADAPTER_FEATURES, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.head = nn.Sequential(nn.Linear(2 * hidden + EPISODE_FEATURES, hidden), nn.GELU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.head[-1].weight)  # starts as the linear least-squares solution (scale 1)
        nn.init.zeros_(self.head[-1].bias)

    def scale(self, feats: torch.Tensor, episode: torch.Tensor) -> torch.Tensor:
        h = self.embed(feats)
        pooled = torch.cat([h.mean(0), h.max(0).values, episode])
        return torch.exp(MAX_LOG_SCALE * torch.tanh(self.head(pooled)[0]))

    def forward(self, feats: torch.Tensor, episode: torch.Tensor, cap: torch.Tensor) -> torch.Tensor:
        """feats (n, ADAPTER_FEATURES), episode (EPISODE_FEATURES,), cap (n,) -> coefficients (n,) in [0, cap]."""
        return torch.minimum(feats[:, 0] * self.scale(feats, episode), cap)


def support_sample(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    gen: torch.Generator,
    support: tuple[int, int] = SUPPORT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The few small aligned crops of the example pairs the zoo is run on, `support` = (crop px,
    count) (pairs no larger than a crop give themselves, once each). Measured (BENCHMARKS.md): 8
    random crops of 64² give the linear fit of 16 crops of 128² at an eighth of the pixels, 8 of 48²
    the same again at 56 % of those; keeping the crops the backbone errs most on (from a 4x pool)
    did not pay (blur lost 6 points)."""
    crop, count = support
    if all(max(x.shape[-2:]) <= crop for x, _ in pairs):
        x, y = support_crops(pairs, crop, len(pairs), gen)
        return x[:count], y[:count]
    return support_crops(pairs, crop, max(count, len(pairs)), gen)


@torch.no_grad()
def response_features(
    responses: Responses, x: torch.Tensor, y: torch.Tensor, which: Sequence[int], keep_input: Sequence[bool]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-adapter features (n, ADAPTER_FEATURES), episode features) for the adapters in `which`."""
    y0, d = responses(x, which)
    r = (y - y0).reshape(-1).double()
    ls = linearised_fit(d, r)
    rr = r.pow(2).sum().clamp_min(1e-12)
    dd = d.pow(2).sum(0).clamp_min(1e-12)
    dr = d.T @ r
    cos = dr / (dd.sqrt() * rr.sqrt())
    single = (rr - 2 * dr + dd) / rr  # |r - d_i|^2 / |r|^2
    feats = torch.stack(
        [
            ls.clamp(0, 4),
            cos,
            (0.5 * torch.log(dd / rr)).clamp(-6, 3),
            torch.log(single.clamp(1e-3, 1e3)),
            ls * dr / rr,  # the share of the residual this adapter takes in the linear fit
            torch.tensor([1.0 if k else 0.0 for k in keep_input], dtype=torch.float64),
        ],
        1,
    ).float()
    pixels = r.numel()
    mse_backbone = float(rr) / pixels
    mse_input = float((x - y).pow(2).mean())
    left = float((r - d @ ls).pow(2).sum() / rr)
    episode = torch.tensor(
        [
            math.log10(mse_backbone + 1e-8),
            max(-5.0, min(5.0, math.log((mse_input + 1e-8) / (mse_backbone + 1e-8)))),
            min(left, 4.0),
            math.log(len(x)),
        ]
    )
    return feats, episode


def caps(zoo: Sequence[ZooAdapter]) -> torch.Tensor:
    """Upper bounds of the coefficients: the keep-input direction takes back at most all of the
    backbone's correction."""
    return torch.tensor([1.0 if z.name == KEEP_INPUT else math.inf for z in zoo])


@torch.no_grad()
def predict(
    net: MetaNet, backbone: nn.Module, zoo: Sequence[ZooAdapter], pairs, *, seed: int = 0
) -> tuple[Mixture, list[ZooAdapter]]:
    """The meta-adapter's mixture over `zoo` plus the keep-input direction, for the K example pairs:
    one pass of the backbone and each adapter over a few crops, then the net. Returns the mixture and
    the adapters it mixes, in order."""
    full = with_keep_input(backbone, zoo)
    responses = Responses(backbone.eval(), full)
    x, y = support_sample(list(pairs), torch.Generator().manual_seed(seed), net.support)
    feats, episode = response_features(responses, x, y, range(len(full)), [z.name == KEEP_INPUT for z in full])
    coef = net(feats, episode, caps(full))
    return Mixture([z.name for z in full], ["all"], coef[:, None], {"method": "meta", "k": len(pairs)}), full


# ---------------------------------------------------------------- distillation


def _crops(images: Sequence[torch.Tensor], n: int, size: int, rng: random.Random) -> torch.Tensor:
    out = []
    for _ in range(n):
        img = images[rng.randrange(len(images))]
        h, w = img.shape[-2:]
        top, left = rng.randrange(h - size + 1), rng.randrange(w - size + 1)
        out.append(img[:, top : top + size, left : left + size])
    return torch.stack(out).float()


class _Episodes:
    """Surrogate tasks: (support inputs, support targets, mask over the zoo, query inputs, query targets)."""

    def __init__(self, responses: Responses, zoo, clean, crop, query, max_k, seed, bank=None):
        # small images: crop what they have (down to MIN_CROP px)
        crop = min(crop, max(min(c.shape[-2:]) for c in clean))
        usable = [c for c in clean if min(c.shape[-2:]) >= max(crop, MIN_CROP)]
        if not usable:
            raise InvalidInputError(
                f"no clean image is at least {MIN_CROP} px on its shorter side",
                hint="give larger clean images with --clean FOLDER",
            )
        self.responses, self.zoo, self.clean = responses, list(zoo), usable
        self.crop, self.query, self.max_k = crop, query, max_k
        self.rng = random.Random(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.sampler = ProdSampler(mode="random", max_degradations=2)
        self.names = [z.name for z in zoo]
        self.bank = list(bank or [])

    @torch.no_grad()
    def draw(self):
        n = len(self.zoo)
        k = self.rng.randint(1, self.max_k)
        if self.bank and self.rng.random() < 0.5:
            return self._draw_inverted(k)
        clean = _crops(self.clean, k + self.query, self.crop, self.rng)
        recipe = self.sampler.sample_recipe(self.gen)
        degraded = apply_recipe(clean, recipe).clamp(0, 1)
        mask = torch.ones(n)
        if self.rng.random() < 0.5 and n > 1:  # imitate a left-out adapter with the others
            j = self.rng.randrange(n)
            mask[j] = 0
            target = self.responses.output(j, degraded).clamp(0, 1)
        else:
            target = clean
            if n > 1 and self.rng.random() < 0.3:
                mask[self.rng.randrange(n)] = 0
        return degraded[:k], target[:k], mask, degraded[k:], target[k:]

    def _draw_inverted(self, k: int):
        """A surrogate task inverted from adapter j (`core.recycle.surrogate`): its inputs, its targets.
        Half the time j is left out, so the net learns to imitate an adapter from the others."""
        n = len(self.zoo)
        inverted = self.bank[self.rng.randrange(len(self.bank))]
        picks = [self.rng.randrange(len(inverted.inputs)) for _ in range(k + self.query)]
        turns = [self.rng.randrange(4) for _ in picks]  # rotations: more distinct crops from a small bank
        x = torch.stack([torch.rot90(inverted.inputs[i], t, (1, 2)) for i, t in zip(picks, turns)])
        y = torch.stack([torch.rot90(inverted.targets[i], t, (1, 2)) for i, t in zip(picks, turns)])
        mask = torch.ones(n)
        if n > 1 and self.rng.random() < 0.5:
            mask[self.names.index(inverted.name)] = 0
        return x[:k], y[:k], mask, x[k:], y[k:]


def episode_loss(
    net: MetaNet, backbone: nn.Module, full: Sequence[ZooAdapter], responses: Responses, episode, gen: torch.Generator
) -> torch.Tensor:
    """log(mse of the predicted mixture / mse of the backbone alone) on the episode's query crops:
    every episode counts in dB, whatever its error scale. `full` is the zoo plus keep-input (last)."""
    xs, ys, mask, xq, yq = episode
    which = [i for i in range(len(full) - 1) if mask[i]] + [len(full) - 1]  # keep-input is never left out
    x, y = support_sample(list(zip(xs, ys)), gen, net.support)
    feats, summary = response_features(responses, x, y, which, [full[i].name == KEEP_INPUT for i in which])
    picked = net(feats, summary, caps(full)[which])
    coef = torch.zeros(len(full)).index_put((torch.tensor(which),), picked)
    pred = mixture_forward(backbone, full, Mixture([z.name for z in full], ["all"], coef[:, None]), xq)
    with torch.no_grad():
        base = F.mse_loss(responses.backbone(xq), yq).clamp_min(1e-8)
    return torch.log(F.mse_loss(pred, yq).clamp_min(1e-10) / base)


MIN_ZOO = 2  # a meta-adapter chooses among adapters: with one there is nothing to choose


def check_zoo_size(count: int) -> None:
    if count < MIN_ZOO:
        raise InvalidInputError(
            f"the zoo has {count} adapter(s); a meta-adapter needs at least {MIN_ZOO}",
            hint="train adapters for more tasks first",
        )


def distill(
    backbone: nn.Module,
    zoo: Sequence[ZooAdapter],
    clean_images: Sequence[torch.Tensor],
    *,
    steps: int = DISTILL_STEPS,
    crop: int = 64,
    query: int = 4,
    max_k: int = 8,
    lr: float = 2e-3,
    seed: int = 0,
    bank: Sequence[Inverted] | None = None,
    support: tuple[int, int] = SUPPORT,
    on_step: Callable[[int, int, float], None] | None = None,
) -> tuple[MetaNet, list[float]]:
    """Train a MetaNet for this zoo on episodes drawn from `clean_images` ((3, H, W) in [0, 1]) and,
    when given, from `bank`: surrogate pairs inverted from the adapters (half the episodes).
    `support` (crop px, count) is what the net reads the examples through, then and at prediction.
    The curve is the episodes' loss: log(mixture mse / backbone mse) on their query crops."""
    check_zoo_size(len(zoo))
    torch.manual_seed(seed)
    backbone = backbone.eval().requires_grad_(False)
    full = with_keep_input(backbone, zoo)
    responses = Responses(backbone, full)
    net = MetaNet(support=check_support(support))
    episodes = _Episodes(responses, zoo, clean_images, crop, query, max_k, seed, bank)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    curve: list[float] = []
    for step in range(steps):
        loss = episode_loss(net, backbone, full, responses, episodes.draw(), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        curve.append(loss.item())
        if on_step:
            on_step(step + 1, steps, curve[-1])
    return net.eval(), curve


def meta_metadata(
    backbone_sha256: str,
    zoo: list[dict],
    steps: int,
    curve: list[float],
    surrogate: str = "clean images",
    support: tuple[int, int] = SUPPORT,
) -> dict[str, str]:
    return {
        "support_crop": str(support[0]),
        "support_crops": str(support[1]),
        "surrogate": surrogate,
        "format": META_FORMAT,
        "format_version": str(META_FORMAT_VERSION),
        "backbone_sha256": backbone_sha256,
        "zoo": json.dumps(zoo),
        "steps": str(steps),
        "final_loss": json.dumps(sum(curve[-20:]) / max(1, len(curve[-20:]))),
    }


def load_meta(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[MetaNet, dict]:
    """A MetaNet from a safetensors file's tensors and metadata (checked)."""
    if metadata.get("format") != META_FORMAT:
        raise InvalidInputError("not a colora meta-adapter file")
    try:
        version = int(metadata.get("format_version", "0"))
    except ValueError:
        raise InvalidInputError("not a colora meta-adapter file (its format version is not a number)") from None
    if version > META_FORMAT_VERSION:
        raise InvalidInputError("the meta-adapter was written by a newer colora", hint="upgrade colora")
    if version < OLDEST_META_FORMAT_VERSION:
        raise InvalidInputError(
            "the meta-adapter was distilled by an older colora (another design)",
            hint="distill it again with `colora recycle distill`",
        )
    try:
        zoo, steps = json.loads(metadata["zoo"]), int(metadata["steps"])
        backbone_sha256 = metadata["backbone_sha256"]
        # files distilled before the support was recorded read the examples the way they were distilled
        support = (
            check_support((int(metadata["support_crop"]), int(metadata["support_crops"])))
            if version >= 3
            else LEGACY_SUPPORT
        )
    except (KeyError, ValueError):  # json's decode error is a ValueError
        raise InvalidInputError("the meta-adapter file's metadata is incomplete or malformed") from None
    net = MetaNet(support=support)
    try:
        net.load_state_dict(tensors)
    except RuntimeError as e:
        raise InvalidInputError(f"meta-adapter tensors do not fit its design ({str(e).splitlines()[0]})") from None
    return net.eval(), {"zoo": zoo, "backbone_sha256": backbone_sha256, "steps": steps, "support": support}
