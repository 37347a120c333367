"""`colora eval --report`, `colora compare` and the validation PSNR in `colora train`'s summary.

One store is built per module: task 'noise' (4 train pairs, 3 validation pairs from their own
folder, so best, median and worst are three different pairs), task 'heavy' (trained on stronger
noise, scored with --against) and task 'fresh' (no adapter). Tests that evaluate write into their
own tmp folders; the rows they add to the store are read back by id.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import ANSI, FAST_TRAIN, TINY_INIT, err, invoke, make_pairs, ok

pytestmark = pytest.mark.usefixtures("one_torch_thread")


STRUCTURAL = {
    "html",
    "head",
    "body",
    "header",
    "main",
    "footer",
    "section",
    "div",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "figure",
    "figcaption",
    "h1",
    "h2",
    "h3",
    "p",
    "code",
    "span",
    "b",
    "style",
    "title",
}
VOID = {"meta", "img", "br", "link", "hr", "input"}


# ---------------------------------------------------------------- helpers


def fails(result, *fragments: str, code: int = 1):
    assert result.exit_code == code, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    for fragment in fragments:
        assert fragment in err(result), f"{fragment!r} not in stderr: {err(result)}"
    if code == 1:
        assert "Error: " in err(result)
        assert ANSI.sub("", result.stdout) == ""
    return result


def eval_rows(home: Path, task: str) -> list:
    """Every EvalResult row of the task, oldest first, read through the store."""
    from sqlalchemy import select

    from colora.store.schema import EvalResult
    from colora.store.store import Store

    store = Store.open(home)
    try:
        with store.session() as s:
            task_id = store.task(task).id
            return list(s.scalars(select(EvalResult).where(EvalResult.task_id == task_id).order_by(EvalResult.id)))
    finally:
        store.engine.dispose()


class Page(HTMLParser):
    """Collects tags, links, data attributes of the metric table and the example blocks."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.doctype = None
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.links: list[str] = []
        self.rows: dict[str, dict] = {}
        self.examples: list[dict] = []
        self.text: list[str] = []
        self._row = None
        self._cell = None
        self._example_depth = 0  # depth of the example block being read, 0 outside one

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if key in a:
                self.links.append(a[key])
        if tag == "img" and self._example_depth and "src" in a:
            self.examples[-1]["imgs"].append(a["src"])
        if tag in VOID:
            return
        if tag in STRUCTURAL:
            self.stack.append(tag)
        if tag == "tr" and "data-subject" in a:
            self._row = {"eval_id": int(a["data-eval-id"]), "values": [], "cells": []}
            self.rows[a["data-subject"]] = self._row
        if tag == "td" and self._row is not None:
            self._cell = []
            if "data-value" in a:
                self._row["values"].append(a["data-value"])
        if tag == "div" and "data-stem" in a:
            self.examples.append({"stem": a["data-stem"], "kinds": a["data-kinds"].split(", "), "imgs": []})
            self._example_depth = len(self.stack)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag in VOID or tag not in STRUCTURAL:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()
        if len(self.stack) < self._example_depth:
            self._example_depth = 0
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row["cells"].append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(index: Path) -> Page:
    page = Page()
    page.feed(index.read_text(encoding="utf-8"))
    page.close()
    return page


@dataclass
class World:
    home: Path
    root: Path
    train_noise: object  # CliRunner result of `colora train noise`


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("report")
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLORA_HOME", str(home))
        mp.delenv("COLORA_DEBUG", raising=False)
        mp.setenv("COLUMNS", "250")
        ok(invoke(*TINY_INIT))
        ok(
            invoke(
                "task",
                "add",
                "noise",
                make_pairs(root / "noise", n=4, seed=0),
                "--val",
                make_pairs(root / "noise-val", n=3, seed=1),
            )
        )
        ok(
            invoke(
                "task",
                "add",
                "heavy",
                make_pairs(root / "heavy", n=4, seed=2, noise=40),
                "--val",
                make_pairs(root / "heavy-val", n=1, seed=3, noise=40),
            )
        )
        ok(invoke("task", "add", "fresh", make_pairs(root / "fresh", n=4, seed=4)))
        train_noise = ok(invoke("train", "noise", *FAST_TRAIN))
        ok(invoke("train", "heavy", *FAST_TRAIN))
    return World(home, root, train_noise)


