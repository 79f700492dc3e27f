"""The README's first-day instructions hold: the article it says to copy is published, and its
minimal configuration of your own folder runs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from tests.conftest import ROOT, run_cli
from worker.ingest.frontmatter import parse_article

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_article_the_readme_says_to_copy_is_published_and_the_reference_is_a_draft():
    copy = re.search(r"copy a\s+published one such as\s+`([^`]+)`", README)
    assert copy, "the README names a published example to copy"
    article = parse_article((ROOT / copy.group(1)).read_bytes(), copy.group(1))
    assert article.is_published and not article.warnings
    reference = re.search(r"The reference shape is\s+`([^`]+)`, a draft", README)
    assert reference and not parse_article((ROOT / reference.group(1)).read_bytes(), "x").is_published


def test_the_minimal_config_of_your_own_folder_runs(tmp_path: Path):
    section = README[README.index("### Your own folder") :]
    config = re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1)
    (tmp_path / "my.yaml").write_text(config)
    (tmp_path / "articles").mkdir()
    example = re.search(r"such as\s+`([^`]+)`", section).group(1)
    shutil.copy(ROOT / example, tmp_path / "articles" / "one.txt")
    report = json.loads(run_cli("run", "--json", "--config", str(tmp_path / "my.yaml")).stdout)
    assert report["status"] == "ok" and report["articles"] == {"total": 1, "published": 1}
    assert (tmp_path / "feeds" / "all.atom").exists() and (tmp_path / "data" / "feedworker.db").exists()
    status = run_cli("status", "--config", str(tmp_path / "my.yaml"))
    assert "articles: 1 (1 published" in status.stdout


def test_the_readme_says_compose_v2_and_how_to_reach_the_commands():
    assert "Docker Compose v2" in README and "docker-compose up" not in README
    assert ". .venv/bin/activate" in README and ".venv/bin/feedworker" in README
    assert "`feeds.base_url`" in README[README.index("## Quick start") : README.index("## Article files")]
