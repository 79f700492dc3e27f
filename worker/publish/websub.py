"""WebSub: tell each configured hub which feeds a cycle changed (side effect: network)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import structlog

from worker.model import WebSubCounts

__all__ = ["ATTEMPTS", "ping_hubs"]

log = structlog.get_logger("worker.publish")

ATTEMPTS = 3  # per hub and cycle; waits of BACKOFF_S, then twice that, between them
BACKOFF_S = 0.5
TIMEOUT_S = 5.0


def ping_hubs(
    hubs: Sequence[str],
    topics: Sequence[str],
    *,
    sleep: Callable[[float], None] = time.sleep,
    backoff_s: float = BACKOFF_S,
) -> WebSubCounts:
    """One `hub.mode=publish` POST per hub naming every changed feed (`hub.url`, repeated), as
    hubs take it; a hub that fails (no answer, not 2xx) is asked again after a back-off, up to
    ATTEMPTS times. Hubs are configuration: any address, no proxy from the environment."""
    import httpx

    counts = WebSubCounts()
    form = {"hub.mode": "publish", "hub.url": list(topics)}  # hub.url repeated, one per feed
    with httpx.Client(timeout=TIMEOUT_S, trust_env=False, follow_redirects=False) as client:
        for hub in hubs:
            problem = None
            for attempt in range(ATTEMPTS):
                if attempt:
                    sleep(backoff_s * 2 ** (attempt - 1))
                try:
                    response = client.post(hub, data=form)
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                    continue
                if 200 <= response.status_code < 300:
                    problem = None
                    break
                problem = f"HTTP {response.status_code}"
            if problem is None:
                counts.pinged += 1
                log.info("websub.pinged", hub=hub, feeds=len(topics))
            else:
                counts.failed += 1
                log.warning("websub.failed", hub=hub, feeds=len(topics), reason=problem[:300], attempts=ATTEMPTS)
    return counts
