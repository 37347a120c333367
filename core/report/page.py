"""The evaluation report: a folder with `index.html` (inline CSS, no script, no network) and its
pictures under `img/`, linked by relative paths, so it can be moved, zipped or opened offline.

Plain data in, files out: this module knows nothing of the store or the CLI. The caller passes
the numbers as stored and the example crops (numpy H x W x 3 float in [0, 1]); what is written
here is what the reader sees.

The report is built in a hidden temporary folder next to its destination and renamed into
place, so a failure never leaves half a report. An existing non-empty folder is replaced only
with `overwrite=True`, and only when it is an earlier colora report (its `index.html` carries
`REPORT_MARKER` and it holds nothing else but `img/`), never an arbitrary folder.
"""

from __future__ import annotations

import html
import math
import os
import secrets
import shutil
from pathlib import Path

from PIL import Image

from colora.core.errors import ConflictError
from colora.core.report.images import CROP, to_uint8
from colora.core.report.plots import plot_loss, plot_ranks
from colora.core.text import human_bytes

REPORT_FILE = "index.html"
IMG_DIR = "img"
REPORT_MARKER = '<meta name="generator" content="colora report">'


def check_report_dir(dest: Path, overwrite: bool) -> None:
    """Refuse a destination the report may not take; call before any work is done."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise ConflictError(f"{dest} exists and is not a folder", hint="choose another --report folder")
    if dest.is_dir() and any(dest.iterdir()):
        if not overwrite:
            raise ConflictError(
                f"the report folder {dest} already exists and is not empty",
                hint="pass --overwrite to replace the earlier report, or choose another --report folder",
            )
        if not is_report_dir(dest):
            raise ConflictError(
                f"{dest} is not an earlier colora report; --overwrite only replaces those",
                hint="choose a new or empty --report folder",
            )


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
    parts = [
        _head(f"colora report: {r['task']}"),
        "<body>",
        "<header>",
        f"<h1>Task <code>{e(r['task'])}</code></h1>",
        _summary(r),
        "</header>",
        "<main>",
    ]
    parts.append(_metrics_section(r))
    parts.append(_examples_section(folder, r))
    parts.append(_training_section(folder, r))
    parts.append(_ranks_section(folder, r))
    parts += [
        "</main>",
        "<footer>",
        f"<p>Written by <code>{e(r.get('command', 'colora eval'))}</code> on {e(r['created'])}. "
        "Metrics from piq on RGB in [0, 1] over the whole image (no border crop). "
        "This folder is self-contained: it needs no network.</p>",
        "</footer>",
        "</body>",
        "</html>",
        "",
    ]
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
.warning { background: #fdecea; border-left: 4px solid #c0392b; padding: 8px 12px; }
"""


def _head(title: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'{REPORT_MARKER}\n<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>"
    )


def _summary(r: dict) -> str:
    e = html.escape
    b, a = r["backbone"], r.get("adapter")
    lines = [f"Backbone <code>{e(b['name'])}</code> ({e(b['label'])}); {r['n_val_pairs']} validation pair(s) scored."]
    if a:
        pct = 100 * a["trainable_params"] / a["backbone_params"] if a.get("backbone_params") else float("nan")
        lines.append(
            f"Adapter: {e(str(a['plan_method']))} rank plan, {a['trainable_params']:,} trainable parameters "
            f"({pct:.2f}% of the backbone), {human_bytes(a['size_bytes']) or 'size unknown'}, "
            f"created {e(str(a['created_at']))}."
        )
    else:
        lines.append("This task has no adapter yet: only the input and the backbone are scored.")
    out = "\n".join(f'<p class="meta">{line}</p>' for line in lines)
    if r.get("harm"):
        out += (
            f'\n<p class="warning"><b>Worse than the input:</b> the adapter loses {r["harm"]:.2f} dB against '
            "the unrestored images on these validation pairs; restoring with it would harm such images.</p>"
        )
    return out


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else str(value)


def _fmt_delta(value: float) -> str:
    return f"{value:+.2f}" if math.isfinite(value) else str(value)


