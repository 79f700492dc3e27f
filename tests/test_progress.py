"""The progress bar of `feedworker run` (issue 15, item 3): on a terminal, for a run that reads
many files; never in a pipe, with --json or with --quiet; the summary line always."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, make_project
from tests.service_helpers import clean_env, make_corpus

BAR = re.compile(r"reading\s.*?\d+/(\d+)\s+files")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours and cursor moves: what is left is the text shown


def on_a_terminal(*args: str) -> tuple[int, str]:
    """`feedworker ARGS` with stdout and stderr on one pseudo-terminal, as in a shell: exit
    status and everything the terminal was sent."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=clean_env({"TERM": "xterm-256color", "COLUMNS": "120"}),
        cwd=ROOT,
    )
    os.close(slave)
    received = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the process and its children closed the terminal
            break
        if not chunk:
            break
        received += chunk
    os.close(master)
    return process.wait(60), ANSI.sub("", received.decode("utf-8", "replace"))


@pytest.fixture
def many(tmp_path: Path):
    project = make_project(tmp_path, log_level="warning")
    make_corpus(project.inbox, 400)
    return project


def test_a_long_run_on_a_terminal_shows_files_read_of_total_then_its_summary(many) -> None:
    status, shown = on_a_terminal("run", "--config", str(many.config))
    assert status == 0
    totals = {int(total) for total in BAR.findall(shown)}
    assert totals == {400}, shown[-2000:]
    assert "files/s" in shown and re.search(r"\d:\d\d:\d\d|-:--:--", shown)  # rate and time left
    assert "ok: 400 files (400 new" in shown  # the summary line, after the bar is gone


@pytest.mark.parametrize("flag", ["--quiet", "--json", "-q"])
def test_quiet_and_json_show_no_bar(many, flag: str) -> None:
    status, shown = on_a_terminal("run", flag, "--config", str(many.config))
    assert status == 0
    assert not BAR.search(shown) and "files/s" not in shown
    assert ("ok: 400 files" in shown) != (flag == "--json")  # JSON: the report instead
    if flag == "--json":
        assert '"files":' in shown


def test_no_bar_in_a_pipe_nor_for_a_short_run(many, tmp_path: Path) -> None:
    piped = subprocess.run(
        [sys.executable, "-m", "worker", "run", "--config", str(many.config)],
        capture_output=True,
        text=True,
        env=clean_env({"TERM": "xterm-256color"}),
        cwd=ROOT,
        check=True,
    )
    assert "files/s" not in piped.stderr + piped.stdout and "ok: 400 files" in piped.stdout

    short = make_project(tmp_path / "short", log_level="warning")
    make_corpus(short.inbox, 50)
    status, shown = on_a_terminal("run", "--config", str(short.config))
    assert status == 0 and not BAR.search(shown) and "ok: 50 files" in shown
