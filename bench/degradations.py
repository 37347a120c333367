"""Calibrate the synthetic degradations against real paired sets, and time them.

Measures simple statistics of the real degradation (input vs target) and of colora's synthetic
one applied to the same targets, so the synthetic ranges can be checked to cover the real ones:

* rain (Rain100L): the residual input - target (grey, channel mean): fraction of pixels
  brightened by > 0.05, mean brightening, dominant streak angle (structure tensor of the
  residual), streak length and width (where the residual's autocorrelation along / across
  that angle falls to 0.5: a box streak of length L reads L).
* low light (LOL eval15): mean sRGB brightness of input and target and their ratio, the ratio
  of their means in linear light, a fit dark = k target^gamma in linear light (gamma, and the
  factor a mid-grey is scaled by), and the noise std of the dark input (Immerkaer's Laplacian
  estimator on the luma, in 8-bit levels), absolute and relative to the mean luma.
* camera noise (no real noisy pairs here): on 20 CBSD68 images, the std of what the pipeline
  adds, what Immerkaer's estimator reads of it, the PSNR, and the PSNR with the noise off
  (what demosaicing and the JPEG alone cost); the older `realistic_noise` beside it.
* haze (no real hazy pairs here): the share of local contrast kept in the top and bottom
  thirds of the frame, the mean brightening, the PSNR.

Then times every registered degradation on 96 x 96 crops, in batches of 8 and one crop per call
(what pre-training does), in ms per crop, on however many threads torch is given (pin it).
Only reads ../shared/data; prints markdown to stdout.

    taskset -c 1 env OMP_NUM_THREADS=1 python -m bench.degradations
    python -m bench.degradations --draws 200 --only rain,low_light
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.common import DATA, machine, markdown_table
from colora.core.data.degradations import DEGRADATIONS, srgb_to_linear

Tensor = torch.Tensor


def load(path: Path) -> Tensor:
    """(3, H, W) float32 in [0, 1]."""
    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def pairs(folder: Path) -> list[tuple[Path, Path]]:
    return [(p, folder / "target" / p.name) for p in sorted((folder / "input").iterdir())]


# --- rain statistics ------------------------------------------------------------------------------


def _sobel(r: Tensor) -> tuple[Tensor, Tensor]:
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
    x = F.pad(r[None, None], (1, 1, 1, 1), mode="replicate")
    return F.conv2d(x, k.view(1, 1, 3, 3))[0, 0], F.conv2d(x, k.t().reshape(1, 1, 3, 3))[0, 0]


def streak_direction(r: Tensor) -> tuple[float, float]:
    """(angle from vertical in degrees, positive = the streak's top leans right; coherence).

    The residual's gradients point across the streaks, so the streaks run perpendicular to the
    structure tensor's dominant eigenvector.
    """
    gx, gy = _sobel(r)
    jxx, jyy, jxy = (gx * gx).mean().item(), (gy * gy).mean().item(), (gx * gy).mean().item()
    phi = 0.5 * math.atan2(2 * jxy, jxx - jyy)  # gradient direction, image axes (y down)
    dx, dy = -math.sin(phi), math.cos(phi)  # along the streaks
    if dy > 0:  # point upwards
        dx, dy = -dx, -dy
    coherence = math.hypot(jxx - jyy, 2 * jxy) / max(jxx + jyy, 1e-12)
    return math.degrees(math.atan2(dx, -dy)), coherence


def autocorrelation(r: Tensor) -> Tensor:
    """Normalised autocorrelation of the zero-mean residual, centred (lag 0 at [H, W]);
    each lag divided by its overlap count, so long lags are not biased low."""
    h, w = r.shape
    z = r - r.mean()
    spec = torch.fft.rfft2(z.double(), s=(2 * h, 2 * w))
    ones = torch.fft.rfft2(torch.ones(h, w, dtype=torch.float64), s=(2 * h, 2 * w))
    ac = torch.fft.irfft2(spec.abs() ** 2, s=(2 * h, 2 * w))
    overlap = torch.fft.irfft2(ones.abs() ** 2, s=(2 * h, 2 * w)).clamp_min(1.0)
    ac = torch.fft.fftshift(ac / overlap)
    return (ac / ac[h, w]).float()


def half_lag(ac: Tensor, angle_deg: float, max_lag: float = 120.0) -> float:
    """2 x the lag at which the autocorrelation along `angle_deg` first falls to 0.5."""
    h2, w2 = ac.shape
    a = math.radians(angle_deg)
    t = torch.arange(0, max_lag, 0.25)
    x = w2 // 2 + t * math.sin(a)
    y = h2 // 2 - t * math.cos(a)
    grid = torch.stack([2 * x / (w2 - 1) - 1, 2 * y / (h2 - 1) - 1], -1).view(1, 1, -1, 2)
    prof = F.grid_sample(ac[None, None], grid, mode="bilinear", align_corners=True).flatten()
    below = (prof < 0.5).nonzero()
    if len(below) == 0:
        return 2 * max_lag
    i = int(below[0])
    frac = (prof[i - 1] - 0.5) / (prof[i - 1] - prof[i])  # interpolate the crossing
    return 2 * float(t[i - 1] + frac * (t[i] - t[i - 1]))


def rain_stats(rainy: Tensor, clean: Tensor) -> dict:
    r = (rainy - clean).mean(0)
    angle, coherence = streak_direction(r)
    ac = autocorrelation(r)
    return {
        "brightened": float((r > 0.05).float().mean()),
        "mean_gain": float(r.mean()),
        "streak_gain": float(r[r > 0.05].mean()) if (r > 0.05).any() else 0.0,
        "angle": angle,
        "coherence": coherence,
        "length": half_lag(ac, angle),
        "width": half_lag(ac, angle + 90.0, max_lag=20.0),
        "darkened": float((r < -0.05).float().mean()),
    }


# --- low-light and noise statistics -------------------------------------------------------------------


def luma(x: Tensor) -> Tensor:
    return 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]


def immerkaer_sigma(y: Tensor) -> float:
    """Immerkaer (1996): noise std from the mean |Laplacian-difference| response, in y's units."""
    k = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
    resp = F.conv2d(y[None, None].double(), k.double().view(1, 1, 3, 3))
    return float(resp.abs().mean() * math.sqrt(math.pi / 2) / 6)


def exposure_curve(dark: Tensor, target: Tensor) -> tuple[float, float]:
    """Fit dark = k * target ** gamma in linear light (grey levels, medians over 24 quantile bins
    of the target, bins whose dark median is above 4/255 in sRGB so that quantisation and the
    black clip do not bend the line); returns (gamma, the factor a mid-grey 0.18 is scaled by)."""
    d = srgb_to_linear(dark).mean(0).flatten().double()
    t = srgb_to_linear(target).mean(0).flatten().double()
    edges = torch.quantile(t[:: max(1, t.numel() // 100_000)], torch.linspace(0.02, 0.98, 25, dtype=torch.float64))
    floor = float(srgb_to_linear(torch.tensor(4 / 255)))
    xs, ys = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (t >= lo) & (t < hi)
        if sel.sum() < 100:
            continue
        md, mt = float(d[sel].median()), float(t[sel].median())
        if md > floor and mt > 0.003:
            xs.append(math.log(mt))
            ys.append(math.log(md))
    if len(xs) < 3:
        return float("nan"), float("nan")
    gamma, c = np.polyfit(xs, ys, 1)
    return float(gamma), float(math.exp(c + gamma * math.log(0.18)) / 0.18)


def light_stats(dark: Tensor, target: Tensor) -> dict:
    sigma = immerkaer_sigma(luma(dark))
    m_dark, m_tgt = float(dark.mean()), float(target.mean())
    lin_ratio = float(srgb_to_linear(dark).mean() / srgb_to_linear(target).mean())
    gamma, grey = exposure_curve(dark, target)
    return {
        "mean_in": m_dark,
        "mean_target": m_tgt,
        "ratio": m_tgt / max(m_dark, 1e-6),
        "lin_ratio": lin_ratio,
        "grey_factor": grey,
        "gamma": gamma,
        "sigma255": 255 * sigma,
        "rel_sigma": sigma / max(float(luma(dark).mean()), 1e-6),
    }


def haze_stats(hazy: Tensor, clean: Tensor) -> dict:
    """Share of the clean local contrast (|luma - 9x9 mean|) kept in the top and bottom thirds."""

    def contrast(x: Tensor) -> Tensor:
        y = luma(x)[None, None]
        return (y - F.avg_pool2d(y, 9, 1, 4, count_include_pad=False)).abs()[0, 0]

    h = clean.shape[-2]
    c_h, c_c = contrast(hazy), contrast(clean)
    top, bot = slice(0, h // 3), slice(h - h // 3, h)
    return {
        "kept_top": float(c_h[top].sum() / c_c[top].sum()),
        "kept_bottom": float(c_h[bot].sum() / c_c[bot].sum()),
        "brightening": float((hazy - clean).mean()),
    }


def noise_stats(noisy: Tensor, clean: Tensor) -> dict:
    """The noise actually added (std of noisy - clean) and what Immerkaer's estimator reads."""
    return {
        "std255": 255 * float((noisy - clean).std()),
        "immerkaer255": 255 * immerkaer_sigma(luma(noisy)),
        "psnr": psnr(noisy, clean),
    }


def psnr(a: Tensor, b: Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean().clamp_min(1e-10)))


# --- tables -------------------------------------------------------------------------------------------


def _q(values: list[float]) -> str:
    v = np.asarray(values, dtype=np.float64)
    skipped = int((~np.isfinite(v)).sum())  # e.g. a curve fit with too few usable bins
    v = v[np.isfinite(v)]
    p10, p50, p90 = np.percentile(v, [10, 50, 90])
    note = f", {skipped} n/a" if skipped else ""
    return f"{_f(p10)} / {_f(p50)} / {_f(p90)} ({_f(v.min())} .. {_f(v.max())}{note})"


def _f(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def compare(title: str, real: list[dict] | None, synth: list[dict], keys: list[str]) -> str:
    cols = (
        ["statistic"]
        + (["real p10 / median / p90 (min .. max)"] if real else [])
        + ["synthetic p10 / median / p90 (min .. max)"]
    )
    rows = [[k] + ([_q([r[k] for r in real])] if real else []) + [_q([r[k] for r in synth])] for k in keys]
    return f"\n### {title}\n\n" + markdown_table(cols, rows)


def synthetic(name: str, targets: list[Tensor], draws: int, seed: int, stats) -> list[dict]:
    """`draws` random strengths of degradation `name`, each on the next target in turn."""
    deg, gen = DEGRADATIONS[name], torch.Generator().manual_seed(seed)
    out = []
    for i in range(draws):
        clean = targets[i % len(targets)]
        out.append(stats(deg(clean, gen)[0], clean))
    return out


def fold_angle(a: float) -> float:
    """|angle from vertical|; Rain100L's portrait images were rotated by 90 deg (see SOURCES.md),
    so an angle near +-90 is measured from the horizontal instead."""
    a = abs(a)
    return 90.0 - a if a > 45 else a


def rain_section(draws: int, seed: int) -> str:
    real, targets = [], []
    for rainy, clean in pairs(DATA / "rain100l"):
        x, y = load(rainy), load(clean)
        real.append(rain_stats(x, y) | {"psnr": psnr(x, y)})
        targets.append(y)
    synth = synthetic("rain", targets, draws, seed, lambda x, y: rain_stats(x, y) | {"psnr": psnr(x, y)})
    for r in real + synth:
        r["abs_angle"] = fold_angle(r["angle"])
    keys = ["brightened", "mean_gain", "streak_gain", "abs_angle", "coherence", "length", "width", "psnr"]
    return compare(
        f"rain: Rain100L ({len(real)} pairs) vs synthetic rain on its targets ({draws} draws)", real, synth, keys
    )


def light_section(draws: int, seed: int) -> str:
    real, targets = [], []
    for dark, clean in pairs(DATA / "lol_eval15"):
        x, y = load(dark), load(clean)
        real.append(light_stats(x, y))
        targets.append(y)
    synth = synthetic("low_light", targets, draws, seed, light_stats)
    keys = ["mean_in", "mean_target", "ratio", "lin_ratio", "grey_factor", "gamma", "sigma255", "rel_sigma"]
    return compare(
        f"low light: LOL eval15 ({len(real)} pairs) vs synthetic low light on its targets ({draws} draws)",
        real,
        synth,
        keys,
    )


def cbsd68(limit: int) -> list[Tensor]:
    return [load(p) for p in sorted((DATA / "cbsd68" / "clean").iterdir())[:limit]]


def noise_section(draws: int, seed: int, images: list[Tensor]) -> str:
    """camera_noise's loss splits into noise and the pipeline itself (demosaicing, JPEG):
    `psnr_no_noise` reruns each draw with the noise switched off."""
    parts = []
    for name in ("camera_noise", "realistic_noise"):
        synth = synthetic(name, images, draws, seed, noise_stats)
        if name == "camera_noise":
            deg, gen = DEGRADATIONS[name], torch.Generator().manual_seed(seed)
            for i, row in enumerate(synth):
                clean = images[i % len(images)]
                params = deg.sample_params(gen) | {"shot": 1e-12}  # read follows shot: ~0 too
                row["psnr_no_noise"] = psnr(deg.apply(clean, params, gen), clean)
        parts.append(
            compare(
                f"{name} on CBSD68 ({draws} draws; no real pairs here, for the record)",
                None,
                synth,
                [k for k in ("std255", "immerkaer255", "psnr", "psnr_no_noise") if k in synth[0]],
            )
        )
    return "\n".join(parts)


def haze_section(draws: int, seed: int, images: list[Tensor]) -> str:
    synth = synthetic("haze", images, draws, seed, lambda x, y: haze_stats(x, y) | {"psnr": psnr(x, y)})
    return compare(
        f"haze on CBSD68 ({draws} draws; no real pairs here)",
        None,
        synth,
        ["kept_top", "kept_bottom", "brightening", "psnr"],
    )


# --- speed ------------------------------------------------------------------------------------------


def crops(n: int, size: int, seed: int) -> Tensor:
    """n random size x size crops of BSDS pool images (what pre-training degrades)."""
    files = sorted((DATA / "bsds500_pool" / "clean").iterdir())
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        img = load(files[int(torch.randint(len(files), (), generator=g))])
        top = int(torch.randint(img.shape[1] - size + 1, (), generator=g))
        left = int(torch.randint(img.shape[2] - size + 1, (), generator=g))
        out.append(img[:, top : top + size, left : left + size])
    return torch.stack(out)


def _time_per_crop(deg, batch: Tensor, repeats: int, gen: torch.Generator) -> list[float]:
    deg(batch, gen)  # warm-up (first-call allocations)
    times = []
    for _ in range(repeats):
        params = deg.sample_params(gen)
        t0 = time.perf_counter()
        deg.apply(batch, params, gen)
        times.append((time.perf_counter() - t0) * 1000 / (len(batch) if batch.dim() == 4 else 1))
    return times


def speed_section(repeats: int, seed: int) -> str:
    """ms per 96x96 crop: in batches of 8, and one (3, 96, 96) crop per call (what
    `core.training.pretrain.ProdBatches` does: every crop gets its own chain); median and
    slowest over `repeats` random strengths."""
    batch = crops(8, 96, seed)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for name, deg in DEGRADATIONS.items():
        t8 = _time_per_crop(deg, batch, repeats, gen)
        t1 = _time_per_crop(deg, batch[0], repeats, gen)
        rows.append(
            [name, f"{statistics.median(t8):.2f}", f"{max(t8):.2f}", f"{statistics.median(t1):.2f}", f"{max(t1):.2f}"]
        )
    cols = ["degradation", "batch of 8: median", "slowest", "single crop: median", "slowest"]
    return (
        f"\n### speed: ms per 96x96 crop, {repeats} random strengths each, {torch.get_num_threads()} thread(s)\n\n"
        + markdown_table(cols, rows)
    )


SECTIONS = ("rain", "low_light", "noise", "haze", "speed")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draws", type=int, default=100, help="synthetic draws per table")
    ap.add_argument("--repeats", type=int, default=20, help="timed batches per degradation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    args = ap.parse_args()
    only = set(args.only.split(","))
    print(f"# degradation calibration\n\n{machine()}; seed {args.seed}. Values: p10 / median / p90 (min .. max).")
    images = cbsd68(20) if only & {"noise", "haze"} else []
    if "rain" in only:
        print(rain_section(args.draws, args.seed), flush=True)
    if "low_light" in only:
        print(light_section(args.draws, args.seed), flush=True)
    if "noise" in only:
        print(noise_section(args.draws, args.seed, images), flush=True)
    if "haze" in only:
        print(haze_section(args.draws, args.seed, images), flush=True)
    if "speed" in only:
        print(speed_section(args.repeats, args.seed), flush=True)


if __name__ == "__main__":
    main()
