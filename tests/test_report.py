"""The Snakemake report builds from the tiny demo run, embeds every figure and table page with
its caption, and leaves the run directory untouched."""

import base64
import os
import re
import shutil

from conftest import TINY, run_snakemake

FIGURES = ["best_scores", "fig1b_hierarchy", "fig2_architecture", "fig3_taskonomy",
           "fig4_generalization", "fig5_ceilings"]
TABLE_PAGES = ["contrasts", "gains", "generalization", "hierarchy"]


def snapshot(directory):
    """Every path under the directory with its size and modification time."""
    return {
        str(path.relative_to(directory)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in directory.rglob("*")
    }


def test_report_embeds_every_figure_and_table_page(tiny_run, tmp_path):
    before = snapshot(tiny_run)
    # Every Snakemake call creates .snakemake/locks, even a dry run: build the report from a
    # copy of the run made of hard links (no bytes copied), so the run itself stays as it is.
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, copy_function=os.link)
    report = tmp_path / "report.html"
    # -n: no log file in .snakemake/log; --nolock: no lock files.
    run_snakemake("--configfile", str(TINY), "-d", str(run), "-n", "--nolock",
                  "--report", str(report))
    assert snapshot(tiny_run) == before
    html = report.read_text()
    for name in FIGURES:
        match = re.search(rf'"data_uri": "data:image/png;charset=utf8;filename={name}\.png;'
                          r'base64,([A-Za-z0-9+/=]+)"', html)
        assert match, name
        embedded = base64.b64decode(match.group(1))
        assert embedded == (tiny_run / f"results/figures/{name}.png").read_bytes()
    for name in TABLE_PAGES:
        assert f"filename={name}.html" in html
    # the workflow description and the captions
    assert "5.17 billion regression fits" in html
    assert "Figure 1B, hierarchical correspondence" in html
    assert "planted in each ROI" in html  # the demo's part of the Figure 1B caption
