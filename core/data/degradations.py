"""Synthetic degradations for PROD pre-training.

Every degradation works on float tensors in [0, 1], shaped (3, H, W) or (N, 3, H, W); a batch
shares one parameter set but draws its own noise per image. Each one is a `Degradation` in
the `DEGRADATIONS` registry:

    deg = DEGRADATIONS["motion_blur"]
    params = deg.sample_params(gen)        # plain JSON-serialisable dict, e.g. {"length": 7.3, ...}
    out = deg.apply(img, params, gen)      # same shape and dtype, clamped to [0, 1]

All randomness comes from the explicit `torch.Generator` (never the global RNG), so a
(params, generator seed) pair reproduces an output bit for bit. Random numbers are drawn on
the generator's device and then moved to the image's, so a CPU generator works for any image.

Strength ranges (in `Degradation.params`) are moderate on purpose: the degraded image must
stay restorable, since the backbone learns to undo these. The backends are said per function:
kornia's `filter2d` applies the 2-D kernels, Pillow's codec does JPEG, the rest is plain torch.
Hand-written: the kernels themselves (kornia's motion kernel is a straight line only and its
Gaussian helpers cost more than the convolution on small patches), realistic noise, rain
(kornia's RandomRain draws from the global RNG), haze and low light (kornia has neither).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from kornia.filters import filter2d
from PIL import Image

Tensor = torch.Tensor
Params = dict[str, Any]


# --- parameter specs: one place that both samples a strength and documents its range ------------

def _rand(gen: torch.Generator) -> float:
    return float(torch.rand((), generator=gen, device=gen.device).item())


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from [low, high], or log-uniformly when `log` is set."""

    low: float
    high: float
    log: bool = False

    def sample(self, gen: torch.Generator) -> float:
        u = _rand(gen)
        if self.log:
            return math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return self.low + u * (self.high - self.low)

    def describe(self) -> dict:
        return {"log_uniform" if self.log else "uniform": [self.low, self.high]}


@dataclass(frozen=True)
class IntRange:
    """An int drawn uniformly from low..high, both included."""

    low: int
    high: int

    def sample(self, gen: torch.Generator) -> int:
        return int(torch.randint(self.low, self.high + 1, (), generator=gen, device=gen.device).item())

    def describe(self) -> dict:
        return {"int": [self.low, self.high]}


@dataclass(frozen=True)
class Choice:
    """One of a few options, uniformly."""

    options: tuple

    def sample(self, gen: torch.Generator) -> Any:
        i = int(torch.randint(len(self.options), (), generator=gen, device=gen.device).item())
        return self.options[i]

    def describe(self) -> dict:
        return {"choice": list(self.options)}


ParamSpec = Uniform | IntRange | Choice


@dataclass(frozen=True)
class Degradation:
    """A named degradation: parameter ranges plus a function `fn(x, params, gen)` on NCHW.

    `family` groups interchangeable degradations (the PROD sampler uses at most one "noise" and
    one "blur" per chain); `stochastic` says whether `apply` draws from the generator (JPEG,
    resize and the blur kernels other than motion do not).
    """

    name: str
    family: str
    params: dict[str, ParamSpec]
    fn: Callable[[Tensor, Params, torch.Generator | None], Tensor] = field(repr=False)
    stochastic: bool = True
    backend: str = "torch"

    @property
    def doc(self) -> str:
        return (self.fn.__doc__ or "").strip()

    def sample_params(self, gen: torch.Generator) -> Params:
        """A random strength for every parameter, in the documented ranges (dict order)."""
        return {key: spec.sample(gen) for key, spec in self.params.items()}

    def describe(self) -> dict:
        return {"family": self.family, "backend": self.backend,
                "params": {key: spec.describe() for key, spec in self.params.items()}}

    def apply(self, img: Tensor, params: Params, gen: torch.Generator | None = None) -> Tensor:
        """Degrade `img` ((3, H, W) or (N, 3, H, W), float in [0, 1]) with `params`."""
        if not torch.is_tensor(img) or not img.is_floating_point() or img.dim() not in (3, 4):
            raise ValueError(f"{self.name}: expected a float tensor (C, H, W) or (N, C, H, W)")
        if set(params) != set(self.params):
            raise ValueError(f"{self.name}: expected params {sorted(self.params)}, got {sorted(params)}")
        if self.stochastic and gen is None:
            raise ValueError(f"{self.name}: needs a torch.Generator")
        x = img.unsqueeze(0) if img.dim() == 3 else img
        out = self.fn(x, params, gen).clamp(0.0, 1.0).to(img.dtype)
        return out.squeeze(0) if img.dim() == 3 else out

    def __call__(self, img: Tensor, gen: torch.Generator) -> tuple[Tensor, Params]:
        """Sample a strength and apply it; returns (degraded, params)."""
        params = self.sample_params(gen)
        return self.apply(img, params, gen), params


