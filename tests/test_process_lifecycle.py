"""Parser processes, their fork server and the resource tracker die with `serve`, however it ends.

`serve` runs as a real subprocess in its own session; every process of that session is
found through /proc, so a survivor is seen whoever its parent has become.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.service_helpers import Service, free_port, make_corpus, wait_for, write_config
from worker.ingest import parsers

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux's")

CORPUS = 300  # well above parsers.INLINE_BELOW: the first cycle parses in a process pool
FORKSERVER = "from multiprocessing.forkserver import main"  # its command line, and its children's


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, session) of a process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return fields[0], int(fields[1]), int(fields[3])


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return "?"


def session_processes(session: int) -> dict[int, int]:
    """Living (not zombie) processes of a session -> their parent's pid."""
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(int(entry))
        if stat is not None and stat[2] == session and stat[0] not in ("Z", "X"):
            found[int(entry)] = stat[1]
    return found


def describe(pids: dict[int, int]) -> str:
    return "\n".join(f"  pid {pid} (ppid {ppid}): {_cmdline(pid)[:160]}" for pid, ppid in sorted(pids.items()))


def kill_session(session: int) -> None:
    """Teardown: SIGKILL whatever is left of the session of the serve this test started."""
    for _ in range(50):
        left = session_processes(session)
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def _serving(server: int) -> bool:
    """True once the fork server is in its loop (its preload is over): it holds an epoll instance."""
    try:
        return any(
            os.readlink(f"/proc/{server}/fd/{fd}") == "anon_inode:[eventpoll]"
            for fd in os.listdir(f"/proc/{server}/fd")
        )
    except OSError:
        return False


def wait_for_pool(service: Service, timeout: float) -> int:
    """Poll every millisecond until a parser process appears under the fork server; returns its pid.

    A parser process is a fork of the server (with its command line) forked once the server
    is in its loop: while it preloads, the server may run programs (ctypes.util.find_library
    runs ldconfig), each a fork of it until its exec.

    A process found outside the session is not read again while its pid stays in /proc (a
    pid is reused only after its process is gone), so a poll costs a directory listing, and
    the test leaves the two cores to serve.
    """
    assert service.process is not None
    session = service.process.pid
    foreign: set[int] = set()
    servers: dict[int, bool] = {}  # the fork server (restarted, there could be two) -> in its loop
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise AssertionError(f"serve exited before its pool started:\n{service.log()[-3000:]}")
        for server, serving in servers.items():
            servers[server] = serving or _serving(server)
        present = {int(entry) for entry in os.listdir("/proc") if entry.isdigit()}
        foreign &= present
        for pid in sorted(present - foreign):
            stat = _stat(pid)
            if stat is None:
                continue
            if stat[2] != session:
                foreign.add(pid)
            elif pid not in servers and FORKSERVER in _cmdline(pid):
                if stat[1] == session:
                    servers[pid] = _serving(pid)
                elif servers.get(stat[1]):
                    return pid
        time.sleep(0.001)
    raise AssertionError(f"no parser process started within {timeout}s:\n{service.log()[-3000:]}")


@dataclass(frozen=True)
class Ending:
    """How a trial ends serve: signals as its cycle starts, then as its parser pool starts."""

    at_run_start: tuple[int, ...] = ()
    at_pool: tuple[int, ...] = ()  # 20 ms apart
    delay: float = 0.0  # from the first parser process's appearance to the first of `at_pool`

    def __str__(self) -> str:
        first = f"{_names(self.at_run_start)} as the cycle starts, then " if self.at_run_start else ""
        return f"{first}{_names(self.at_pool)}, from {self.delay * 1000:.0f} ms after the first parser process appeared"


def _names(signals: tuple[int, ...]) -> str:
    return ", then 20 ms later ".join(signal.Signals(signum).name for signum in signals)


def wait_for_run_start(service: Service, timeout: float) -> None:
    def started() -> bool:
        if not service.alive():
            raise AssertionError(f"serve exited before its cycle started:\n{service.log()[-3000:]}")
        return '"run.started"' in service.log()

    wait_for(started, timeout, "the cycle to start", interval=0.005)


def run_trials(tmp_path: Path, endings: list[Ending]) -> list[str]:
    """Start serve on a corpus once per ending, end it so, and list what of its session is
    still alive 3 s after it exited."""
    inbox = tmp_path / "inbox"
    make_corpus(inbox, CORPUS)
    failures: list[str] = []
    for trial, ending in enumerate(endings):
        root = tmp_path / f"trial-{trial}"
        root.mkdir()
        (root / "inbox").symlink_to(inbox)
        port = free_port()
        service = Service(write_config(root, port=port), port).start()
        assert service.process is not None
        session = service.process.pid  # it leads its own session (Service.start)
        try:
            if ending.at_run_start:
                # The cycle goes on after a first SIGTERM (server.grace_s): its pool still starts.
                wait_for_run_start(service, timeout=30)
                for signum in ending.at_run_start:
                    service.signal(signum)
            wait_for_pool(service, timeout=30)
            time.sleep(ending.delay)
            for index, signum in enumerate(ending.at_pool):
                if index:
                    time.sleep(0.02)
                service.signal(signum)
            code = service.wait_exit(15)
            deadline = time.monotonic() + 3.0
            left = session_processes(session)
            while left and time.monotonic() < deadline:
                time.sleep(0.05)
                left = session_processes(session)
            if left:
                failures.append(
                    f"trial {trial} ({ending}): {len(left)} process(es) alive 3 s after serve exited "
                    f"with {code}:\n{describe(left)}"
                )
        finally:
            kill_session(session)
            service.kill_all()
    return failures


def test_the_corpus_is_parsed_in_a_pool() -> None:
    assert CORPUS >= 2 * parsers.INLINE_BELOW


@pytest.mark.slow
def test_two_sigterms_while_the_pool_starts_leave_no_process_behind(tmp_path: Path) -> None:
    """Issue 10, item 16: the second SIGTERM makes serve leave at once (os._exit) as its pool starts.

    A parser process the fork server had just forked, not yet tied to a parent when serve
    and then the server went, was adopted by init and waited for work for good, and with it
    the resource tracker (the parser holds its pipe). Four trials: the SIGTERMs 20 ms apart
    from the first parser process's appearance on (as reported), and a first SIGTERM as the
    cycle starts with the second as the first parser process appears (the exit right in that
    window). On the original code, every one of these trials left a parser process and the
    tracker behind, or nearly every one.
    """
    endings = [
        Ending(at_run_start=(signal.SIGTERM,), at_pool=(signal.SIGTERM,)),
        Ending(at_pool=(signal.SIGTERM, signal.SIGTERM)),
    ] * 2
    failures = run_trials(tmp_path, endings)
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_sigkill_while_the_pool_starts_leaves_no_process_behind(tmp_path: Path) -> None:
    """The same window, serve killed outright: nothing of its tree outlives it either."""
    failures = run_trials(tmp_path, [Ending(at_pool=(signal.SIGKILL,), delay=delay) for delay in (0.0, 0.005)])
    assert not failures, "\n".join(failures)