def _metrics_section(r: dict) -> str:
    e = html.escape
    rows = r["metrics"]
    base = rows[0]["psnr"] if rows else float("nan")
    best = max((m["psnr"] for m in rows if math.isfinite(m["psnr"])), default=None)
    out = [
        '<section id="metrics">',
        "<h2>Metrics</h2>",
        "<table>",
        "<thead>",
        '<tr><th>subject</th><th class="what">what</th><th>PSNR (dB)</th><th>SSIM</th>'
        "<th>ΔPSNR vs input</th><th>pairs</th><th>eval row</th></tr>",
        "</thead>",
        "<tbody>",
    ]
    for m in rows:
        cls = ' class="best"' if best is not None and m["psnr"] == best else ""
        out.append(
            f'<tr{cls} data-subject="{e(m["subject"])}" data-eval-id="{m["eval_id"]}">'
            f'<td><code>{e(m["subject"])}</code></td><td class="what">{e(m["label"])}</td>'
            f'<td data-value="{m["psnr"]!r}">{_fmt(m["psnr"], 2)}</td>'
            f'<td data-value="{m["ssim"]!r}">{_fmt(m["ssim"], 4)}</td>'
            f"<td>{_fmt_delta(m['psnr'] - base) if m is not rows[0] else '–'}</td>"
            f"<td>{m['n_pairs']}</td><td>#{m['eval_id']}</td></tr>"
        )
    out += [
        "</tbody>",
        "</table>",
        '<p class="note">Means over the validation pairs, as stored in the index by this evaluation '
        "(eval row ids on the right). The best PSNR is highlighted.</p>",
        "</section>",
    ]
    return "\n".join(out)


def _examples_section(folder: Path, r: dict) -> str:
    e = html.escape
    examples = r.get("examples") or []
    out = ['<section id="examples">', "<h2>Examples</h2>"]
    if not examples:
        out += ["<p>No validation pairs to show.</p>", "</section>"]
        return "\n".join(out)
    out.append(
        f'<p class="note">The best, median and worst validation pairs by <code>{e(r["ranked_by"])}</code> PSNR. '
        f"Each crop (at most {CROP} px a side) is the window where the input differs most from its target; "
        "the numbers under each crop are whole-image PSNR / SSIM of that pair, as stored.</p>"
    )
    for i, ex in enumerate(examples, 1):
        top, left, ch, cw = ex["box"]
        w, h = ex["size"]
        kinds = ", ".join(ex["kinds"])
        out.append(f'<div class="example" data-kinds="{e(kinds)}" data-stem="{e(ex["stem"])}">')
        out.append(
            f"<h3>{e(kinds.capitalize())}: <code>{e(ex['stem'])}</code> "
            f'<span class="note">(crop {cw}×{ch} at x={left}, y={top} of {w}×{h})</span></h3>'
        )
        panels = ex["images"]
        out.append(f'<div class="strip" style="--n: {len(panels)}">')
        for name, img in panels.items():
            rel = f"{IMG_DIR}/example{i}-{_safe(name)}.png"
            Image.fromarray(to_uint8(img)).save(folder / rel)
            score = ex.get("scores", {}).get(name)
            caption = f"{_fmt(score[0], 2)} dB / {_fmt(score[1], 4)}" if score else "reference"
            out.append(
                f'<figure><img src="{rel}" alt="{e(name)} crop of {e(ex["stem"])}" width="{cw}" height="{ch}">'
                f"<figcaption><b>{e(name)}</b>{e(caption)}</figcaption></figure>"
            )
        out += ["</div>", "</div>"]
    out.append("</section>")
    return "\n".join(out)


def _training_section(folder: Path, r: dict) -> str:
    e = html.escape
    run, curve = r.get("run"), r.get("loss_curve")
    out = ['<section id="training">', "<h2>Training loss</h2>"]
    if not run:
        out += ["<p>This task has no training run.</p>", "</section>"]
        return "\n".join(out)
    wall = f"{run['wall_time_s']:.1f} s" if run.get("wall_time_s") is not None else "unknown time"
    out.append(
        f'<p class="meta">Run #{run["id"]} ({e(str(run["status"]))}): {run["steps_done"]} steps in {wall}'
        + (f", {e(str(run['loss']))} loss" if run.get("loss") else "")
        + (f", {run['pairs']} training pairs" if run.get("pairs") is not None else "")
        + ".</p>"
    )
    if curve:
        plot_loss(folder / IMG_DIR / "loss.png", curve, r["task"])
        out.append(f'<img class="plot" src="{IMG_DIR}/loss.png" alt="training loss per step">')
    else:
        out.append("<p>The run recorded no loss curve (it did not finish).</p>")
    out.append("</section>")
    return "\n".join(out)


def _ranks_section(folder: Path, r: dict) -> str:
    plan, scores = r.get("rank_plan"), r.get("scores")
    out = ['<section id="ranks">', "<h2>Rank plan</h2>"]
    if not plan:
        out += ["<p>This task has no adapter, so no rank plan was used.</p>", "</section>"]
        return "\n".join(out)
    total = sum(plan.values())
    note = f"LoRA rank of each of the {len(plan)} adapted layers (sum {total})" + (
        ", next to each layer's measured contribution to the task (FAIG, share of the total)."
        if scores
        else "; this plan has no contribution scores (uniform, or not measured for this backbone)."
    )
    plot_ranks(folder / IMG_DIR / "ranks.png", plan, scores)
    out += [
        f'<p class="meta">{html.escape(note)}</p>',
        f'<img class="plot" src="{IMG_DIR}/ranks.png" alt="rank per layer">',
        "</section>",
    ]
    return "\n".join(out)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
