"""`feedworker trigger`: ask a running `serve` for a run over HTTP, and optionally wait for it."""

from __future__ import annotations

import time
from typing import Any

import httpx

from worker.config import Config
from worker.service import FINISHED

__all__ = ["TriggerError", "request_run", "server_url", "wait_for_run"]


class TriggerError(Exception):
    """The run could not be requested or followed; the message is one line for a person."""


def server_url(config: Config) -> str:
    """Where `serve` listens, as seen from this machine (a wildcard bind is reached on loopback)."""
    host = config.server.host
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}"


def request_run(config: Config, *, timeout_s: float = 10.0) -> dict[str, Any]:
    """POST /runs with the configured token; returns {"run_id", "status"}."""
    token = config.server.token
    if not token:
        raise TriggerError("server.token is empty: set it (or FEEDWORKER_SERVER__TOKEN) to the token `serve` uses")
    base = server_url(config)
    with _client(base, token, timeout_s) as client:
        try:
            response = client.post("/runs")
        except httpx.TransportError as exc:
            raise TriggerError(f"cannot reach feedworker serve at {base}: {_reason(exc)}") from None
    if response.status_code == 202:
        accepted: dict[str, Any] = response.json()  # the server's run document (a JSON object)
        return accepted
    raise TriggerError(_refusal(base, response))


def wait_for_run(config: Config, run_id: str, *, poll_s: float = 0.5, timeout_s: float | None = None) -> dict[str, Any]:
    """Poll GET /runs/<id> until that run has finished; returns its status document."""
    base = server_url(config)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with _client(base, config.server.token, 10.0) as client:
        while True:
            try:
                response = client.get(f"/runs/{run_id}")
            except httpx.TransportError as exc:
                raise TriggerError(f"lost contact with {base} while waiting for run {run_id}: {_reason(exc)}") from None
            if response.status_code == 404:
                raise TriggerError(f"the server does not know run {run_id} any more (was it restarted?)")
            if response.status_code != 200:
                raise TriggerError(_refusal(base, response))
            document: dict[str, Any] = response.json()  # the server's run document (a JSON object)
            if document.get("status") in FINISHED:
                return document
            if deadline is not None and time.monotonic() >= deadline:
                raise TriggerError(f"run {run_id} still {document.get('status')} after {timeout_s:g}s; stopped waiting")
            time.sleep(poll_s)


def _client(base: str, token: str, timeout_s: float) -> httpx.Client:
    # trust_env=False: a proxy from the environment must not carry the token elsewhere.
    return httpx.Client(base_url=base, timeout=timeout_s, trust_env=False, headers={"Authorization": f"Bearer {token}"})


def _refusal(base: str, response: httpx.Response) -> str:
    code = response.status_code
    if code == 401:
        return f"{base} refused the token (401): server.token differs from the one `serve` uses"
    if code == 403:
        return f"{base} refuses triggers (403): server.token is empty in the configuration `serve` uses"
    if code == 503:
        return f"{base} is shutting down (503): no new runs"
    return f"unexpected answer from {base}: HTTP {code}"


def _reason(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
