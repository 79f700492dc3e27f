"""Command line: options -> one library call -> exit code and a one-line message."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson

from worker.config import Config, ConfigError, default_config_path, load_config
from worker.logging import configure_logging
from worker.text import printable

__all__ = ["main"]

_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Configuration file (default: $FEEDWORKER_CONFIG, else config/feedworker.yaml).",
)


def _load(config_path: Path | None) -> Config:
    try:
        config = load_config(config_path or default_config_path())
    except ConfigError as exc:
        raise click.ClickException(f"configuration: {exc}") from None
    configure_logging(config.log_level)
    return config


def _clock() -> Callable[[], datetime]:
    """The current time, or the time pinned by FEEDWORKER_CLOCK (ISO 8601) for reproducible output."""
    from worker.pipeline import utcnow

    pinned = os.environ.get("FEEDWORKER_CLOCK")
    if not pinned:
        return utcnow
    try:
        moment = datetime.fromisoformat(pinned)
    except ValueError:
        raise click.ClickException(f"FEEDWORKER_CLOCK: {pinned!r} is not an ISO 8601 date-time") from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return lambda: moment


def _print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="feedworker")
def cli() -> None:
    """feedworker: folders of article files -> per-topic RSS and Atom feeds."""


@cli.command()
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar on a terminal (the summary line stays).")
def run(config_path: Path | None, as_json: bool, quiet: bool) -> None:
    """Run one full cycle (scan, ingest, enrich, render) and exit."""
    from worker._progress import terminal_progress
    from worker.pipeline import CycleError, run_cycle
    from worker.report import unreadable_sources

    config = _load(config_path)

    def waiting() -> None:
        click.echo("feedworker: another cycle is running on this database; waiting for it to finish", err=True)

    bar = None if as_json or quiet else terminal_progress()
    try:
        report = run_cycle(config, on_wait=waiting, clock=_clock(), on_progress=bar.update if bar else None)
    except CycleError as exc:
        if as_json:
            _print_json(exc.report.to_dict())
        raise click.ClickException(str(exc)) from None
    finally:
        if bar is not None:
            bar.close()
    if report.waited_s > 0.5:
        click.echo(f"feedworker: waited {report.waited_s:.1f}s for the other cycle, then ran", err=True)
    if as_json:
        _print_json(report.to_dict())
    else:
        files = report.files
        click.echo(
            f"ok: {files.seen} files ({files.new} new, {files.changed} changed, {files.deleted} deleted, "
            f"{files.quarantined} quarantined); {report.articles.published} of {report.articles.total} "
            f"articles published; {report.feeds.written} feeds written in {report.duration_s:.2f}s"
            + _unreadable_note(report.sources, unreadable_sources(report.sources, report.errors))
        )


def _unreadable_note(sources: list[dict[str, Any]], shown: str) -> str:
    """`; 1 source unreadable: /data/inbox2 (No such file or directory)`, or nothing."""
    count = sum(1 for source in sources if source.get("state") != "ok")
    if not count:
        return ""
    return f"; {count} {'source' if count == 1 else 'sources'} unreadable: {printable(shown)}"


@cli.command()
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON on stdout.")
def status(config_path: Path | None, as_json: bool) -> None:
    """Show counts, the last run and the quarantined files."""
    from worker.status import StatusError, read_status

    config = _load(config_path)
    try:
        info = read_status(config)
    except StatusError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        _print_json(info)
        return
    articles = info["articles"]
    click.echo(f"articles: {articles['total']} ({articles['published']} published, {articles['removed']} removed)")
    click.echo(f"topics:   {info['topics']}")
    enrich = info["enrich"]
    click.echo(
        f"enrich:   {enrich['fetched']} fetched, {enrich['cached']} cached, "
        f"{enrich['failed']} failed, {enrich['pending']} pending"
    )
    last = info["last_run"]
    if not last:
        click.echo("last run: never")
    elif last["status"] == "interrupted":
        click.echo(
            f"last run: interrupted (run {last.get('run_id')}, started at {last.get('started_at')}): {last.get('message')}"
        )
    else:
        click.echo(f"last run: {last['status']} at {last.get('finished_at')} in {last['duration_s']}s")
        if last.get("message"):
            click.echo(f"  {printable(str(last['message']))}")
        watch = last.get("watch")
        if isinstance(watch, dict):  # a run of `serve`: its watcher as it was then
            reason = f": {printable(str(watch['reason']))}" if watch.get("reason") else ""
            click.echo(f"watcher:  {printable(str(watch.get('state')))}{reason}")
    sources = info["sources"]
    unreadable = sum(1 for source in sources if source["state"] != "ok")
    click.echo(f"sources:  {len(sources)}" + (f" ({unreadable} unreadable)" if unreadable else ""))
    for source in sources:
        click.echo(f"  {printable(source['path'])}: {_source_line(source)}")
    click.echo(f"quarantined: {len(info['quarantined'])}")
    for item in info["quarantined"]:
        # Paths and messages come from file names and contents: a newline must not forge a line.
        click.echo(f"  {printable(item['path'])}: {printable(item['message'])}")


def _source_line(source: dict[str, Any]) -> str:
    """`ok, 12 files` (as the last run counted them), `missing (No such file or directory)`,
    and what the last run found when it differs from now."""
    files, last_state = source.get("files"), source.get("last_run_state")
    if source["state"] == "ok":
        line = "ok" if files is None else f"ok, {files} {_files(files)}"
        if last_state not in (None, "ok"):
            line += f" ({last_state} at the last run)"
        return line
    line = f"{source['state']} ({printable(str(source.get('reason') or 'cannot be read'))})"
    if last_state == "ok" and isinstance(files, int):
        line += f"; ok at the last run, {files} {_files(files)}"
    elif last_state not in (None, source["state"]):
        line += f"; {last_state} at the last run"
    return line


@cli.command()
@_config_option
@click.option(
    "--to",
    "to_url",
    metavar="URL",
    default=None,
    help="Copy the configured SQLite store into the empty PostgreSQL database at URL instead.",
)
def migrate(config_path: Path | None, to_url: str | None) -> None:
    """Create or upgrade the database schema to this feedworker's, then exit.

    Waits for a running cycle (it takes the cycle lock). A run does the same on its own:
    this is for upgrading at a chosen time, e.g. before starting a new version's `serve`.
    With --to URL: copy the store (an SQLite one, at this schema) into the empty PostgreSQL
    database at URL instead, then switch `database:` to URL.
    """
    from worker.store.db import migrate_database
    from worker.store.errors import StoreError
    from worker.store.version import version_of

    config = _load(config_path)
    if to_url is not None:
        _copy_store(config, to_url)
        return

    def waiting() -> None:
        click.echo("feedworker: another cycle is running on this database; waiting for it to finish", err=True)

    try:
        before, after = migrate_database(config.database_url, busy_timeout_s=config.busy_timeout_s, on_wait=waiting)
    except StoreError as exc:
        raise click.ClickException(printable(" ".join(str(exc).split()))) from None
    now = f"version {version_of(after)} ({after})"
    if before is None:
        click.echo(f"schema created: {now}")
    elif before == after:
        click.echo(f"schema already at {now}: nothing to do")
    else:
        click.echo(f"schema upgraded from version {version_of(before)} ({before}) to {now}")


# The tables `migrate --to` names in its line, with the noun of one row.
_COPIED = (("article", "article"), ("source_file", "file"), ("topic", "topic"), ("page", "page"), ("run", "run"))


def _written_feeds(folder: Path) -> Iterator[tuple[str, bytes, datetime]]:
    """The feed files in the feeds folder (path below it, bytes, mtime), read one at a time:
    regular files only (a symlink is not followed), well-formed ones only. Which of them are
    feedworker's own (its topics' slugs) the copy decides."""
    import stat

    from worker.publish.writer import MalformedDocument, check_document, feed_files

    listed = feed_files(folder)
    topics = (f"topics/{name}" for name in sorted(listed.topics))
    for path in [*sorted(listed.index), *topics, *sorted(listed.archives)]:
        try:
            fd = os.open(folder / path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # gone meanwhile, or a symlink: the first cycle on the copy renders it
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode):
                continue
            body = handle.read()
        try:
            check_document(path, body)
        except MalformedDocument:
            continue
        yield path, body, datetime.fromtimestamp(st.st_mtime, UTC)


def _copy_store(config: Config, to_url: str) -> None:
    """`migrate --to URL`: the configured store copied into the database at URL, one line."""
    from worker.store.errors import StoreError
    from worker.store.transfer import copy_store, shown_url

    def waiting(database: str) -> None:
        click.echo(f"feedworker: a cycle is running on {database}; waiting for it to finish", err=True)

    try:
        copied = copy_store(
            config.database_url,
            to_url,
            busy_timeout_s=config.busy_timeout_s,
            on_wait=waiting,
            feeds=_written_feeds(config.feeds.dir),
        )
    except StoreError as exc:
        raise click.ClickException(printable(" ".join(str(exc).split()))) from None
    counts = ", ".join(
        f"{copied.get(table, 0)} {noun if copied.get(table, 0) == 1 else noun + 's'}" for table, noun in _COPIED
    )
    click.echo(f"copied {counts} to {printable(shown_url(to_url))}")


@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@_config_option
def check(files: tuple[Path, ...], config_path: Path | None) -> None:
    """Validate article files without storing anything; exit 1 if any is invalid."""
    from worker.ingest.frontmatter import ArticleError, ParseLimits, parse_article
    from worker.ingest.read import NotReadable, read_regular_file

    limits = ParseLimits()
    max_bytes = _DEFAULT_MAX_BYTES
    if config_path is not None or default_config_path().exists():
        config = _load(config_path)
        limits = _limits(config)
        max_bytes = max((source.max_bytes for source in config.sources), default=max_bytes)
    invalid = 0
    for path in files:
        shown = printable(str(path))
        try:
            data, _ = read_regular_file(str(path), max_bytes)
            if len(data) > max_bytes:
                raise NotReadable(f"larger than max_bytes ({max_bytes} bytes)")
            article = parse_article(data, str(path), limits)
        except ArticleError as exc:
            click.echo(f"{shown}: {printable(exc.detail)}")
            invalid += 1
            continue
        except NotReadable as exc:
            click.echo(f"{shown}: cannot be read: {exc}")
            invalid += 1
            continue
        except OSError as exc:
            click.echo(f"{shown}: cannot be read: {exc.strerror or exc}")
            invalid += 1
            continue
        click.echo(f"{shown}: {_valid(article)}")
        for warning in article.warnings:
            click.echo(f"{shown}: warning: {printable(warning)}")
    if invalid:
        click.echo(f"{invalid} of {len(files)} {_files(len(files))} invalid", err=True)
        sys.exit(1)
    click.echo(f"{len(files)} {_files(len(files))} valid", err=True)


_DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # sources[].max_bytes when check runs without a config


def _valid(article: Any) -> str:
    """What a valid file becomes: `valid`, or valid and where it will (not) be shown."""
    if not article.is_published:
        return "valid (draft: in no feed)"
    if not article.topics:
        return "valid (no topics: in the all-articles feeds only)"
    return "valid"


def _files(count: int) -> str:
    return "file" if count == 1 else "files"


def _limits(config: Config) -> Any:
    from worker.pipeline import parse_limits

    return parse_limits(config)


@cli.command()
@_config_option
def serve(config_path: Path | None) -> None:
    """Run the scheduler and the HTTP server until SIGTERM or SIGINT (SIGHUP re-reads the config)."""
    from worker.service.app import ServiceError
    from worker.service.app import serve as run_service

    config = _load(config_path)
    try:
        code = run_service(config, _clock() if os.environ.get("FEEDWORKER_CLOCK") else None)
    except ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@cli.command()
@_config_option
@click.option("--wait", is_flag=True, help="Wait until that run has finished; exit 1 if it failed.")
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=None,
    metavar="SECONDS",
    help="With --wait: give up after SECONDS (default: wait for as long as the run takes).",
)
def trigger(config_path: Path | None, wait: bool, timeout_s: float | None) -> None:
    """Ask a running `feedworker serve` for a run now."""
    from worker.service.client import TriggerError, request_run, wait_for_run

    config = _load(config_path)
    try:
        accepted = request_run(config)
        run_id = accepted["run_id"]
        if not wait:
            click.echo(f"run {run_id} {accepted['status']}")
            return
        result = wait_for_run(config, run_id, timeout_s=timeout_s)
    except TriggerError as exc:
        raise click.ClickException(str(exc)) from None
    report = result.get("report") or {}
    if result["status"] != "ok":
        click.echo(f"run {run_id} {result['status']}: {result.get('message') or 'see the server log'}", err=True)
        sys.exit(1)
    files, articles = report.get("files", {}), report.get("articles", {})
    from worker.report import unreadable_sources

    sources = report.get("sources") or []
    click.echo(
        f"run {run_id} ok: {files.get('seen', 0)} files ({files.get('new', 0)} new, {files.get('changed', 0)} "
        f"changed, {files.get('deleted', 0)} deleted, {files.get('quarantined', 0)} quarantined); "
        f"{articles.get('published', 0)} of {articles.get('total', 0)} articles published "
        f"in {report.get('duration_s', 0):.2f}s"
        + _unreadable_note(sources, unreadable_sources(sources, report.get("errors") or []))
    )


def main() -> None:
    cli(prog_name="feedworker")