@pytest.fixture
def home(world, monkeypatch) -> Path:
    monkeypatch.setenv("COLORA_HOME", str(world.home))
    monkeypatch.setenv("COLUMNS", "250")
    return world.home


@dataclass
class Report:
    dir: Path
    index: Path
    result: object
    rows: dict  # subject -> EvalResult written by this eval


@pytest.fixture(scope="module")
def report(world, tmp_path_factory) -> Report:
    """`colora eval noise --report DIR --against heavy`, once for the module."""
    dest = tmp_path_factory.mktemp("out") / "noise-report"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLORA_HOME", str(world.home))
        mp.setenv("COLUMNS", "250")
        before = {r.id for r in eval_rows(world.home, "noise")}
        result = ok(invoke("eval", "noise", "--report", dest, "--against", "heavy"))
    new = [r for r in eval_rows(world.home, "noise") if r.id not in before]
    return Report(dest, dest / "index.html", result, {r.subject: r for r in new})


# ---------------------------------------------------------------- eval --report


def test_report_is_written_and_announced(report):
    assert "Wrote the report to" in err(report.result) and str(report.index) in err(report.result)
    assert report.index.is_file()
    assert sorted(p.name for p in report.dir.iterdir()) == ["img", "index.html"]
    assert (report.dir / "img" / "loss.png").is_file() and (report.dir / "img" / "ranks.png").is_file()
    assert not [p for p in report.dir.parent.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_eval_output_keeps_its_table_and_adds_the_against_row(report):
    table = ANSI.sub("", report.result.stdout)
    for subject in ("input", "backbone", "adapter", "adapter:heavy"):
        shown = re.search(rf"│ {re.escape(subject)}\s+│\s+(-?[0-9.]+) │", table)
        # the printed row is the recorded one rounded once to its last printed digit (it was printed
        # from the value already rounded to 3 places: 12.1746 -> 12.175 -> "12.18")
        assert shown and shown.group(1) == f"{report.rows[subject].psnr:.2f}", (subject, table)
    assert "noise: 3 validation pairs" in table


def test_eval_table_rounds_each_score_once(home, world, monkeypatch):
    """12.1746 dB prints as 12.17: rounded to 3 places first it would be 12.175, then "12.18"."""
    import colora.api.evaluation as evaluation
    from colora.store.store import Store

    backbone = Store.open(world.home).backbone()
    rows = [
        {"subject": "input", "psnr": 10.0, "ssim": 0.5, "delta_psnr_vs_input": 0.0, "pairs": 1},
        {"subject": "adapter", "psnr": 12.1746, "ssim": 0.61234, "delta_psnr_vs_input": 2.1746, "pairs": 1},
    ]
    outcome = evaluation.EvalOutcome("noise", backbone, 1, rows, True)
    monkeypatch.setattr(evaluation, "evaluate_task", lambda *args, **kwargs: outcome)
    table = ANSI.sub("", ok(invoke("eval", "noise")).stdout)
    assert re.search(r"│ adapter\s+│\s+12\.17 │\s+0\.6123 │\s+\+2\.17 │", table), table
    data = json.loads(ok(invoke("eval", "noise", "--json")).stdout)
    assert data["results"][1] | {"subject": "adapter"} == {
        "subject": "adapter",
        "psnr": 12.175,
        "ssim": 0.6123,
        "delta_psnr_vs_input": 2.175,
        "pairs": 1,
    }


def test_report_is_balanced_html_with_a_doctype(report):
    page = parse(report.index)
    assert page.doctype and page.doctype.lower() == "doctype html"
    assert page.problems == []
    assert page.stack == [], f"unclosed tags: {page.stack}"
    text = report.index.read_text(encoding="utf-8")
    for section in ("metrics", "examples", "training", "ranks"):
        assert f'<section id="{section}">' in text


def test_report_links_are_relative_and_exist(report):
    page = parse(report.index)
    assert page.links, "the report links no pictures"
    for link in page.links:
        assert not re.match(r"^[a-z][a-z0-9+.-]*:", link, re.I), f"absolute URL {link}"
        assert not link.startswith(("/", "//", "\\")), f"absolute path {link}"
        target = (report.index.parent / link).resolve()
        assert target.is_file(), f"{link} does not exist"
        assert report.dir.resolve() in target.parents, f"{link} points outside the report"
        if link.endswith(".png"):
            with Image.open(target) as img:
                assert img.format == "PNG"
    text = report.index.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "<script" not in text and "url(" not in text


def test_report_numbers_equal_the_stored_eval_rows(report):
    page = parse(report.index)
    assert set(page.rows) == {"input", "backbone", "adapter", "adapter:heavy"} == set(report.rows)
    for subject, row in report.rows.items():
        shown = page.rows[subject]
        assert shown["eval_id"] == row.id
        assert [float(v) for v in shown["values"]] == [row.psnr, row.ssim]
        assert shown["cells"][2:4] == [f"{row.psnr:.2f}", f"{row.ssim:.4f}"]
        assert shown["cells"][5] == str(row.n_pairs) == "3"


def test_against_rows_are_the_other_adapter_scored_on_this_tasks_pairs(report, world):
    heavy = report.rows["adapter:heavy"]
    stems = [p[0] for p in json.loads(heavy.per_pair)]
    assert stems == [p[0] for p in json.loads(report.rows["adapter"].per_pair)] == ["000", "001", "002"]
    assert json.loads(heavy.per_pair) != json.loads(report.rows["adapter"].per_pair)
    assert not any(r.subject.startswith("adapter:") for r in eval_rows(world.home, "heavy"))


def test_examples_are_best_median_worst_by_adapter_psnr(report):
    page = parse(report.index)
    per_pair = sorted(json.loads(report.rows["adapter"].per_pair), key=lambda r: r[1])
    assert [(e["kinds"], e["stem"]) for e in page.examples] == [
        (["best"], per_pair[-1][0]),
        (["median"], per_pair[1][0]),
        (["worst"], per_pair[0][0]),
    ]
    text = report.index.read_text(encoding="utf-8")
    for example in page.examples:
        assert [Path(s).stem.split("-", 1)[1] for s in example["imgs"]] == ["input", "backbone", "adapter", "target"]
        for src in example["imgs"]:
            with Image.open(report.dir / src) as img:
                assert img.size == (40, 32)  # the whole tiny image: smaller than the 256 px crop
    stored = {stem: psnr for stem, psnr, _ in json.loads(report.rows["adapter"].per_pair)}
    for stem, psnr in stored.items():
        assert f"{psnr:.2f} dB" in text
    for label in ("<b>input</b>", "<b>backbone</b>", "<b>adapter</b>", "<b>target</b>"):
        assert text.count(label) == 3


def test_report_shows_the_training_run_and_rank_plan(report, home):
    from colora.core.model.weights import read_adapter
    from colora.store.store import Store

    store = Store.open(home)
    try:
        task = store.task("noise")
        run, adapter = store.last_run(task), store.adapter(task)
        plan = read_adapter(store.path(adapter.path))[1].rank_plan  # the adapter file carries its plan
    finally:
        store.engine.dispose()
    text = report.index.read_text(encoding="utf-8")
    assert f"Run #{run.id} (done): 10 steps" in text
    assert f"LoRA rank of each of the {len(plan)} adapted layers (sum {sum(plan.values())})" in text
    assert "no contribution scores" in text  # trained with --rank: a uniform plan


# ---------------------------------------------------------------- refusals and replacement


def test_existing_non_empty_folder_is_refused_and_nothing_is_written(home, tmp_path):
    dest = tmp_path / "taken"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    before = len(eval_rows(home, "noise"))
    r = fails(
        invoke("eval", "noise", "--report", dest), "report folder", "already exists and is not empty", "--overwrite"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    assert [p.name for p in dest.iterdir()] == ["notes.txt"] and (dest / "notes.txt").read_text() == "mine"
    assert len(eval_rows(home, "noise")) == before, "the eval ran although the report was refused"
    # --overwrite replaces earlier reports only, never a folder of other files
    fails(invoke("eval", "noise", "--report", dest, "--overwrite"), "is not an earlier colora report")
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]
    assert err(r).count("Error:") == 1


def test_report_path_that_is_a_file_is_refused(home, tmp_path):
    (tmp_path / "file").write_text("x")
    fails(invoke("eval", "noise", "--report", tmp_path / "file"), "exists and is not a folder")
    assert (tmp_path / "file").read_text() == "x"


def test_overwrite_replaces_an_earlier_report_and_an_empty_folder_is_used(home, tmp_path):
    dest = tmp_path / "rep"
    dest.mkdir()  # empty: fine without --overwrite
    ok(invoke("eval", "noise", "--report", dest))
    first = parse(dest / "index.html").rows["adapter"]["eval_id"]
    r = ok(invoke("eval", "noise", "--report", dest, "--overwrite", "--json"))
    data = json.loads(ANSI.sub("", r.stdout))
    assert data["report"] == str((dest / "index.html").absolute())
    assert [row["subject"] for row in data["results"]] == ["input", "backbone", "adapter"]
    page = parse(dest / "index.html")
    assert set(page.rows) == {"input", "backbone", "adapter"}
    assert page.rows["adapter"]["eval_id"] > first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]


