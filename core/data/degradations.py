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
stay restorable, since the backbone learns to undo these. The camera, rain and low-light ranges
are measured against real sets (Rain100L, LOL) and published noise models by
`bench/degradations.py`; each docstring says where its ranges come from. The backends are said
per function: kornia's `filter2d` applies the 2-D kernels, Pillow's codec does JPEG (also the
camera pipeline's), the rest is plain torch. Hand-written: the kernels themselves (kornia's
motion kernel is a straight line only and its Gaussian helpers cost more than the convolution
on small patches), realistic and camera-pipeline noise (kornia has no raw/Bayer model), rain
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
        return {
            "family": self.family,
            "backend": self.backend,
            "params": {key: spec.describe() for key, spec in self.params.items()},
        }

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


def path_kernel(length: float, angle_deg: float, shake: float = 0.0, gen: torch.Generator | None = None) -> Tensor:
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


def srgb_to_linear(x: Tensor) -> Tensor:
    """The sRGB transfer curve (IEC 61966-2-1), inverted: display values -> linear light."""
    x = x.clamp(0, 1)
    return torch.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: Tensor) -> Tensor:
    """Linear light -> sRGB display values (the linear toe keeps the slope finite at 0)."""
    x = x.clamp(0, 1)
    return torch.where(x <= 0.0031308, 12.92 * x, 1.055 * x.clamp_min(0.0031308) ** (1 / 2.4) - 0.055)


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


# --- camera pipeline ---------------------------------------------------------------------------------

BAYER_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
_CHANNEL = {"R": 0, "G": 1, "B": 2}


