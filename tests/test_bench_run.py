"""Smoke test of the benchmark runner (bench/run.py) on a tiny corpus; no timings are asserted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("cold", "no_change", "add_one", "mutate_1pct")


def _run_bench(tmp_path: Path, hugo: str) -> tuple[dict, str]:
    out, markdown = tmp_path / "out", tmp_path / "benchmarks.md"
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "run.py"),
        "--sizes",
        "40",
        "--repeat",
        "1",
        "--hugo",
        hugo,
        "--out",
        str(out),
        "--markdown",
        str(markdown),
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "results.json").read_text(encoding="utf-8")), markdown.read_text(encoding="utf-8")


def _assert_figures(results: dict, markdown: str) -> dict:
    assert results["repeat"] == 1 and results["command"].startswith("python bench/run.py")
    assert {"cpu", "cores", "memory_gib", "os", "python", "sqlite"} <= set(results["machine"])
    (size,) = results["sizes"]
    assert size["files"] == 40 and size["corpus_bytes"] > 0 and size["database_bytes"] > 0
    assert size["checks"] == []  # every run report showed the expected file counts
    for key in FIGURES:
        fig = size["figures"][key]
        assert fig["min_s"] <= fig["median_s"] <= fig["max_s"]
        assert fig["peak_rss_mib"] > 0 and len(fig["samples"]) == 1
        assert fig["reports"][0]["status"] == "ok"
    assert size["figures"]["add_one"]["reports"][0]["files"]["new"] == 1
    assert size["figures"]["mutate_1pct"]["reports"][0]["files"]["changed"] == 1
    targets = results["targets"]
    assert len(targets) == 5 and {t["result"] for t in targets} <= {"PASS", "FAIL", "N/A"}
    assert targets[-1]["result"] == "N/A"  # RSS growth needs two sizes
    for text in ("# Benchmarks", "| 40 | cold run |", "| 40 | no-change rerun |", "### Targets", "### Machine"):
        assert text in markdown
    return size


def test_runner_writes_every_figure(tmp_path: Path) -> None:
    analysis = "<!-- analysis: written by hand, kept by bench/run.py -->\n## Profiles\nkept\n"
    (tmp_path / "benchmarks.md").write_text("# Old results\n\n" + analysis, encoding="utf-8")
    results, markdown = _run_bench(tmp_path, "off")
    assert "# Old results" not in markdown and markdown.endswith(analysis)  # new results, same analysis
    size = _assert_figures(results, markdown)
    assert size["hugo"] is None and size["ratios_to_hugo"] is None
    assert "scaled linearly" in size["hugo_reference_basis"]
    assert results["hugo_version"] is None


@pytest.mark.skipif(shutil.which("hugo") is None, reason="hugo is not installed")
def test_runner_with_hugo(tmp_path: Path) -> None:
    results, markdown = _run_bench(tmp_path, "auto")
    size = _assert_figures(results, markdown)
    assert size["hugo"]["median_s"] > 0 and size["hugo"]["peak_rss_mib"] > 0
    assert set(size["ratios_to_hugo"]) == {*FIGURES, "peak_rss"}
    assert "| 40 | Hugo build |" in markdown