def test_overwrite_without_report_is_a_usage_error(home):
    fails(invoke("eval", "noise", "--overwrite"), "--overwrite only applies to a --report folder", code=2)


def test_a_failure_while_writing_leaves_no_half_report(home, tmp_path, monkeypatch):
    import colora.core.report.page

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(colora.core.report.page, "plot_ranks", broken)
    dest = tmp_path / "rep"
    fails(invoke("eval", "noise", "--report", dest), "disk full")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "against, message",
    [
        ("ghost", "no task named 'ghost'"),
        ("fresh", "task 'fresh' has no adapter yet"),
        ("noise", "--against lists 'noise' itself"),
        ("heavy,heavy", "--against lists heavy more than once"),
        ("heavy,", "--against takes task names separated by commas"),
    ],
)
def test_against_errors(home, tmp_path, against, message):
    before = len(eval_rows(home, "noise"))
    fails(invoke("eval", "noise", "--against", against, "--report", tmp_path / "rep"), message)
    assert not (tmp_path / "rep").exists()
    assert len(eval_rows(home, "noise")) == before


def test_report_of_a_task_without_adapter(home, tmp_path, world):
    dest = tmp_path / "rep"
    r = ok(invoke("eval", "fresh", "--report", dest))
    assert "has no adapter yet" in err(r)
    page = parse(dest / "index.html")
    assert set(page.rows) == {"input", "backbone"}
    assert page.problems == [] and page.stack == []
    text = (dest / "index.html").read_text(encoding="utf-8")
    assert "pairs by <code>backbone</code> PSNR" in text and "no training run" in text and "no rank plan" in text


