"""The progress bar `feedworker run` shows on a terminal while a cycle reads many files (rich)."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, Self, TextIO, cast

__all__ = ["SHOW_FROM", "ReadProgress", "terminal_progress"]

SHOW_FROM = 300  # files to read: below, a run is over before a bar would say anything


class ReadProgress:
    """Files read of those to read, their rate and the time left, on stderr; shown only once a
    cycle reports at least SHOW_FROM files to read, and gone when the run ends (the summary
    line is what stays). While it shows, log lines are printed above it, not through it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._progress: Any = None
        self._task: Any = None
        self._restore: Any = None

    def update(self, done: int, total: int) -> None:
        if total < SHOW_FROM:
            return
        if self._progress is None:
            self._start(total)
        self._progress.update(self._task, completed=done, total=total)

    def _start(self, total: int) -> None:
        import structlog
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            Task,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task: Task) -> Text:
                return Text(f"{task.speed:,.0f} files/s" if task.speed else "")

        console = Console(file=self._stream, highlight=False)
        self._progress = Progress(
            TextColumn("reading"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files"),
            Rate(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._task = self._progress.add_task("read", total=total)
        self._progress.start()
        # Log events go through the bar's console, which prints them above the bar.
        self._restore = structlog.get_config()["logger_factory"]
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(cast(TextIO, _ConsoleFile(console))))

    def close(self) -> None:
        if self._progress is None:
            return
        import structlog

        self._progress.stop()
        structlog.configure(logger_factory=self._restore)
        self._progress = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class _ConsoleFile:
    """A file whose lines rich prints above its live display."""

    def __init__(self, console: Any) -> None:
        self._console = console

    def write(self, text: str) -> int:
        self._console.print(text, end="", markup=False, highlight=False, soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        pass


def terminal_progress() -> ReadProgress | None:
    """A progress bar when both stdout and stderr are terminals; None otherwise (a pipe, a
    file, a container's log: nothing of it)."""
    if sys.stdout.isatty() and sys.stderr.isatty():
        return ReadProgress(sys.stderr)
    return None