# --- small tensor helpers ----------------------------------------------------------------------

def _randn(shape: tuple[int, ...], gen: torch.Generator, like: Tensor) -> Tensor:
    return torch.randn(shape, generator=gen, device=gen.device, dtype=like.dtype).to(like.device)


def _rand_like(shape: tuple[int, ...], gen: torch.Generator, like: Tensor) -> Tensor:
    return torch.rand(shape, generator=gen, device=gen.device, dtype=like.dtype).to(like.device)


def _border(x: Tensor, radius: int) -> str:
    # Reflect padding is the natural border for blur, but needs the pad to be smaller than the image.
    return "reflect" if radius < min(x.shape[-2:]) else "replicate"


def _gaussian_1d(sigma: float, radius: int) -> Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def _blur_separable(x: Tensor, k1: Tensor) -> Tensor:
    """Convolve every channel with the outer product k1 x k1, as two 1-D passes."""
    n, c, h, w = x.shape
    r = k1.numel() // 2
    k1 = k1.to(x.device, x.dtype)
    y = F.pad(x.reshape(n * c, 1, h, w), (r, r, r, r), mode=_border(x, r))
    y = F.conv2d(y, k1.view(1, 1, 1, -1))
    y = F.conv2d(y, k1.view(1, 1, -1, 1))
    return y.view(n, c, h, w)


