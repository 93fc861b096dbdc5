"""``isheep report``: one self-contained HTML file with the run's plots, and the plots as PNGs.

A finished run (fixed content) gets benchmark results, a gate decision and swap phases in its
lineage; the report must draw all five plots, embed them (no network needed to view it), write
them as PNG files, and render in a real headless browser (Debian's Chromium) with the plots on
the page.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from isheep.runtime.store import RunStore, model_row_op
from support.procs import run_cli
from support.runs import make_finished_run

pytestmark = pytest.mark.timeout(180)
PLOTS = ["rounds.png", "critic-scores.png", "training-loss.png", "benchmarks.png", "swaps.png"]


def _measured_run(folder):
    make_finished_run(folder)
    store = RunStore.open(folder)
    for row in store.models():
        detail = json.loads(row["detail"] or "{}")
        mean = 0.3 + 0.1 * (row["round"] or 0)
        result = {"scores": {"a": 1.0}, "interval": {"mean": mean, "low": mean - 0.08, "high": mean + 0.08, "n": 40,
                                                     "level": 0.95}}
        detail["benchmarks"] = {"instructions": result, "humaneval": {**result, "interval": {
            **result["interval"], "mean": mean / 2, "low": mean / 2 - 0.05, "high": mean / 2 + 0.05}}}
        if row["version"] != "v0":
            detail["swap"] = {**(detail.get("swap") or {}), "phases_s": {"probe_before": 0.2, "drain": 0.1,
                                                                          "load": 1.4, "verify": 0.3}}
            detail["gate"] = {"decision": "kept", "best": "v0"}
        store.write_sync([model_row_op(row["version"], parent=row["parent"], round=row["round"],
                                       served_name=row["served_name"], path=row["path"], state=row["state"],
                                       detail=detail)])
    store.close_sync()
    return folder


def test_the_report_is_one_html_file_with_every_plot_embedded_and_as_png(tmp_path):
    folder = _measured_run(tmp_path / "run")
    done = run_cli("report", str(folder), "--out", str(tmp_path / "report.html"))
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "report.html").read_text()
    assert page.count("<img ") == 5 and page.count("src='data:image/png;base64,") == 5
    assert "http://" not in page and "https://" not in page  # nothing to fetch: it opens offline
    assert "instructions 0.400 [0.320, 0.480]" in page and "<td>kept</td>" in page
    for name in PLOTS:
        with Image.open(tmp_path / "report-plots" / name) as image:
            assert image.format == "PNG" and image.width > 500
    assert [line.split()[-1] for line in done.stdout.splitlines()] == \
        [str(tmp_path / "report.html")] + [str(tmp_path / "report-plots" / n) for n in PLOTS]


def test_a_run_with_nothing_measured_still_gets_a_report_that_says_so(tmp_path):
    folder = make_finished_run(tmp_path / "run")
    done = run_cli("report", str(folder))
    assert done.returncode == 0, done.stderr
    page = (folder / "report.html").read_text()
    assert page.count("<img ") == 3 and page.count("nothing recorded yet") == 2  # no benchmarks, no swap phases


@pytest.mark.parametrize("args, needle", [
    (["--out", "report.txt"], "the report is an HTML file"),
    (["--out", "/no/such/folder/r.html"], "--out: folder /no/such/folder does not exist"),
    (["--out", "{tmp}/taken.html"], "taken.html is a folder, not a file"),
    (["--out", "{tmp}/run/isheep.db/r.html"], "isheep.db is not a folder"),
])
def test_bad_report_input_is_one_line_and_status_2(tmp_path, args, needle):
    folder = make_finished_run(tmp_path / "run")
    (tmp_path / "taken.html").mkdir()
    done = run_cli("report", str(folder), *[a.format(tmp=tmp_path) for a in args])
    assert done.returncode == 2 and needle in done.stderr and len(done.stderr.strip().splitlines()) == 1
    missing = run_cli("report", str(tmp_path / "absent"))
    assert missing.returncode == 2 and "run folder not found" in missing.stderr


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_report_renders_in_a_headless_browser_with_its_plots(tmp_path):
    folder = _measured_run(tmp_path / "run")
    assert run_cli("report", str(folder)).returncode == 0
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1100,4200", (folder / "report.html").as_uri()],
                   capture_output=True, timeout=120, check=True)
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=int)

    def near(rgb: tuple[int, int, int]) -> int:
        return int((np.abs(pixels - np.array(rgb)).max(axis=2) < 12).sum())

    # matplotlib's first two colours (its blue and orange) fill the bars and lines of the plots.
    blue, orange = near((31, 119, 180)), near((255, 127, 14))
    assert blue > 5000 and orange > 2000, (blue, orange)


def test_benchmarks_share_one_axis_of_versions_when_some_were_measured_on_one_benchmark_only(tmp_path):
    from isheep.runtime.pipeline.report import benchmark_points

    folder = _measured_run(tmp_path / "run")
    store = RunStore.open(folder)
    first = store.models()[0]
    detail = json.loads(first["detail"])
    del detail["benchmarks"]["humaneval"]  # the base measured on instructions only
    store.write_sync([model_row_op(first["version"], parent=first["parent"], round=first["round"],
                                   served_name=first["served_name"], path=first["path"], state=first["state"],
                                   detail=detail)])
    versions, points = benchmark_points(store)
    store.close_sync()
    assert versions[0] == first["version"] and len(versions) >= 2
    assert [x for x, _ in points["instructions"]] == list(range(len(versions)))
    assert [x for x, _ in points["humaneval"]] == list(range(1, len(versions)))  # not shifted onto the base