def bayer_masks(pattern: str, h: int, w: int, like: Tensor) -> Tensor:
    """(1, 3, H, W) 0/1 masks: which colour each photosite of a 2x2 `pattern` records."""
    m = torch.zeros(1, 3, h, w, device=like.device, dtype=like.dtype)
    for i, colour in enumerate(pattern):
        m[0, _CHANNEL[colour], i // 2 :: 2, i % 2 :: 2] = 1.0
    return m


# Malvar, He, Cutler, "High-quality linear interpolation for demosaicing of Bayer-patterned
# color images" (ICASSP 2004): bilinear interpolation corrected by the Laplacian of the recorded
# colour, 5x5 kernels (/8). About 5.7 dB better than plain bilinear on CBSD68, closer to what a
# camera's demosaicing leaves. Rows: G at R/B; R (B) at G with R (B) left and right; the same
# with R (B) above and below; R at B and B at R.
_MHC = (
    torch.tensor(
        [
            [[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]],
            [[0, 0, 0.5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, 0.5, 0, 0]],
            [[0, 0, -1, 0, 0], [0, -1, 4, -1, 0], [0.5, 0, 5, 0, 0.5], [0, -1, 4, -1, 0], [0, 0, -1, 0, 0]],
            [[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0], [0, 0, -1.5, 0, 0]],
        ],
        dtype=torch.float64,
    ).view(4, 1, 5, 5)
    / 8
)


def demosaic(raw: Tensor, masks: Tensor) -> Tensor:
    """(N, 1, H, W) mosaic -> (N, 3, H, W), Malvar-He-Cutler: one 5x5 conv with four kernels,
    then each pixel picks the estimate its site type needs. Reflect padding mirrors about the
    edge photosite, which keeps the Bayer parity, so borders are interpolated like the inside."""
    est = F.conv2d(F.pad(raw, (2, 2, 2, 2), mode=_border(raw, 2)), _MHC.to(raw.device, raw.dtype))
    g_at_rb, along_row, along_col, diagonal = est.unbind(1)
    r, g, b = masks[:, 0], masks[:, 1], masks[:, 2]
    g_in_red_row = g * r.amax(-1, keepdim=True)  # green sites whose left/right neighbours are red
    g_in_blue_row = g - g_in_red_row
    x = raw[:, 0]
    red = r * x + g_in_red_row * along_row + g_in_blue_row * along_col + b * diagonal
    blue = b * x + g_in_blue_row * along_row + g_in_red_row * along_col + r * diagonal
    green = g * x + (r + b) * g_at_rb
    return torch.stack([red, green, blue], 1)


def _saturation_matrix(s: float, like: Tensor) -> Tensor:
    """I + s (I - J/3): boosts colour away from grey and keeps greys grey, a stand-in for a
    camera's colour-correction matrix (whose inverse, I - s/(1+s) (I - J/3), desaturates)."""
    eye = torch.eye(3, dtype=torch.float64)
    return (eye + s * (eye - 1.0 / 3.0)).to(like.device, like.dtype)


def _mix(x: Tensor, m: Tensor) -> Tensor:
    return torch.einsum("ij,njhw->nihw", m, x)


def camera_noise(x: Tensor, p: Params, gen: torch.Generator) -> Tensor:
    """Noise as a camera makes it: raw sensor noise seen through demosaicing, colour
    processing, the tone curve and the camera's own JPEG. Hand-written torch (Brooks et al.,
    "Unprocessing Images for Learned Raw Denoising", CVPR 2019), Pillow for the JPEG.

    1. Unprocess: the sRGB curve inverted to linear light; a colour-correction matrix undone
       (`saturation` 0 .. 1: I + s (I - J/3), a grey-preserving stand-in for measured camera
       matrices); white balance and brightness gains undone (`red_gain` 1.9 .. 2.4,
       `blue_gain` 1.5 .. 1.9, `rgb_gain` 1.0 .. 1.6: Brooks's ranges, 1 / N(0.8, 0.1) for the
       last, taken to +-2 sigma).
    2. Mosaic to one colour per photosite (`pattern` RGGB / BGGR / GRBG / GBRG).
    3. Heteroscedastic raw noise, variance shot * raw + read: `shot` 1e-4 .. 1.2e-2
       (log-uniform) and log(read) = 2.18 log(shot) + 1.20 + `read_dev`, `read_dev` -0.52 ..
       0.52 (Brooks's log-log line, whose N(0, 0.26) scatter is taken to +-2 sigma); read is
       a variance, 4e-9 .. 4e-4. Moderate to high ISO of phones and DSLRs (DND-like).
    4. Demosaicing (Malvar-He-Cutler, one 5x5 conv; see `demosaic`): neighbouring pixels'
       noise correlates, and edges get the mild zipper / colour fringes of a linear demosaic.
    5. Gains and colour matrix re-applied (they amplify red/blue and chroma noise), clipped at
       white, back through the sRGB curve.
    6. In-camera JPEG, `quality` 60 .. 95 (the `jpeg` round trip).
    """
    n, _, h, w = x.shape
    wb = torch.tensor([p["red_gain"], 1.0, p["blue_gain"]], dtype=torch.float64) * p["rgb_gain"]
    wb = wb.to(x.device, x.dtype).view(1, 3, 1, 1)
    sat = p["saturation"]
    cam = _mix(srgb_to_linear(x), _saturation_matrix(-sat / (1 + sat), x)) / wb
    masks = bayer_masks(p["pattern"], h, w, x)
    raw = (cam * masks).sum(1, keepdim=True)
    read = math.exp(2.18 * math.log(p["shot"]) + 1.20 + p["read_dev"])
    noisy = raw + torch.sqrt(p["shot"] * raw + read) * _randn((n, 1, h, w), gen, x)
    rgb = _mix(demosaic(noisy, masks) * wb, _saturation_matrix(sat, x))
    return jpeg(linear_to_srgb(rgb), {"quality": p["quality"]})


# --- weather and light ---------------------------------------------------------------------------


def _round_up(n: int, step: int) -> int:
    """n rounded up to a multiple of `step`. Used to keep tensor shapes to a few sizes: the CPU
    convolution pays several ms to set up every new shape, far more than the work itself."""
    return -(-n // step) * step


def _box_1d(length: float, sigma: float) -> Tensor:
    """A box of `length` px (fractional ends weighted, peak 1) convolved with a unit-sum
    Gaussian of `sigma` px: the profile of a streak along or across itself. Zero-padded to a
    radius that is a multiple of 8 (see `_round_up`)."""
    half = length / 2
    radius = _round_up(int(math.ceil(half + 3 * sigma)) + 1, 8)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    box = (half + 0.5 - t.abs()).clamp(0, 1)  # 1 inside, a linear ramp over the last pixel
    if sigma > 0:
        g = torch.exp(-0.5 * (t / sigma) ** 2)
        box = F.conv1d(box.view(1, 1, -1), (g / g.sum()).view(1, 1, -1), padding=radius).flatten()
    return box.float()


def _streaks(
    n: int,
    h: int,
    w: int,
    density: float,
    length: float,
    width: float,
    angle: float,
    blur: float,
    gen: torch.Generator,
    like: Tensor,
) -> Tensor:
    """(N, 1, H, W) streak brightness in [0, 1]: seeds smeared into vertical bars on a canvas
    that covers the frame at any rotation (so long streaks cross the frame's edges), then
    sampled into the frame rotated by `angle` degrees (positive: the top leans right)."""
    a = math.radians(angle)
    ca, sa = math.cos(a), abs(math.sin(a))
    ch = _round_up(int(math.ceil(h * ca + w * sa + length)) + 4, 32)
    cw = _round_up(int(math.ceil(w * ca + h * sa + width)) + 4, 32)
    u = _rand_like((n, 2, ch, cw), gen, like)
    seeds = (u[:, :1] < density).to(like.dtype) * (0.5 + 0.5 * u[:, 1:])  # per-drop brightness
    along = _box_1d(length, blur).to(like.device, like.dtype)
    across = _box_1d(width, blur).to(like.device, like.dtype)
    bars = F.conv2d(seeds, along.view(1, 1, -1, 1), padding=(along.numel() // 2, 0))
    bars = F.conv2d(bars, across.view(1, 1, 1, -1), padding=(0, across.numel() // 2))
    # Frame pixel p (centred) reads canvas point R p, R rotating the streak direction
    # (sin a, -cos a) onto the canvas's vertical.
    ys = torch.arange(h, dtype=torch.float64) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    c, s_ = math.cos(a), math.sin(a)
    grid = torch.stack([(c * xx + s_ * yy) / ((cw - 1) / 2), (-s_ * xx + c * yy) / ((ch - 1) / 2)], -1)
    grid = grid.to(like.device, like.dtype).expand(n, h, w, 2)
    return F.grid_sample(bars, grid, mode="bilinear", padding_mode="zeros", align_corners=True).clamp(0, 1)


def rain(x: Tensor, p: Params, gen: torch.Generator) -> Tensor:
    """Rain streaks, one near layer and optionally a farther one, screen-blended onto the image.

    Hand-written torch (kornia's RandomRain draws from the global RNG and has no layers):
    random drops (brightness 0.5..1 each) smeared into bars of `length` x `width` px, softened
    by a Gaussian of `blur` px (the drop's own motion blur), rotated by `angle` with
    `grid_sample`, times `intensity`; the screen blend x + r (1 - x) only brightens and never
    clips a bright sky to flat white. A second, farther layer (`layers` = 2) has `far_density`
    times the drops, `far_scale` times the length, width and intensity, the same angle.
    Ranges set with bench/degradations.py so that the statistics of the rain residual cover
    Rain100L's (median: 14 % of pixels brightened by > 0.05, streaks ~30 px long, ~2.7 px
    wide, within 28 deg of vertical; input PSNR 18.6 .. 33.5 dB) and reach heavier rain
    (down to ~12 dB, Rain100H-like): density: 0.0005 .. 0.004 (drops per pixel, log-uniform);
    length: 12 .. 70 px; width: 1 .. 3 px (log-uniform); angle: -30 .. 30 deg from vertical;
    intensity: 0.2 .. 0.8; blur: 0.2 .. 0.8 px; layers: 1 .. 2; far_density: 1 .. 3;
    far_scale: 0.35 .. 0.7.
    """
    n, _, h, w = x.shape
    out = x
    near = (p["density"], p["length"], p["width"], p["intensity"])
    far_s = p["far_scale"]
    far = (p["density"] * p["far_density"], p["length"] * far_s, max(1.0, p["width"] * far_s), p["intensity"] * far_s)
    for density, length, width, intensity in (near, far)[: p["layers"]]:
        r = intensity * _streaks(n, h, w, density, length, width, p["angle"], p["blur"], gen, x)
        out = out + r * (1 - out)
    return out


def _gaussian_field(n: int, h: int, w: int, gen: torch.Generator, like: Tensor) -> Tensor:
    """A smooth random field in [0, 1]: 4x4 Gaussian noise upsampled bicubically, min-max scaled."""
    f = F.interpolate(_randn((n, 1, 4, 4), gen, like), size=(h, w), mode="bicubic", align_corners=True)
    return _normalise(f, 1e-6)


def _normalise(f: Tensor, min_range: float) -> Tensor:
    """Per-image min-max scaling to [0, 1]; a range below `min_range` is not stretched further
    (an almost flat cue stays almost flat instead of amplifying its noise)."""
    lo = f.amin(dim=(2, 3), keepdim=True)
    hi = f.amax(dim=(2, 3), keepdim=True)
    return (f - lo) / (hi - lo).clamp_min(min_range)


def haze_depth_cue(x: Tensor) -> Tensor:
    """(N, 1, H, W) in [0, 1]: how far each region looks, from the image alone.

    Haze, sky and distant scenery are bright, grey and flat, so the cue is a dark channel
    (min over colours and over ~8x8 px blocks: high only where every colour is bright, He et
    al.'s prior read backwards) minus 4 x the blocks' mean local contrast of the luma, worked
    out on the 1/8 grid, blurred there and upsampled: depth stays smooth over ~1/8 of the
    frame, so objects are not "hazed" by their own texture (and it costs ~0.4 ms on 96x96).
    """
    h, w = x.shape[-2:]
    grid = (max(1, math.ceil(h / 8)), max(1, math.ceil(w / 8)))
    dark = -F.adaptive_max_pool2d(-x.amin(1, keepdim=True), grid)
    lum = x.mean(1, keepdim=True)
    contrast = (lum - F.avg_pool2d(lum, 5, stride=1, padding=2, count_include_pad=False)).abs()
    cue = _blur_separable(dark - 4.0 * F.adaptive_avg_pool2d(contrast, grid), _gaussian_1d(1.0, 2))
    return _normalise(F.interpolate(cue, size=(h, w), mode="bilinear", align_corners=False), 0.25)


def haze(x: Tensor, p: Params, gen: torch.Generator) -> Tensor:
    """Atmospheric scattering I = J t + A (1 - t), t = exp(-beta d). Hand-written torch.

    Depth proxy d in [0, 1]: `vertical` x a ramp (top of the frame far, bottom near, the
    usual outdoor layout) plus (1 - `vertical`) x a mix of the image cue (`haze_depth_cue`:
    bright, grey, flat regions far; weight `image`) and a smooth random field (weight
    1 - `image`, for scenes the cue misreads). beta: 0.2 .. 1.8 (t at the farthest point
    0.82 .. 0.17: light to heavy haze); airlight A: 0.7 .. 1.0, tinted by `tint` -0.06 .. 0.06
    (A x (1 - tint, 1, 1 + tint): bluish haze for tint > 0, yellowish smog below);
    vertical: 0.2 .. 1.0; image: 0 .. 1.
    """
    n, _, h, w = x.shape
    ramp = torch.linspace(1.0, 0.0, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
    scene = p["image"] * haze_depth_cue(x) + (1 - p["image"]) * _gaussian_field(n, h, w, gen, x)
    depth = p["vertical"] * ramp + (1 - p["vertical"]) * scene
    t = torch.exp(-p["beta"] * depth)
    tint = torch.tensor([1 - p["tint"], 1.0, 1 + p["tint"]], dtype=torch.float64)
    airlight = (p["airlight"] * tint).clamp(max=1.0).to(x.device, x.dtype).view(1, 3, 1, 1)
    return x * t + airlight * (1 - t)


def low_light(x: Tensor, p: Params, gen: torch.Generator) -> Tensor:
    """A dark capture: less light on the sensor, its photon noise, 8-bit output. Hand-written torch.

    In linear light (the sRGB curve inverted): an illuminant colour cast (`red`, `blue` gains
    0.7 .. 1.3 relative to green), then the exposure: mid-grey 0.18 becomes
    0.18 x `exposure` and the rest follows a power `gamma` around it (gamma > 1: the camera's
    curve crushes shadows more than highlights, as LOL's pairs show); then sensor noise of
    variance shot x signal + read^2 (photon shot noise, in the Gaussian approximation, and
    read noise: both large next to the dark signal); back to sRGB and quantised to 8 bits.
    Calibrated on LOL eval15 with bench/degradations.py (there: mid-grey factor 0.003 .. 0.09,
    gamma 0.8 .. 1.7, noise ~1.2 8-bit levels on a mean of ~16, casts of 0.63 .. 1.4) and
    reaching milder light: exposure: 0.005 .. 0.25 (log-uniform); gamma: 0.9 .. 1.5;
    shot: 1e-5 .. 5e-4 (log-uniform); read: 1e-4 .. 1.5e-3 (std, log-uniform); red, blue: 0.7 .. 1.3.
    """
    n, c, h, w = x.shape
    cast = torch.tensor([p["red"], 1.0, p["blue"]], dtype=torch.float64).to(x.device, x.dtype).view(1, 3, 1, 1)
    lin = srgb_to_linear(x) * cast
    dark = 0.18 * p["exposure"] * (lin / 0.18) ** p["gamma"]
    std = torch.sqrt(p["shot"] * dark + p["read"] ** 2)
    noisy = dark + std * _randn((n, c, h, w), gen, x)
    return torch.round(linear_to_srgb(noisy) * 255) / 255


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

DEGRADATIONS: dict[str, Degradation] = {
    d.name: d
    for d in (
        Degradation(
            "gaussian_noise",
            "noise",
            {"sigma": Uniform(1 / 255, 50 / 255), "gray": Choice((False, True))},
            gaussian_noise,
        ),
        Degradation("poisson_noise", "noise", {"peak": Uniform(25.0, 1000.0, log=True)}, poisson_noise),
        Degradation(
            "realistic_noise",
            "noise",
            {
                "shot": Uniform(3e-4, 1e-2, log=True),
                "read": Uniform(0.002, 0.03),
                "blur": Uniform(0.3, 1.2),
                "channel_corr": Uniform(0.0, 0.8),
            },
            realistic_noise,
            backend="torch+kornia",
        ),
        Degradation("gaussian_blur", "blur", {"sigma": Uniform(0.5, 3.0)}, gaussian_blur, stochastic=False),
        Degradation(
            "defocus_blur", "blur", {"radius": Uniform(1.0, 4.0)}, defocus_blur, stochastic=False, backend="kornia"
        ),
        Degradation(
            "motion_blur",
            "blur",
            {"length": Uniform(3.0, 15.0), "angle": Uniform(0.0, 180.0), "shake": Uniform(0.0, 1.0)},
            motion_blur,
            backend="kornia",
        ),
        Degradation("jpeg", "compression", {"quality": IntRange(15, 90)}, jpeg, stochastic=False, backend="pillow"),
        Degradation(
            "camera_noise",
            "noise",
            {
                "shot": Uniform(1e-4, 1.2e-2, log=True),
                "read_dev": Uniform(-0.52, 0.52),
                "pattern": Choice(BAYER_PATTERNS),
                "red_gain": Uniform(1.9, 2.4),
                "blue_gain": Uniform(1.5, 1.9),
                "rgb_gain": Uniform(1.0, 1.6),
                "saturation": Uniform(0.0, 1.0),
                "quality": IntRange(60, 95),
            },
            camera_noise,
            backend="torch+pillow",
        ),
        Degradation(
            "rain",
            "weather",
            {
                "density": Uniform(0.0005, 0.004, log=True),
                "length": Uniform(12.0, 70.0),
                "width": Uniform(1.0, 3.0, log=True),
                "angle": Uniform(-30.0, 30.0),
                "intensity": Uniform(0.2, 0.8),
                "blur": Uniform(0.2, 0.8),
                "layers": IntRange(1, 2),
                "far_density": Uniform(1.0, 3.0),
                "far_scale": Uniform(0.35, 0.7),
            },
            rain,
        ),
        Degradation(
            "haze",
            "weather",
            {
                "beta": Uniform(0.2, 1.8),
                "airlight": Uniform(0.7, 1.0),
                "tint": Uniform(-0.06, 0.06),
                "vertical": Uniform(0.2, 1.0),
                "image": Uniform(0.0, 1.0),
            },
            haze,
        ),
        Degradation(
            "low_light",
            "light",
            {
                "exposure": Uniform(0.005, 0.25, log=True),
                "gamma": Uniform(0.9, 1.5),
                "shot": Uniform(1e-5, 5e-4, log=True),
                "read": Uniform(1e-4, 1.5e-3, log=True),
                "red": Uniform(0.7, 1.3),
                "blue": Uniform(0.7, 1.3),
            },
            low_light,
        ),
        Degradation(
            "resize",
            "resize",
            {"scale": Uniform(0.25, 0.75), "down": Choice(_MODES), "up": Choice(_MODES)},
            resize,
            stochastic=False,
        ),
    )
}