def _conv2d(x: Tensor, kernel: Tensor, border: str | None = None) -> Tensor:
    """kornia `filter2d` with one (kh, kw) kernel shared by all channels."""
    border = border or _border(x, kernel.shape[-1] // 2)
    return filter2d(x, kernel[None].to(x.device, x.dtype), border_type=border)


def path_kernel(length: float, angle_deg: float, shake: float = 0.0,
                gen: torch.Generator | None = None) -> Tensor:
    """A motion kernel: a path of arc length `length` px, heading `angle_deg` (counter-clockwise
    from +x), whose heading random-walks with total standard deviation `shake` radians.

    Hand-written: points every half pixel are splatted bilinearly (anti-aliased), centred on their
    centroid so the blur does not shift the image, and normalised to sum 1. shake=0 is a line.
    Returns a (K, K) float32 tensor with K = 2 * ceil(length / 2) + 3.
    """
    n = int(math.ceil(2 * length)) + 1
    heading = torch.full((n - 1,), math.radians(angle_deg), dtype=torch.float64)
    if gen is not None:  # drawn even for shake == 0, so the generator stream does not depend on it
        turns = torch.randn(n - 1, generator=gen, device=gen.device, dtype=torch.float64).cpu()
        heading = heading + torch.cumsum(turns, 0) * (shake / math.sqrt(n - 1))
    # Image rows grow downwards, hence -sin.
    steps = (length / (n - 1)) * torch.stack([torch.cos(heading), -torch.sin(heading)], 1)
    pts = torch.cat([torch.zeros(1, 2, dtype=torch.float64), torch.cumsum(steps, 0)])
    # Every point lies within length/2 of the centroid (points are evenly spaced along the path).
    radius = int(math.ceil(length / 2)) + 1
    size = 2 * radius + 1
    xy = pts - pts.mean(0) + radius
    base = xy.floor()
    frac = xy - base
    base = base.long()
    k = torch.zeros(size * size, dtype=torch.float64)
    for dx in (0, 1):
        for dy in (0, 1):
            wgt = (frac[:, 0] if dx else 1 - frac[:, 0]) * (frac[:, 1] if dy else 1 - frac[:, 1])
            ix = (base[:, 0] + dx).clamp(0, size - 1)
            iy = (base[:, 1] + dy).clamp(0, size - 1)
            k.index_add_(0, iy * size + ix, wgt)
    return (k / k.sum()).view(size, size).float()


def disk_kernel(radius: float) -> Tensor:
    """An anti-aliased disk (pillbox) of `radius` px, normalised to sum 1. Hand-written."""
    r = int(math.ceil(radius + 0.5))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    dist = torch.sqrt(t[None, :] ** 2 + t[:, None] ** 2)
    k = (radius + 0.5 - dist).clamp(0, 1)  # one-pixel soft edge instead of a jagged step
    return (k / k.sum()).float()


# --- noise ------------------------------------------------------------------------------------

def gaussian_noise(x: Tensor, p: Params, gen: torch.Generator) -> Tensor:
    """Additive white Gaussian noise. Plain torch.

    sigma: 1/255 .. 50/255 (uniform); gray: False/True (one noise field shared by the channels).
    """
    n, c, h, w = x.shape
    noise = _randn((n, 1 if p["gray"] else c, h, w), gen, x)
    return x + p["sigma"] * noise


def poisson_noise(x: Tensor, p: Params, gen: torch.Generator) -> Tensor:
    """Shot noise: Poisson(x * peak) / peak, with `peak` photons at white. Plain torch.

    peak: 25 .. 1000 (log-uniform); std at x = 0.5 runs from about 0.14 down to 0.02.
    """
    lam = (x.clamp(0, 1) * p["peak"]).to(gen.device)
    return torch.poisson(lam, generator=gen).to(x.device, x.dtype) / p["peak"]


def realistic_noise(x: Tensor, p: Params, gen: torch.Generator) -> Tensor:
    """Camera-like noise: variance shot * x + read**2, spatially and across-channel correlated.

    Hand-written (kornia filter2d for the correlation blur). Unit noise is mixed with a field
    shared by the channels (correlation `channel_corr`), blurred by a 5x5 Gaussian of `blur`
    px and rescaled to unit variance (as demosaicing/denoising in a camera pipeline leaves it),
    then scaled per pixel by the signal-dependent std.
    shot: 3e-4 .. 1e-2 (log-uniform); read: 0.002 .. 0.03; blur: 0.3 .. 1.2 px;
    channel_corr: 0 .. 0.8.
    """
    n, c, h, w = x.shape
    rho = p["channel_corr"]
    noise = math.sqrt(1 - rho) * _randn((n, c, h, w), gen, x) + math.sqrt(rho) * _randn((n, 1, h, w), gen, x)
    k1 = _gaussian_1d(p["blur"], 2)
    k2 = torch.outer(k1, k1)
    noise = _conv2d(noise, k2 / k2.norm())  # L2-normalised kernel keeps unit variance
    std = torch.sqrt(p["shot"] * x.clamp(0, 1) + p["read"] ** 2)
    return x + std * noise


# --- blur ------------------------------------------------------------------------------------

def gaussian_blur(x: Tensor, p: Params, gen: torch.Generator | None = None) -> Tensor:
    """Isotropic Gaussian blur, kernel radius ceil(3 sigma). Hand-written separable torch conv
    (kornia's gaussian_blur2d does the same but costs twice as much on 96x96 patches).

    sigma: 0.5 .. 3.0 px (kernel up to 19x19).
    """
    return _blur_separable(x, _gaussian_1d(p["sigma"], int(math.ceil(3 * p["sigma"]))))


def defocus_blur(x: Tensor, p: Params, gen: torch.Generator | None = None) -> Tensor:
    """Out-of-focus blur with an anti-aliased disk kernel. kornia filter2d; kernel hand-written.

    radius: 1.0 .. 4.0 px (kernel up to 11x11).
    """
    return _conv2d(x, disk_kernel(p["radius"]))


def motion_blur(x: Tensor, p: Params, gen: torch.Generator) -> Tensor:
    """Camera-shake blur along a random path (see `path_kernel`). kornia filter2d; kernel hand-written.

    length: 3 .. 15 px (arc length); angle: 0 .. 180 deg; shake: 0 .. 1.0 rad (0 = straight line).
    The path's wiggles come from the generator.
    """
    return _conv2d(x, path_kernel(p["length"], p["angle"], p["shake"], gen))


# --- the rest ------------------------------------------------------------------------------------

def jpeg(x: Tensor, p: Params, gen: torch.Generator | None = None) -> Tensor:
    """A real JPEG round trip through Pillow's codec (in memory, 4:2:0 chroma), per image.

    quality: 15 .. 90 (int). Quantises to 8 bits, as the codec does. Needs 3 channels.
    """
    if x.shape[1] != 3:
        raise ValueError("jpeg: expected 3 channels")
    out = []
    for img in x:
        arr = img.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(p["quality"]))
        buf.seek(0)
        dec = np.array(Image.open(buf).convert("RGB"))
        out.append(torch.from_numpy(dec).permute(2, 0, 1))
    return torch.stack(out).to(x.device, x.dtype) / 255.0


