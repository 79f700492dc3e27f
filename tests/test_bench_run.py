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


def _postgres_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect("postgresql://root@127.0.0.1:5432/postgres", connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001  (no server: the PostgreSQL modes are not tested here)
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _postgres_reachable(), reason="no PostgreSQL server on 127.0.0.1:5432")
def test_runner_on_postgresql_and_replicas(tmp_path: Path) -> None:
    """`--database postgresql` and `--replicas 2` on one results.json and one report: each session
    under its own key and in its own block, the SQLite results and the hand-written part kept."""
    import psycopg

    out, markdown = tmp_path / "out", tmp_path / "benchmarks.md"
    analysis = "<!-- analysis: written by hand, kept by bench/run.py -->\n## Profiles\nkept\n"
    markdown.write_text("# Old results\n\n" + analysis, encoding="utf-8")
    common = ["--sizes", "80", "--repeat", "1", "--out", str(out), "--markdown", str(markdown)]
    bench = [sys.executable, str(ROOT / "bench" / "run.py")]
    for extra in (["--hugo", "off"], ["--database", "postgresql"], ["--replicas", "2"]):
        cmd = [*bench, *common, *extra]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["sizes"][0]["files"] == 80  # the SQLite session, kept by the PostgreSQL ones
    pg = results["postgresql"]["sizes"][0]
    replicas = results["replicas"]["2"]["sizes"][0]
    for size in (pg, replicas):
        assert size["checks"] == []
        for key in FIGURES:
            run = size["figures"][key]["runs"][0]
            assert len(run["code"]["head"]) == 40 and run["code"]["dirty"] is not None
            assert len(run["load_before"]) == 3
    assert pg["table_sizes_after_cold"]["articles"] == 80
    cold = replicas["figures"]["cold"]["runs"][0]
    assert len(cold["files_read"]) == 2 and sum(cold["files_read_logged"]) == 80  # every file read by a claim
    text = markdown.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks") and "| 80 | cold run |" in text and text.count("## Profiles") == 1
    for key in ("postgresql", "replicas"):
        assert text.count(f"<!-- bench/run.py {key}: begin") == 1
    assert "| 80 | 2 | cold run |" in text and "| 80 | cold run | " in text
    with psycopg.connect("postgresql://root@127.0.0.1:5432/postgres") as conn:  # every database dropped
        left = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'bench_80_%'").fetchone()[0]
    assert left == 0


def _watch_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_watch_latency_test", ROOT / "bench" / "watch_latency.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_watch_latency_percentiles() -> None:
    wl = _watch_module()
    values = [float(i) for i in range(1, 21)]
    assert wl.percentile(values, 0.5) == 10.5 and wl.percentile(values, 0.95) == pytest.approx(19.05)
    summary = wl.summarize_latencies([{"seen": True, "latency_s": v} for v in values] + [{"seen": False}])
    assert summary["count"] == 21 and summary["seen"] == 20 and summary["max_s"] == 20.0
    assert (
        wl._retitle('---\ntitle: "Old \\"one\\""\nx: 1\n---\n', "M1") == '---\ntitle: "M1 Old \\"one\\""\nx: 1\n---\n'
    )


def test_watch_latency_mode(tmp_path: Path) -> None:
    """`--watch-latency` on a tiny corpus: every sample saw its change in the served topic feed
    (a new file, an edit, a delete), through an incremental cycle the watcher started; the burst
    was stored; the figures and targets are in results.json and in the report's own block."""
    out, markdown = tmp_path / "out", tmp_path / "latency.md"
    markdown.write_text("# Kept\n", encoding="utf-8")
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--watch-latency", "--sizes", "300", "--samples", "3"]
    cmd += ["--hugo-samples", "1", "--burst", "40", "--out", str(out), "--markdown", str(markdown)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    (size,) = results["watch"]["sizes"]
    assert size["files"] == 300 and size["cold"]["files_per_s"] > 0
    for kind in ("new", "edit", "delete"):
        fig = size["feedworker"][kind]
        assert fig["count"] == fig["seen"] == 3, fig
        assert 0 < fig["median_s"] <= fig["p95_s"] <= fig["max_s"] < 60
        for sample in fig["samples"]:
            assert sample["seen"] and sample["latency_s"] > 0 and sample["polls"] >= 1
            assert sample["watch_cycles"] >= 1 and sample["cycles"][0]["scan"] == "paths"
            assert sample["split"]["cycle_s"] > 0
    burst = size["burst"]
    assert burst["seen"] and burst["files"] == 40 and burst["watch_paths"] >= 40
    assert burst["newest_in_topic_feed"] and burst["newest_in_all_feed"]
    assert {t["result"] for t in results["watch"]["targets"]} <= {"PASS", "FAIL", "N/A"}
    assert len(results["watch"]["targets"]) == 7
    if shutil.which("hugo"):
        for kind in ("new", "edit", "delete"):
            assert size["hugo"][kind]["seen"] == 1 and size["hugo"][kind]["median_s"] > 0
    text = markdown.read_text(encoding="utf-8")
    assert text.startswith("# Kept\n") and "## Watch latency" in text
    assert text.count("<!-- bench/run.py watch: begin") == 1
    for row in ("| 300 | new file |", "| 300 | edit (new title) |", "| 300 | delete |", "burst of 40"):
        assert row in text
