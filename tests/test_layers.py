"""The package graph: one direction, enforced by import-linter, and parser processes free of the store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_the_import_contracts_hold():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports)], capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


def test_a_parser_process_loads_no_sqlalchemy():
    """What the fork server of `serve` preloads for its parser processes, as they import it."""
    from worker.ingest import parsers

    preload = ["worker._forkserver_guard", "worker.ingest.parsers", *parsers._PARSER_MODULES]
    code = (
        "import importlib, json, sys\n"
        f"for name in {preload!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'sqlmodel', 'feedgen',"
        " 'httpx') or m.startswith('worker.store'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True
    )
    assert json.loads(result.stdout) == []