# ---------------------------------------------------------------- crops


def test_error_crop_is_at_most_256_px_around_the_largest_error():
    from colora.core.report.images import CROP, error_crop

    target = np.zeros((600, 500, 3), np.float32)
    degraded = target.copy()
    degraded[400:440, 50:90] = 1.0
    top, left, h, w = error_crop(degraded, target)
    assert (h, w) == (CROP, CROP)
    assert top <= 400 and top + h >= 440 and left <= 50 and left + w >= 90
    assert error_crop(target, target) == ((600 - 256) // 2, (500 - 256) // 2, 256, 256)  # no error: the centre
    assert error_crop(target[:40, :30], target[:40, :30]) == (0, 0, 40, 30)  # smaller than a crop: all of it


# ---------------------------------------------------------------- compare


def test_compare_writes_one_labelled_tile_per_task(home, world, tmp_path):
    from colora.core.report.grid import GRID_BACKGROUND, grid_layout

    image = world.root / "noise-val" / "input" / "000.png"
    out = tmp_path / "grid.png"
    r = ok(invoke("compare", image, "--tasks", "noise,heavy", "-o", out))
    layout = grid_layout(40, 32, 3)
    assert f"Wrote {out} ({layout['size'][0]}x{layout['size'][1]} px): input, noise, heavy." in err(r)
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == layout["size"] == (
            3 * 200 + 4 * 8,
            24 + 160 + 2 * 8,
        )  # 40x32 scaled 5x
        grid = np.asarray(img.convert("RGB"))
    tw, th = layout["tile"]
    source = np.asarray(Image.open(image).convert("RGB").resize((tw, th), Image.Resampling.NEAREST))
    tiles = [grid[y : y + th, x : x + tw] for x, y in layout["boxes"]]
    assert len(tiles) == 3
    assert np.array_equal(tiles[0], source)  # the first tile is the input itself
    assert not np.array_equal(tiles[1], source) and not np.array_equal(tiles[2], source)
    for x, y in layout["boxes"]:
        band = grid[y - layout["band"] : y, x : x + tw]
        assert (band != GRID_BACKGROUND).any(), "a tile has no label"


def test_compare_grid_wraps_after_four_tiles(tmp_path):
    from colora.core.report.grid import grid_layout, write_grid

    tiles = [(f"t{i}", np.full((300, 200, 3), i / 5, np.float32)) for i in range(5)]
    size = write_grid(tmp_path / "g.png", tiles)
    layout = grid_layout(200, 300, 5)
    assert (layout["columns"], layout["rows"]) == (4, 2)
    assert size == layout["size"] == (4 * 200 + 5 * 8, 2 * (24 + 300) + 3 * 8)


@pytest.mark.parametrize(
    "tasks, message",
    [
        ("noise,ghost", "no task named 'ghost'"),
        ("noise,fresh", "task 'fresh' has no adapter yet"),
    ],
)
def test_compare_task_errors(home, world, tmp_path, tasks, message):
    out = tmp_path / "grid.png"
    fails(invoke("compare", world.root / "noise-val" / "input" / "000.png", "--tasks", tasks, "-o", out), message)
    assert not out.exists()


def test_compare_refuses_an_existing_output_unless_overwrite(home, world, tmp_path):
    from colora.core.report.grid import grid_layout

    image = world.root / "noise-val" / "input" / "000.png"
    out = tmp_path / "grid.png"
    out.write_bytes(b"keep")
    fails(invoke("compare", image, "--tasks", "noise", "-o", out), "already exists", "--overwrite")
    assert out.read_bytes() == b"keep"
    ok(invoke("compare", image, "--tasks", "noise", "-o", out, "--overwrite"))
    with Image.open(out) as img:
        assert img.size == grid_layout(40, 32, 2)["size"]


@pytest.mark.parametrize("name, message", [("grid.jpg", "does not end in .png"), ("missing", "image not found")])
def test_compare_input_and_output_errors(home, world, tmp_path, name, message):
    image = world.root / "noise-val" / "input" / "000.png"
    if name == "missing":
        image, name = tmp_path / "missing.png", "grid.png"
    fails(invoke("compare", image, "--tasks", "noise", "-o", tmp_path / name), message)
    assert not (tmp_path / name).exists()


# ---------------------------------------------------------------- train summary, fast paths


def test_train_summary_has_a_validation_psnr(world):
    text = err(world.train_noise)
    match = re.search(r"Validation PSNR (-?[\d.]+) dB on 3 of 3 validation pair\(s\) \(input ([\d.]+) dB", text)
    assert match, text
    assert "Trained 'noise': 10 steps" in text


def test_train_summary_without_validation_pairs_says_nothing(home, tmp_path):
    ok(invoke("task", "add", "noval", make_pairs(tmp_path / "p", n=3), "--val-fraction", "0"))
    r = ok(invoke("train", "noval", *FAST_TRAIN))
    assert "Validation PSNR" not in err(r) and "Trained 'noval'" in err(r)
    ok(invoke("task", "rm", "noval", "--yes"))


def test_help_and_list_do_not_import_matplotlib_or_torch(home):
    code = (
        "import sys; from typer.testing import CliRunner; from colora.cli.main import app; "
        "r = CliRunner().invoke(app, sys.argv[1:]); print(r.exit_code, 'matplotlib' in "
        "sys.modules, 'torch' in sys.modules)"
    )
    for args in (["--help"], ["list"], ["compare", "--help"], ["eval", "--help"]):
        env = {**os.environ, "COLORA_HOME": str(home)}
        p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120)
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() == ["0", "False", "False"], (args, p.stdout, p.stderr)
