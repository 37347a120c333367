"""The meta-adapter: K example pairs in, mixture coefficients out, in one forward pass.

The LoRA Recycle analogue (Hu et al., CVPR 2025): distilled once per zoo, offline, without the
adapters' training data. Each training episode is a made-up task on surrogate images (by default
dead-leaves images, `core.recycle.surrogate`; or a folder of clean photos):

* a PROD task: a random chain of 1-2 synthetic degradations (`core.data.prod`), targets the clean crops;
* an adapter task: one zoo adapter is left out and its own outputs on PROD-degraded crops are
  the targets, so the net learns to imitate an adapter it cannot use from the ones it can;
* an inverted task (data-free distillation): inputs inverted from one adapter's weights (it restores
  them, the backbone does not), half the time with that adapter masked out.

The net reads the K support pairs through their degradation and pair features
(`core.recycle.signature`), pools them over K, and predicts one coefficient per adapter (0 for adapters
masked out); the loss is the exact mixture's error on the episode's query crops, back-propagated
through the frozen backbone into the net only.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from colora.core.data.prod import ProdSampler, apply_recipe
from colora.core.defaults import DISTILL_STEPS
from colora.core.errors import InvalidInputError
from colora.core.recycle.mixture import Mixture, ZooAdapter, mixture_forward
from colora.core.recycle.signature import FEATURES, PAIR_FEATURES, image_features, pair_features
from colora.core.recycle.surrogate import Inverted

META_FORMAT = "colora-meta-adapter"
META_FORMAT_VERSION = 1
N_INPUT = len(FEATURES) + len(PAIR_FEATURES)
MIN_CROP = 16


class MetaNet(nn.Module):
    def __init__(self, n_adapters: int, hidden: int = 64):
        super().__init__()
        self.n_adapters = n_adapters
        self.register_buffer("feature_mean", torch.zeros(N_INPUT))
        self.register_buffer("feature_std", torch.ones(N_INPUT))
        self.mlp = nn.Sequential(
            nn.Linear(2 * N_INPUT + n_adapters + 1, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, n_adapters),
        )
        nn.init.zeros_(self.mlp[-1].weight)  # starts as "backbone alone"
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, pair_feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """pair_feats (K, N_INPUT), mask (n_adapters,) of 0/1 -> coefficients (n_adapters,)."""
        z = (pair_feats - self.feature_mean) / self.feature_std
        pooled = torch.cat([z.mean(0), z.max(0).values, mask, torch.log(torch.tensor([float(len(z))]))])
        return self.mlp(pooled) * mask


def features_of_pairs(backbone: nn.Module, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    return torch.stack([torch.cat([image_features(x, backbone), pair_features(x, t)]) for x, t in pairs])


@torch.no_grad()
def predict(net: MetaNet, backbone: nn.Module, names: list[str], pairs, mask: torch.Tensor | None = None) -> Mixture:
    mask = torch.ones(net.n_adapters) if mask is None else mask.float()
    coef = net(features_of_pairs(backbone, pairs), mask)
    return Mixture(list(names), ["all"], coef[:, None], {"method": "meta", "k": len(pairs)})


@torch.no_grad()
def predict_for_zoo(
    net: MetaNet, backbone: nn.Module, names: list[str], zoo: Sequence[ZooAdapter], pairs, mask: torch.Tensor
) -> tuple[Mixture, list[ZooAdapter]]:
    """The meta-adapter's mixture over `names` (its zoo, in its order), kept to the adapters at hand.

    `zoo` may lack some of `names` (the target task's own adapter, masked out): their coefficients
    are dropped. Returns the mixture and the matching adapters, in the same order.
    """
    by_name = {z.name: z for z in zoo}
    keep = torch.tensor([n in by_name for n in names])
    mixture = predict(net, backbone, names, pairs, mask)
    mixture.names, mixture.coef = [n for n in names if n in by_name], mixture.coef[keep]
    return mixture, [by_name[n] for n in mixture.names]


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
    def __init__(self, backbone, zoo, clean, crop, query, max_k, seed, bank=None):
        # small images: crop what they have (down to MIN_CROP px)
        crop = min(crop, max(min(c.shape[-2:]) for c in clean))
        usable = [c for c in clean if min(c.shape[-2:]) >= max(crop, MIN_CROP)]
        if not usable:
            raise InvalidInputError(
                f"no clean image is at least {MIN_CROP} px on its shorter side",
                hint="give larger clean images with --clean FOLDER",
            )
        self.backbone, self.zoo, self.clean = backbone, list(zoo), usable
        self.crop, self.query, self.max_k = crop, query, max_k
        self.rng = random.Random(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.sampler = ProdSampler(mode="random", max_degradations=2)
        self.names = [z.name for z in zoo]
        self.bank = list(bank or [])

    @torch.no_grad()
    def draw(self):
        """(support features (K, N_INPUT), mask, query inputs, query targets)."""
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
            one = torch.zeros(n, 1)
            one[j] = 1
            target = mixture_forward(self.backbone, self.zoo, Mixture(self.names, ["all"], one), degraded).clamp(0, 1)
        else:
            target = clean
            if n > 1 and self.rng.random() < 0.3:
                mask[self.rng.randrange(n)] = 0
        feats = features_of_pairs(self.backbone, list(zip(degraded[:k], target[:k])))
        return feats, mask, degraded[k:], target[k:]

    def _draw_inverted(self, k: int):
        """A surrogate task inverted from adapter j (`core.recycle.surrogate`): its inputs, its targets.
        Half the time j is masked out, so the net learns to imitate an adapter from the others."""
        n = len(self.zoo)
        inverted = self.bank[self.rng.randrange(len(self.bank))]
        picks = [self.rng.randrange(len(inverted.inputs)) for _ in range(k + self.query)]
        turns = [self.rng.randrange(4) for _ in picks]  # rotations: more distinct crops from a small bank
        x = torch.stack([torch.rot90(inverted.inputs[i], t, (1, 2)) for i, t in zip(picks, turns)])
        y = torch.stack([torch.rot90(inverted.targets[i], t, (1, 2)) for i, t in zip(picks, turns)])
        mask = torch.ones(n)
        if n > 1 and self.rng.random() < 0.5:
            mask[self.names.index(inverted.name)] = 0
        feats = features_of_pairs(self.backbone, list(zip(x[:k], y[:k])))
        return feats, mask, x[k:], y[k:]


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
    on_step: Callable[[int, int, float], None] | None = None,
) -> tuple[MetaNet, list[float]]:
    """Train a MetaNet for this zoo on episodes drawn from `clean_images` ((3, H, W) in [0, 1]) and,
    when given, from `bank`: surrogate pairs inverted from the adapters (half the episodes)."""
    check_zoo_size(len(zoo))
    torch.manual_seed(seed)
    backbone = backbone.eval().requires_grad_(False)
    net = MetaNet(len(zoo))
    episodes = _Episodes(backbone, zoo, clean_images, crop, query, max_k, seed, bank)
    warm = torch.cat([episodes.draw()[0] for _ in range(16)])  # feature scales for standardising
    net.feature_mean.copy_(warm.mean(0))
    net.feature_std.copy_(warm.std(0).clamp_min(1e-3))
    opt = torch.optim.AdamW(net.mlp.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    curve: list[float] = []
    names = [z.name for z in zoo]
    for step in range(steps):
        feats, mask, xq, yq = episodes.draw()
        coef = net(feats, mask)
        pred = mixture_forward(backbone, zoo, Mixture(names, ["all"], coef[:, None]), xq)
        loss = F.mse_loss(pred, yq)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        curve.append(loss.item())
        if on_step:
            on_step(step + 1, steps, curve[-1])
    return net.eval(), curve


def meta_metadata(
    backbone_sha256: str, zoo: list[dict], steps: int, curve: list[float], surrogate: str = "clean images"
) -> dict[str, str]:
    return {
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
    if int(metadata.get("format_version", "0")) > META_FORMAT_VERSION:
        raise InvalidInputError("the meta-adapter was written by a newer colora", hint="upgrade colora")
    zoo = json.loads(metadata["zoo"])
    net = MetaNet(len(zoo))
    try:
        net.load_state_dict(tensors)
    except RuntimeError as e:
        raise InvalidInputError(f"meta-adapter tensors do not fit its zoo ({str(e).splitlines()[0]})") from None
    return net.eval(), {"zoo": zoo, "backbone_sha256": metadata["backbone_sha256"], "steps": int(metadata["steps"])}