def rain(x: Tensor, p: Params, gen: torch.Generator) -> Tensor:
    """Rain streaks: sparse random seeds smeared along a line, screen-blended onto the image.

    Hand-written (kornia filter2d for the smear; kornia's RandomRain draws from the global RNG).
    Streaks are grey, brightness 0.5..1 per seed times `intensity`; screen blend 1-(1-x)(1-r)
    brightens without clipping a bright sky to flat white.
    density: 0.002 .. 0.01 (fraction of pixels that seed a streak); length: 6 .. 20 px;
    angle: -20 .. 20 deg from vertical; intensity: 0.4 .. 0.9.
    """
    n, _, h, w = x.shape
    u = _rand_like((n, 2, h, w), gen, x)
    seeds = (u[:, :1] < p["density"]).to(x.dtype) * (0.5 + 0.5 * u[:, 1:])
    k = path_kernel(p["length"], 90.0 + p["angle"])
    streaks = _conv2d(seeds, k / k.max(), border="constant").clamp(0, 1) * p["intensity"]
    return 1 - (1 - x) * (1 - streaks)


def haze(x: Tensor, p: Params, gen: torch.Generator) -> Tensor:
    """Atmospheric scattering I = J t + A (1 - t), t = exp(-beta d). Hand-written.

    Depth proxy d in [0, 1]: a vertical gradient (top of the frame far, bottom near) blended
    with a smooth random field (4x4 Gaussian noise upsampled bicubically, min-max normalised);
    no image-derived term. beta: 0.3 .. 1.5 (so t >= 0.22); airlight A: 0.7 .. 1.0 (grey);
    vertical: 0 .. 1 (weight of the gradient against the random field).
    """
    n, _, h, w = x.shape
    field_ = F.interpolate(_randn((n, 1, 4, 4), gen, x), size=(h, w), mode="bicubic", align_corners=True)
    lo = field_.amin(dim=(2, 3), keepdim=True)
    hi = field_.amax(dim=(2, 3), keepdim=True)
    field_ = (field_ - lo) / (hi - lo).clamp_min(1e-6)
    ramp = torch.linspace(1.0, 0.0, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
    depth = p["vertical"] * ramp + (1 - p["vertical"]) * field_
    t = torch.exp(-p["beta"] * depth)
    return x * t + p["airlight"] * (1 - t)


def low_light(x: Tensor, p: Params, gen: torch.Generator) -> Tensor:
    """Under-exposure: exposure * x ** gamma plus a little Gaussian read noise. Hand-written.

    exposure: 0.2 .. 0.6; gamma: 1.2 .. 2.2 (darkens mid-tones more than highlights);
    sigma: 0.002 .. 0.015 (noise std after darkening).
    """
    dark = p["exposure"] * x.clamp(0, 1) ** p["gamma"]
    return dark + p["sigma"] * _randn(tuple(x.shape), gen, x)


def resize(x: Tensor, p: Params, gen: torch.Generator | None = None) -> Tensor:
    """Down-scale by `scale` then back to the original size (torch interpolate; loses detail).

    scale: 0.25 .. 0.75; down, up: "area" | "bilinear" | "bicubic" (no anti-aliasing, so some
    aliasing too, as in Real-ESRGAN's pipeline).
    """
    h, w = x.shape[-2:]
    small = (max(1, round(h * p["scale"])), max(1, round(w * p["scale"])))
    y = F.interpolate(x, size=small, mode=p["down"], **_align(p["down"]))
    return F.interpolate(y, size=(h, w), mode=p["up"], **_align(p["up"]))


def _align(mode: str) -> dict:
    return {"align_corners": False} if mode in ("bilinear", "bicubic") else {}


_MODES = ("area", "bilinear", "bicubic")

DEGRADATIONS: dict[str, Degradation] = {d.name: d for d in (
    Degradation("gaussian_noise", "noise", {"sigma": Uniform(1 / 255, 50 / 255), "gray": Choice((False, True))},
                gaussian_noise),
    Degradation("poisson_noise", "noise", {"peak": Uniform(25.0, 1000.0, log=True)}, poisson_noise),
    Degradation("realistic_noise", "noise",
                {"shot": Uniform(3e-4, 1e-2, log=True), "read": Uniform(0.002, 0.03),
                 "blur": Uniform(0.3, 1.2), "channel_corr": Uniform(0.0, 0.8)},
                realistic_noise, backend="torch+kornia"),
    Degradation("gaussian_blur", "blur", {"sigma": Uniform(0.5, 3.0)}, gaussian_blur, stochastic=False),
    Degradation("defocus_blur", "blur", {"radius": Uniform(1.0, 4.0)}, defocus_blur,
                stochastic=False, backend="kornia"),
    Degradation("motion_blur", "blur",
                {"length": Uniform(3.0, 15.0), "angle": Uniform(0.0, 180.0), "shake": Uniform(0.0, 1.0)},
                motion_blur, backend="kornia"),
    Degradation("jpeg", "compression", {"quality": IntRange(15, 90)}, jpeg, stochastic=False, backend="pillow"),
    Degradation("rain", "weather",
                {"density": Uniform(0.002, 0.01), "length": Uniform(6.0, 20.0),
                 "angle": Uniform(-20.0, 20.0), "intensity": Uniform(0.4, 0.9)},
                rain, backend="torch+kornia"),
    Degradation("haze", "weather",
                {"beta": Uniform(0.3, 1.5), "airlight": Uniform(0.7, 1.0), "vertical": Uniform(0.0, 1.0)}, haze),
    Degradation("low_light", "light",
                {"exposure": Uniform(0.2, 0.6), "gamma": Uniform(1.2, 2.2), "sigma": Uniform(0.002, 0.015)},
                low_light),
    Degradation("resize", "resize", {"scale": Uniform(0.25, 0.75), "down": Choice(_MODES), "up": Choice(_MODES)},
                resize, stochastic=False),
)}
