"""feedworker: turns folders of front-matter article files into per-topic RSS and Atom feeds."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Article",
    "ArticleError",
    "Config",
    "ConfigError",
    "CycleError",
    "RunReport",
    "load_config",
    "parse_article",
    "run_cycle",
]

# Imported on first use, so that `feedworker check` or a no-change run does not pay for
# the renderer and the HTTP stack at start-up.
_HOMES = {
    "Article": "worker.model",
    "ArticleError": "worker.ingest.frontmatter",
    "parse_article": "worker.ingest.frontmatter",
    "Config": "worker.config",
    "ConfigError": "worker.config",
    "load_config": "worker.config",
    "CycleError": "worker.report",
    "RunReport": "worker.report",
    "run_cycle": "worker.pipeline",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
