"""A degradation embedding of an image: a few measured statistics that tell degradations apart.

Used by `restore --task auto` (which adapter's training inputs does this image look like?) and
by the meta-adapter (what kind of pairs are these?). Every feature is a plain measurement,
so a wrong pick can be explained:

    brightness     mean, 5th and 95th percentile of luminance     (low light)
    noise          Immerkaer's Laplacian noise estimate, luma and chroma   (noise)
    sharpness      fine / coarse gradient energy                   (blur)
    blockiness     8x8 grid-boundary / off-grid step size          (JPEG)
    streaks        vertical / horizontal gradient energy, bright outliers  (rain)
    saturation     mean chroma
    backbone       mean |backbone(x) - x| and its mean signed change (how much the frozen
                   backbone wants to change the image, and whether it brightens it)

Statistics are taken on a central crop (at most 256 px a side) so an embedding costs
milliseconds whatever the photo size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from colora.core.data.crops import center_crop

EMBEDDING_VERSION = 2  # 2: signatures carry their covariance
FEATURES = (
    "luma_mean",
    "luma_p05",
    "luma_p95",
    "noise_luma",
    "noise_chroma",
    "sharpness",
    "grad",
    "blockiness",
    "streaks",
    "outliers",
    "saturation",
    "backbone_change",
    "backbone_brighten",
)
PAIR_FEATURES = ("res_mean", "res_abs", "res_noise", "sharpen", "res_r", "res_g", "res_b")
CROP = 256
# bounds of a believable signature: features are logs, ratios and means of [0, 1] images (|x| < 100),
# signatures come from at most a few hundred inputs
MAX_FEATURE_VALUE = 1e6
MAX_SIGNATURE_N = 1_000_000
MIN_SIDE = 16  # blockiness needs two 8-pixel blocks, pooling a few pixels: smaller images are edge-extended
_LAPLACE = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])


def _luma(x: torch.Tensor) -> torch.Tensor:  # (3, H, W) -> (1, 1, H, W)
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None, None]


def _noise_sigma(channel: torch.Tensor) -> torch.Tensor:
    """Immerkaer (1996): sigma ~ sqrt(pi/2) / 6 * mean |I * Laplacian-difference mask|."""
    r = F.conv2d(channel, _LAPLACE.to(channel)[None, None])
    return math.sqrt(math.pi / 2) / 6 * r.abs().mean()


def _grad_energy(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gx = (y[..., :, 1:] - y[..., :, :-1]).abs()
    gy = (y[..., 1:, :] - y[..., :-1, :]).abs()
    return gx, gy


def _blockiness(y: torch.Tensor) -> torch.Tensor:
    """Mean step across 8-pixel grid lines over mean step elsewhere (about 1 for a clean image)."""
    gx, gy = _grad_energy(y)
    cols = torch.arange(gx.shape[-1], device=y.device)
    rows = torch.arange(gy.shape[-2], device=y.device)
    on = torch.cat([gx[..., (cols % 8) == 7].flatten(), gy[..., (rows % 8) == 7, :].flatten()])
    off = torch.cat([gx[..., (cols % 8) != 7].flatten(), gy[..., (rows % 8) != 7, :].flatten()])
    return (on.mean() + 1e-4) / (off.mean() + 1e-4)


@torch.no_grad()
def image_features(x: torch.Tensor, backbone: nn.Module | None = None) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> (len(FEATURES),) float32. Positive scales enter as logs."""
    x = center_crop(x.float(), CROP)
    short_h, short_w = max(0, MIN_SIDE - x.shape[-2]), max(0, MIN_SIDE - x.shape[-1])
    if short_h or short_w:  # a 1-pixel image is a valid input: describe it, do not crash
        x = F.pad(
            x[None], (short_w // 2, short_w - short_w // 2, short_h // 2, short_h - short_h // 2), mode="replicate"
        )[0]
    y = _luma(x)
    flat = y.flatten()
    p05, p95 = torch.quantile(flat[:: max(1, flat.numel() // 20000)], torch.tensor([0.05, 0.95]))
    cb, cr = x[2] - y[0, 0], x[0] - y[0, 0]
    gx, gy = _grad_energy(y)
    fine = (gx.mean() + gy.mean()) / 2
    coarse_y = F.avg_pool2d(y, 2)
    cgx, cgy = _grad_energy(coarse_y)
    coarse = (cgx.mean() + cgy.mean()) / 2
    hp = y - F.avg_pool2d(F.pad(y, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    if backbone is not None:
        change = backbone(x[None])[0].clamp(0, 1) - x
        b_abs, b_signed = change.abs().mean(), change.mean()
    else:
        b_abs, b_signed = torch.tensor(0.0), torch.tensor(0.0)
    eps = 1e-4
    feats = [
        flat.mean(),
        p05,
        p95,
        torch.log(_noise_sigma(y) + eps),
        torch.log((_noise_sigma(cb[None, None]) + _noise_sigma(cr[None, None])) / 2 + eps),
        torch.log((fine + eps) / (coarse + eps)),
        torch.log(fine + eps),
        torch.log(_blockiness(y)),
        torch.log((gx.pow(2).mean() + eps) / (gy.pow(2).mean() + eps)),
        (hp > 0.08).float().mean().sqrt(),
        torch.log((cb.abs().mean() + cr.abs().mean()) / 2 + eps),
        torch.log(b_abs + eps),
        b_signed * 10,
    ]
    return torch.stack([f.float().reshape(()) for f in feats])


@torch.no_grad()
def pair_features(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """What the (degraded -> clean) change looks like: (len(PAIR_FEATURES),) float32."""
    x, t = center_crop(x.float(), CROP), center_crop(target.float(), CROP)
    r = t - x
    eps = 1e-4
    gx, gy = _grad_energy(_luma(x))
    tx, ty = _grad_energy(_luma(t))
    feats = [
        r.mean() * 10,
        torch.log(r.abs().mean() + eps),
        torch.log(_noise_sigma(_luma(r)) + eps),
        torch.log((tx.mean() + ty.mean() + eps) / (gx.mean() + gy.mean() + eps)),
        r[0].mean() * 10,
        r[1].mean() * 10,
        r[2].mean() * 10,
    ]
    return torch.stack([f.float().reshape(()) for f in feats])


# ---------------------------------------------------------------- signatures and the nearest one


def signature(embeddings: torch.Tensor) -> dict:
    """A task's signature from the embeddings of its training inputs: (n, F) -> mean, std, covariance, n."""
    n = embeddings.shape[0]
    centred = embeddings - embeddings.mean(0)
    cov = centred.T @ centred / max(1, n - 1)
    return {
        "version": EMBEDDING_VERSION,
        "mean": embeddings.mean(0).tolist(),
        "std": embeddings.std(0, unbiased=n > 1).tolist(),
        "cov": cov.tolist(),
        "n": int(n),
    }


OWN_SHARE = 0.3  # of a task's covariance in its own metric; the rest is the zoo's pooled one


def usable(sig: object) -> bool:
    """Whether a cached signature (JSON from the store or a starter's file: untrusted) is this
    version's, well formed: mean and std of len(FEATURES) and a symmetric positive semi-definite
    covariance, all finite and of a size features can have, 1 <= n <= MAX_SIGNATURE_N."""
    f = len(FEATURES)
    try:
        if not isinstance(sig, dict) or sig.get("version") != EMBEDDING_VERSION:
            return False
        n = sig["n"]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_SIGNATURE_N:
            return False
        mean, std = torch.tensor(sig["mean"], dtype=torch.float64), torch.tensor(sig["std"], dtype=torch.float64)
        cov = torch.tensor(sig["cov"], dtype=torch.float64)
    except (KeyError, TypeError, ValueError, RuntimeError):
        return False
    if mean.shape != (f,) or std.shape != (f,) or cov.shape != (f, f):
        return False
    if not all(bool(t.isfinite().all() and t.abs().max() <= MAX_FEATURE_VALUE) for t in (mean, std, cov)):
        return False  # a huge value would swamp the pooled covariance every task is ranked by
    if (std < 0).any() or not torch.allclose(cov, cov.T, rtol=1e-5, atol=1e-8):
        return False
    return bool(torch.linalg.eigvalsh(cov).min() >= -1e-6 * max(1.0, float(cov.diagonal().max())))


def nearest(
    embedding: torch.Tensor, signatures: dict[str, dict], *, own_share: float = OWN_SHARE
) -> list[tuple[str, float]]:
    """Tasks sorted by distance to `embedding`: a Mahalanobis distance, as a root mean square per
    feature (1: as far as a typical input of the task; colora.api.restoring.FAR flags > 6).

    Each task's covariance is 30 % its own (`own_share`; other shares are bench/auto_classify.py's
    arms) and 70 % the zoo's pooled within-task covariance (32 inputs a task are few for 13 x 13
    alone, and tasks do differ in which features vary together:
    two strengths of one kind). The pooled part leans towards the per-feature spread of the metric
    before this one as the inputs thin out (all of it with 13 inputs or fewer beyond one a task):
    each feature's pooled spread, floored at 10 % of the spread between the tasks' means so that
    one very tight feature cannot dominate. Signatures without a covariance (older caches) count
    as their diagonal. bench/auto_classify.py: `--task auto`'s mean gap to the per-image oracle
    0.82 -> 0.51 dB against the per-feature distance (both from 32 inputs: 0.83 -> 0.51); on a
    rebuilt zoo 0.80 -> 0.45.
    """
    names = sorted(signatures)
    means = torch.tensor([signatures[n]["mean"] for n in names], dtype=torch.float64)
    stds = torch.tensor([signatures[n]["std"] for n in names], dtype=torch.float64)
    counts = torch.tensor([float(signatures[n].get("n", 1)) for n in names], dtype=torch.float64)
    covs = torch.stack(
        [
            torch.tensor(signatures[n]["cov"], dtype=torch.float64) if "cov" in signatures[n] else torch.diag(s.pow(2))
            for n, s in zip(names, stds)
        ]
    )
    covs = (covs + covs.transpose(1, 2)) / 2
    n_features = means.shape[1]
    within = stds.pow(2).mean(0).sqrt()
    between = means.std(0, unbiased=False) if len(names) > 1 else torch.ones_like(within)
    scale = torch.maximum(within, 0.1 * between).clamp_min(1e-3)
    weights = (counts - 1).clamp_min(0)
    dof = float(weights.sum())
    pooled = (covs * weights[:, None, None]).sum(0) / max(dof, 1.0)
    lean = min(1.0, n_features / max(dof, 1.0))
    pooled = (1 - lean) * pooled + lean * torch.diag(scale.pow(2))
    diffs = embedding.to(torch.float64)[None] - means
    d = []
    for cov, n, diff in zip(covs, counts, diffs):
        own = own_share if n > 1 else 0.0
        mixed = own * cov + (1 - own) * pooled + 1e-9 * torch.eye(n_features, dtype=torch.float64)
        factor, info = torch.linalg.cholesky_ex(mixed)
        if info:  # not positive definite (a damaged cache): the per-feature spread alone
            factor = torch.diag(scale)
        white = torch.linalg.solve_triangular(factor, diff[:, None], upper=False)
        d.append(float(white.pow(2).mean().sqrt()))
    return sorted(zip(names, d), key=lambda p: p[1])
