"""Results people can look at: an evaluation report (HTML + PNG files) and a labelled comparison grid.

Plain data in, files out: this module knows nothing of the store or the CLI. The caller passes
the numbers it read back from the store, numpy images (H x W x 3 float in [0, 1]) and models;
what is written here is what the reader sees.

* A report is a folder: `index.html` (inline CSS, no script, no network) and its pictures under
  `img/`, linked by relative paths, so the folder can be moved, zipped or opened offline. It is
  built in a hidden temporary folder next to its destination and renamed into place, so a
  failure never leaves half a report. An existing non-empty folder is replaced only with
  `overwrite=True`, and only when it is an earlier colora report (its `index.html` carries
  `REPORT_MARKER` and it holds nothing else but `img/`), never an arbitrary folder.
* Crops: a window of at most `CROP` pixels a side where the degraded input differs most from
  its target (the window with the largest summed absolute error), or the centre when they agree.
* Plots use matplotlib's Agg canvas directly (no pyplot state, no display), imported only when
  a plot is drawn, so importing this module stays cheap.
* The comparison grid labels each tile with Pillow's default font on a band above the tile.
"""
from __future__ import annotations

import html
import math
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.errors import ConflictError, InvalidInputError

REPORT_FILE = "index.html"
IMG_DIR = "img"
REPORT_MARKER = '<meta name="generator" content="colora report">'
CROP = 256

# The comparison grid: tiles are shown at their own size, scaled down when the image's longest side
# is above GRID_MAX_SIDE and up (by a whole factor, nearest neighbour) when it is below GRID_MIN_SIDE.
GRID_MAX_SIDE = 1024
GRID_MIN_SIDE = 192
GRID_COLUMNS = 4
GRID_GAP = 8
GRID_BAND = 24
GRID_BACKGROUND = (255, 255, 255)
GRID_INK = (20, 20, 20)


# ---------------------------------------------------------------- images


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 float in [0, 1] -> uint8, rounded."""
    return (np.clip(np.asarray(rgb, dtype=np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)


def restore_rgb(model, rgb: np.ndarray, *, tile: int, device="cpu") -> np.ndarray:
    """Restore one H x W x 3 float image with `model` (tiled, like `colora restore`)."""
    import torch

    from core.data import to_numpy, to_tensor
    from core.restore import restore_tensor

    model.to(device).eval()
    with torch.no_grad():
        return to_numpy(restore_tensor(model, to_tensor(np.asarray(rgb, dtype=np.float32)), tile))


def error_crop(degraded: np.ndarray, target: np.ndarray, size: int = CROP) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the size x size window (clipped to the image) with the largest
    summed absolute error between `degraded` and `target`; the centred window when they agree."""
    if degraded.shape != target.shape:
        raise InvalidInputError(f"cannot compare images of shapes {degraded.shape} and {target.shape}")
    h, w = degraded.shape[:2]
    ch, cw = min(size, h), min(size, w)
    err = np.abs(np.asarray(degraded, np.float64) - np.asarray(target, np.float64))
    err = err.mean(axis=2) if err.ndim == 3 else err
    if not np.any(err > 0):
        return (h - ch) // 2, (w - cw) // 2, ch, cw
    integral = np.zeros((h + 1, w + 1))
    integral[1:, 1:] = err.cumsum(0).cumsum(1)
    sums = integral[ch:, cw:] - integral[:-ch, cw:] - integral[ch:, :-cw] + integral[:-ch, :-cw]
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(top), int(left), ch, cw


def example_views(models: dict, input_path, target_path, *, tile: int, device="cpu",
                  size: int = CROP) -> dict:
    """One validation pair as crops: {"box", "size", "images": {"input", <model names>..., "target"}}.

    The models restore the whole image (as evaluation does); the crop comes from `error_crop`."""
    from core.images import load_image

    degraded, _, _ = load_image(input_path)
    target, _, _ = load_image(target_path)
    top, left, ch, cw = error_crop(degraded, target, size)
    full = {"input": degraded}
    full.update({name: restore_rgb(m, degraded, tile=tile, device=device) for name, m in models.items()})
    full["target"] = target
    return {"box": (top, left, ch, cw), "size": (degraded.shape[1], degraded.shape[0]),
            "images": {name: img[top : top + ch, left : left + cw] for name, img in full.items()}}


def pick_examples(per_pair: Sequence[Sequence]) -> list[tuple[list[str], str]]:
    """Best, median and worst of [[stem, psnr, ssim], ...] by PSNR: [(kinds, stem)], best first;
    a pair that is several of them (fewer than 3 pairs) appears once with all its kinds."""
    ranked = sorted(per_pair, key=lambda r: (r[1] if math.isfinite(r[1]) else -math.inf, r[0]))
    if not ranked:
        return []
    picks = [("best", ranked[-1][0]), ("median", ranked[(len(ranked) - 1) // 2][0]), ("worst", ranked[0][0])]
    out: list[tuple[list[str], str]] = []
    for kind, stem in picks:
        for kinds, seen in out:
            if seen == stem:
                kinds.append(kind)
                break
        else:
            out.append(([kind], stem))
    return out


# ---------------------------------------------------------------- the report folder


def check_report_dir(dest: Path, overwrite: bool) -> None:
    """Refuse a destination the report may not take; call before any work is done."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise ConflictError(f"{dest} exists and is not a folder", hint="choose another --report folder")
    if dest.is_dir() and any(dest.iterdir()):
        if not overwrite:
            raise ConflictError(f"the report folder {dest} already exists and is not empty",
                                hint="pass --overwrite to replace the earlier report, or choose another --report folder")
        if not is_report_dir(dest):
            raise ConflictError(f"{dest} is not an earlier colora report; --overwrite only replaces those",
                                hint="choose a new or empty --report folder")


def is_report_dir(folder: Path) -> bool:
    """True for a folder written by `write_report`: index.html with the marker, plus img/ at most."""
    index = folder / REPORT_FILE
    if not index.is_file() or any(p.name not in (REPORT_FILE, IMG_DIR) for p in folder.iterdir()):
        return False
    with open(index, encoding="utf-8", errors="replace") as f:
        return REPORT_MARKER in f.read(4096)


def write_report(dest: Path, report: dict, *, overwrite: bool = False) -> Path:
    """Write the report folder atomically; returns the path of its index.html.

    `report` (plain data; numbers exactly as stored):
        task, created, command, n_val_pairs
        backbone: {name, label}
        adapter: {plan_method, trainable_params, backbone_params, size_bytes, created_at} or None
        metrics: [{subject, label, psnr, ssim, n_pairs, eval_id}]   (first row: the input)
        ranked_by: subject whose per-pair PSNR chose the examples
        examples: [{kinds, stem, box, size, images: {panel: H x W x 3 array},
                    scores: {panel: (psnr, ssim)}}]
        run: {id, status, steps_done, wall_time_s, loss, pairs} or None; loss_curve: [[step, loss]] or None
        rank_plan: {layer: rank} or None; scores: {layer: contribution} or None
    """
    dest = Path(dest).absolute()
    check_report_dir(dest, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.part"
    tmp.mkdir()
    try:
        (tmp / IMG_DIR).mkdir()
        page = _render(tmp, report)
        (tmp / REPORT_FILE).write_text(page, encoding="utf-8")
        _publish(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest / REPORT_FILE


def _publish(tmp: Path, dest: Path) -> None:
    """Rename the finished folder into place; an existing (empty, or checked earlier report) one is set aside first."""
    if not dest.exists():
        os.rename(tmp, dest)
        return
    old = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.old"
    os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _render(folder: Path, r: dict) -> str:
    e = html.escape
    parts = [_head(f"colora report: {r['task']}"), "<body>", "<header>",
             f"<h1>Task <code>{e(r['task'])}</code></h1>", _summary(r), "</header>", "<main>"]
    parts.append(_metrics_section(r))
    parts.append(_examples_section(folder, r))
    parts.append(_training_section(folder, r))
    parts.append(_ranks_section(folder, r))
    parts += ["</main>", "<footer>",
              f"<p>Written by <code>{e(r.get('command', 'colora eval'))}</code> on {e(r['created'])}. "
              "Metrics from piq on RGB in [0, 1] over the whole image (no border crop). "
              "This folder is self-contained: it needs no network.</p>",
              "</footer>", "</body>", "</html>", ""]
    return "\n".join(parts)


_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       margin: 0 auto; padding: 24px 32px 48px; max-width: 1200px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 6px; }
h2 { font-size: 19px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 18px 0 6px; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.92em; }
.meta { color: #555; margin: 0; }
.note { color: #555; font-size: 13px; }
table { border-collapse: collapse; margin: 6px 0; }
th, td { padding: 5px 12px; border-bottom: 1px solid #e4e4e4; text-align: right; }
th { background: #f5f5f7; font-weight: 600; }
th:first-child, td:first-child, .what { text-align: left; }
tr.best td { font-weight: 600; background: #eef7ee; }
.strip { display: grid; grid-template-columns: repeat(var(--n), 1fr); gap: 8px; }
figure { margin: 0; }
figure img { width: 100%; height: auto; display: block; image-rendering: pixelated; border: 1px solid #ccc; background: #eee; }
figcaption { font-size: 13px; margin-top: 3px; }
figcaption b { display: block; }
.plot { max-width: 100%; border: 1px solid #e4e4e4; }
"""


def _head(title: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"{REPORT_MARKER}\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>")


def _summary(r: dict) -> str:
    e = html.escape
    b, a = r["backbone"], r.get("adapter")
    lines = [f"Backbone <code>{e(b['name'])}</code> ({e(b['label'])}); "
             f"{r['n_val_pairs']} validation pair(s) scored."]
    if a:
        pct = 100 * a["trainable_params"] / a["backbone_params"] if a.get("backbone_params") else float("nan")
        lines.append(f"Adapter: {e(str(a['plan_method']))} rank plan, {a['trainable_params']:,} trainable parameters "
                     f"({pct:.2f}% of the backbone), {_human_bytes(a['size_bytes'])}, created {e(str(a['created_at']))}.")
    else:
        lines.append("This task has no adapter yet: only the input and the backbone are scored.")
    return "\n".join(f"<p class=\"meta\">{line}</p>" for line in lines)


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else str(value)


def _fmt_delta(value: float) -> str:
    return f"{value:+.2f}" if math.isfinite(value) else str(value)


def _metrics_section(r: dict) -> str:
    e = html.escape
    rows = r["metrics"]
    base = rows[0]["psnr"] if rows else float("nan")
    best = max((m["psnr"] for m in rows if math.isfinite(m["psnr"])), default=None)
    out = ["<section id=\"metrics\">", "<h2>Metrics</h2>",
           "<table>", "<thead>", "<tr><th>subject</th><th class=\"what\">what</th><th>PSNR (dB)</th><th>SSIM</th>"
           "<th>ΔPSNR vs input</th><th>pairs</th><th>eval row</th></tr>", "</thead>", "<tbody>"]
    for m in rows:
        cls = " class=\"best\"" if best is not None and m["psnr"] == best else ""
        out.append(
            f"<tr{cls} data-subject=\"{e(m['subject'])}\" data-eval-id=\"{m['eval_id']}\">"
            f"<td><code>{e(m['subject'])}</code></td><td class=\"what\">{e(m['label'])}</td>"
            f"<td data-value=\"{m['psnr']!r}\">{_fmt(m['psnr'], 2)}</td>"
            f"<td data-value=\"{m['ssim']!r}\">{_fmt(m['ssim'], 4)}</td>"
            f"<td>{_fmt_delta(m['psnr'] - base) if m is not rows[0] else '–'}</td>"
            f"<td>{m['n_pairs']}</td><td>#{m['eval_id']}</td></tr>")
    out += ["</tbody>", "</table>",
            "<p class=\"note\">Means over the validation pairs, as stored in the index by this evaluation "
            "(eval row ids on the right). The best PSNR is highlighted.</p>", "</section>"]
    return "\n".join(out)


def _examples_section(folder: Path, r: dict) -> str:
    e = html.escape
    examples = r.get("examples") or []
    out = ["<section id=\"examples\">", "<h2>Examples</h2>"]
    if not examples:
        out += ["<p>No validation pairs to show.</p>", "</section>"]
        return "\n".join(out)
    out.append(f"<p class=\"note\">The best, median and worst validation pairs by <code>{e(r['ranked_by'])}</code> PSNR. "
               f"Each crop (at most {CROP} px a side) is the window where the input differs most from its target; "
               "the numbers under each crop are whole-image PSNR / SSIM of that pair, as stored.</p>")
    for i, ex in enumerate(examples, 1):
        top, left, ch, cw = ex["box"]
        w, h = ex["size"]
        kinds = ", ".join(ex["kinds"])
        out.append(f"<div class=\"example\" data-kinds=\"{e(kinds)}\" data-stem=\"{e(ex['stem'])}\">")
        out.append(f"<h3>{e(kinds.capitalize())}: <code>{e(ex['stem'])}</code> "
                   f"<span class=\"note\">(crop {cw}×{ch} at x={left}, y={top} of {w}×{h})</span></h3>")
        panels = ex["images"]
        out.append(f"<div class=\"strip\" style=\"--n: {len(panels)}\">")
        for name, img in panels.items():
            rel = f"{IMG_DIR}/example{i}-{_safe(name)}.png"
            Image.fromarray(to_uint8(img)).save(folder / rel)
            score = ex.get("scores", {}).get(name)
            caption = f"{_fmt(score[0], 2)} dB / {_fmt(score[1], 4)}" if score else "reference"
            out.append(f"<figure><img src=\"{rel}\" alt=\"{e(name)} crop of {e(ex['stem'])}\" width=\"{cw}\" height=\"{ch}\">"
                       f"<figcaption><b>{e(name)}</b>{e(caption)}</figcaption></figure>")
        out += ["</div>", "</div>"]
    out.append("</section>")
    return "\n".join(out)


def _training_section(folder: Path, r: dict) -> str:
    e = html.escape
    run, curve = r.get("run"), r.get("loss_curve")
    out = ["<section id=\"training\">", "<h2>Training loss</h2>"]
    if not run:
        out += ["<p>This task has no training run.</p>", "</section>"]
        return "\n".join(out)
    wall = f"{run['wall_time_s']:.1f} s" if run.get("wall_time_s") is not None else "unknown time"
    out.append(f"<p class=\"meta\">Run #{run['id']} ({e(str(run['status']))}): {run['steps_done']} steps in {wall}"
               + (f", {e(str(run['loss']))} loss" if run.get("loss") else "")
               + (f", {run['pairs']} training pairs" if run.get("pairs") is not None else "") + ".</p>")
    if curve:
        _plot_loss(folder / IMG_DIR / "loss.png", curve, r["task"])
        out.append(f"<img class=\"plot\" src=\"{IMG_DIR}/loss.png\" alt=\"training loss per step\">")
    else:
        out.append("<p>The run recorded no loss curve (it did not finish).</p>")
    out.append("</section>")
    return "\n".join(out)


def _ranks_section(folder: Path, r: dict) -> str:
    plan, scores = r.get("rank_plan"), r.get("scores")
    out = ["<section id=\"ranks\">", "<h2>Rank plan</h2>"]
    if not plan:
        out += ["<p>This task has no adapter, so no rank plan was used.</p>", "</section>"]
        return "\n".join(out)
    total = sum(plan.values())
    note = (f"LoRA rank of each of the {len(plan)} adapted layers (sum {total})"
            + (", next to each layer's measured contribution to the task (FAIG, share of the total)." if scores else
               "; this plan has no contribution scores (uniform, or not measured for this backbone)."))
    _plot_ranks(folder / IMG_DIR / "ranks.png", plan, scores)
    out += [f"<p class=\"meta\">{html.escape(note)}</p>",
            f"<img class=\"plot\" src=\"{IMG_DIR}/ranks.png\" alt=\"rank per layer\">", "</section>"]
    return "\n".join(out)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


# ---------------------------------------------------------------- plots (matplotlib, Agg)


def _figure(width_in: float, height_in: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _plot_loss(path: Path, curve: Sequence[Sequence[float]], task: str) -> None:
    steps = [float(p[0]) for p in curve]
    loss = [float(p[1]) for p in curve]
    fig = _figure(9, 3.6)
    ax = fig.add_subplot()
    ax.plot(steps, loss, color="#1f6feb", linewidth=1.6, marker="o" if len(steps) <= 30 else None, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (mean over the logging window)")
    ax.set_title(f"{task}: training loss")
    ax.grid(alpha=0.3)
    if loss and min(loss) > 0 and max(loss) / min(loss) > 20:
        ax.set_yscale("log")
    fig.savefig(path)


def _plot_ranks(path: Path, plan: dict[str, int], scores: dict[str, float] | None) -> None:
    layers = list(plan)
    y = np.arange(len(layers))
    height = max(2.5, 0.22 * len(layers) + 1.2)
    fig = _figure(11 if scores else 8, height)
    axes = fig.subplots(1, 2, sharey=True) if scores else [fig.add_subplot()]
    axes[0].barh(y, [plan[p] for p in layers], color="#1f6feb")
    axes[0].set_xlabel("LoRA rank")
    axes[0].set_yticks(y, layers, fontsize=8, family="monospace")
    axes[0].invert_yaxis()
    axes[0].set_title("rank per layer")
    if scores:
        axes[1].barh(y, [100 * scores.get(p, 0.0) for p in layers], color="#d29922")
        axes[1].set_xlabel("contribution (% of total)")
        axes[1].set_title("measured contribution")
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
    fig.savefig(path)


# ---------------------------------------------------------------- the comparison grid


def grid_layout(width: int, height: int, n_tiles: int) -> dict:
    """Geometry of a grid of n_tiles images of width x height: tile size, columns, rows,
    the grid's size and each tile's image box (x, y) (its label band is the GRID_BAND px above)."""
    if n_tiles < 1:
        raise InvalidInputError("a grid needs at least one tile")
    longest = max(width, height)
    if longest > GRID_MAX_SIDE:
        scale = GRID_MAX_SIDE / longest
        tw, th = max(1, round(width * scale)), max(1, round(height * scale))
    elif longest < GRID_MIN_SIDE:
        k = math.ceil(GRID_MIN_SIDE / longest)
        tw, th = width * k, height * k
    else:
        tw, th = width, height
    cols = min(n_tiles, GRID_COLUMNS)
    rows = math.ceil(n_tiles / cols)
    boxes = [(GRID_GAP + (i % cols) * (tw + GRID_GAP), GRID_GAP + (i // cols) * (GRID_BAND + th + GRID_GAP) + GRID_BAND)
             for i in range(n_tiles)]
    size = (cols * tw + (cols + 1) * GRID_GAP, rows * (GRID_BAND + th) + (rows + 1) * GRID_GAP)
    return {"tile": (tw, th), "columns": cols, "rows": rows, "size": size, "boxes": boxes, "band": GRID_BAND}


def write_grid(dest: Path, tiles: Sequence[tuple[str, np.ndarray]], *, overwrite: bool = False) -> tuple[int, int]:
    """One PNG: every (label, H x W x 3 image) as a tile with its label above; returns (width, height)."""
    dest = Path(dest)
    if not tiles:
        raise InvalidInputError("nothing to put in the grid")
    h, w = tiles[0][1].shape[:2]
    if any(img.shape[:2] != (h, w) for _, img in tiles):
        raise InvalidInputError("the grid's images must all have the same size")
    if dest.exists() and not overwrite:
        raise ConflictError(f"{dest} already exists", hint="pass --overwrite to replace it, or choose another -o")
    layout = grid_layout(w, h, len(tiles))
    tw, th = layout["tile"]
    grid = Image.new("RGB", layout["size"], GRID_BACKGROUND)
    draw = ImageDraw.Draw(grid)
    font = _font(14)
    for (label, img), (x, y) in zip(tiles, layout["boxes"]):
        tile = Image.fromarray(to_uint8(img))
        if (tw, th) != (w, h):
            tile = tile.resize((tw, th), Image.Resampling.NEAREST if tw > w else Image.Resampling.LANCZOS)
        grid.paste(tile, (x, y))
        draw.text((x + 2, y - GRID_BAND // 2), _fit(draw, label, font, tw - 4), fill=GRID_INK, font=font, anchor="lm")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _save_png_atomic(grid, dest)
    return grid.size


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable with FreeType (Pillow >= 10.1)
    except TypeError:
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """`text`, shortened with an ellipsis until it fits in `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _save_png_atomic(img: Image.Image, dest: Path) -> None:
    tmp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.part"
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

