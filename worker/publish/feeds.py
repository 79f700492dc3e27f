"""Decide which feeds to render, read their entries from the store, and write the files."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Executor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, uuid5

import structlog
from sqlalchemy.engine import Connection, Engine, Row

from worker.model import FEED_FORMATS, FeedCounts, FeedFiles, FeedSettings, StoredEntry
from worker.publish._memo import SegmentedMemo
from worker.publish.history import FeedHistory, archive_page_count, archive_pages, archive_path
from worker.publish.links import related_links
from worker.publish.settings import feeds_fingerprint, fingerprint
from worker.publish.writer import check_document, feed_files, remove_feed, remove_temp_files, write_if_changed
from worker.store import documents as document_store
from worker.store import feeds as feed_store
from worker.store import keys
from worker.store import meta as meta_store
from worker.store import related as graph_store
from worker.store import topics as topic_store
from worker.store.db import transaction
from worker.store.errors import StoreError
from worker.text import topic_label
from worker.urls import entry_id

if TYPE_CHECKING:  # the renderer (feedgen, lxml, nh3) is imported only when a feed is rendered
    from worker.publish.render import Entry, FeedInfo

__all__ = ["cycle_at", "feed_entries", "publish", "stored_window", "topic_feed_name", "warm_entries"]

log = structlog.get_logger("worker.publish")


@dataclass(frozen=True, slots=True)
class _FeedJob:
    stem: str  # "topics/<slug>" or "all"
    topic_id: int | None  # None: the all feed
    title: str
    subtitle: str
    window: str | None  # the fingerprint of its entries when last written; None: render regardless
    stored: str | None = None  # that fingerprint as stored, also when rendered regardless
    changed_at: datetime | None = None  # when its entries last changed, as stored
    # A topic feed's archive pages (publish.history): each stored page's window by number, and
    # which page files are there; rendered regardless when `window` is None.
    pages: tuple[tuple[int, str], ...] = ()
    pages_present: frozenset[int] = frozenset()
    first: bool = False  # a topic whose own articles changed (publish's `first`): its Atom before others' formats


# An entry's rendering changes only with its article's updated_at (related links and fetched
# pages move it too), so a dirty topic whose window (keys.FEED_WINDOW) is the same needs no
# rendering. An archived entry (an archive page's) shows no reverse links: the articles
# linking to it keep coming, and RFC 5005 asks archive documents not to change. It changes
# only with `content_at`, which they do not move (store.related).


# From this many feeds to render (a first run, new settings) a second process renders half.
PARALLEL_FROM = 16


def publish(
    engine: Engine,
    settings: FeedSettings,
    now: datetime,
    *,
    on_disk: FeedFiles | None = None,
    helper: Callable[[], AbstractContextManager[Executor]] | None = None,
    to_store: bool = False,
    fence: int | None = None,
    changed: list[str] | None = None,
    first: Collection[int] = (),
    clock_stalled: bool = False,
) -> FeedCounts:
    """Render the feeds whose entries changed (or whose files are missing); leave the rest alone.

    `on_disk`: the feed files the cycle planned with (the folder is listed when not given;
    a file missing there is due whatever the store says). `helper` makes a one-process
    executor: when many feeds are due, it renders half of them (it opens the database
    itself) while this process renders the other half.

    `changed` is given the paths of the feeds whose bytes changed (for WebSub hubs).

    `first`: the topics whose own articles changed (not only their neighbours' related
    links). Their feeds are rendered first, then the all feed, then the other topics' feeds,
    and every archive page after every current feed: a reader (and `serve`'s watcher) waits
    for the feeds that show the change.

    `clock_stalled`: an earlier cycle ran at `now` or later (FEEDWORKER_CLOCK pinned, a clock
    set back), so a change may have left an article's `updated_at` and `content_at` as they
    were: the feeds and pages of the dirty topics are rendered regardless (and written only
    where their bytes changed).

    `to_store` (several replicas on PostgreSQL): the feeds are documents in the store, which
    every replica serves; `on_disk` then lists the stored ones, the counts are of documents,
    and the feeds folder is a copy brought up to date at the end (`fence`: the cycle lock's
    token, for the helper process's writes).
    """
    stats = FeedCounts()
    topics_dir = settings.dir / "topics"
    if on_disk is None or on_disk.temp_left or to_store:
        remove_temp_files(settings.dir)
    if on_disk is None:
        on_disk = _stored_feeds(engine) if to_store else feed_files(settings.dir)
    with engine.connect() as conn:
        visible = topic_store.published_topics(conn)
        known_slugs = topic_store.topic_slugs(conn)
        dirty = {row.id for row in topic_store.dirty_topics(conn)}
        all_dirty = topic_store.all_feed_dirty(conn)
        rendered_with = meta_store.meta_value(conn, keys.FEED_SETTINGS)
        settings_changed = rendered_with != fingerprint(settings)
        # The index's own settings (its format) come last: a change of them alone renders the index alone.
        feeds_changed = settings_changed and (rendered_with or "").rpartition("|")[0] != feeds_fingerprint(settings)
        stored = {
            key.removeprefix(keys.FEED_WINDOW): _stored_window(value)
            for key, value in meta_store.meta_values(conn, keys.FEED_WINDOW).items()
        }
    if feeds_changed:  # a new base URL, title, entry count or renderer: every feed again
        dirty |= {row.id for row in visible}
        all_dirty = True
    visible_slugs = {row.slug for row in visible}
    missing = {row.id for row in visible if any(f"{row.slug}.{kind}" not in on_disk.topics for kind in FEED_FORMATS)}
    # On a shared store, also the pages it keeps that the folder lacks (a cycle killed after
    # storing a page and before noting it): they are tidied as the folder's are.
    pages = _archive_pages(stored, on_disk, _stored_feeds(engine).archives if to_store else frozenset())
    # A page missing, or one there that no cycle wrote: the topic is rendered (and tidied) again.
    missing |= {
        row.id
        for row in visible
        if any(not (present and window) for window, present in pages.get(row.slug, {}).values())
    }
    dirty |= missing
    all_missing = any(f"all.{kind}" not in on_disk.index for kind in FEED_FORMATS)
    all_dirty = all_dirty or all_missing

    jobs = []
    for row in sorted(visible, key=lambda row: row.id not in first):  # stable: the store's order within each
        if row.id in dirty:
            name = _topic_name(row.name, row.slug)
            stem = f"topics/{row.slug}"
            window, changed_at = stored.get(stem, (None, None))
            topic_pages = pages.get(row.slug, {})
            jobs.append(
                _FeedJob(
                    stem,
                    row.id,
                    f"{settings.title}: {name}",
                    f"Articles about {name}",
                    window if row.id not in missing and not feeds_changed and not clock_stalled else None,
                    window,
                    changed_at,
                    tuple(sorted((number, page_window) for number, (page_window, _) in topic_pages.items())),
                    frozenset(number for number, (_, present) in topic_pages.items() if present),
                    row.id in first,
                )
            )
    if all_dirty:
        window, changed_at = stored.get("all", (None, None))
        forced = all_missing or feeds_changed or clock_stalled
        title, subtitle = settings.title, "Every published article"
        jobs.insert(
            sum(job.topic_id in first for job in jobs),
            _FeedJob("all", None, title, subtitle, None if forced else window, window, changed_at),
        )
    if helper is not None and len(jobs) >= PARALLEL_FROM:
        # A few first feeds stay here, rendered while the helper process starts (about a
        # second); when most are first (a first run), the feeds are shared out evenly.
        urgent = sum(job.topic_id in first or job.topic_id is None for job in jobs) if first else 0
        if urgent > len(jobs) // 2:
            urgent = 0
        mine, rest = jobs[:urgent], jobs[urgent:]
        with helper() as executor:
            url = engine.url.render_as_string(hide_password=False)  # str() would mask a password
            theirs = executor.submit(render_feeds_of, url, settings, now, rest[1::2], to_store, fence)
            outcomes = _render_jobs(engine, settings, now, mine + rest[0::2], to_store) + theirs.result()
    else:
        outcomes = _render_jobs(engine, settings, now, jobs, to_store)
    for stem, window, written in outcomes:  # in the order they were written
        if stem.startswith("pages:"):
            continue
        if written is None:
            # The same entries as when last written: not rendered (an archive page is one document).
            stats.unchanged += 1 if stem.startswith("archive/") else len(FEED_FORMATS)
            continue
        for path, was_written in written:
            _count(was_written, path, stats)
            if was_written and changed is not None:
                changed.append(path)
    page_counts = {stem: int(window) for stem, window, written in outcomes if stem.startswith("pages:")}
    stale_pages = _stale_pages(pages, page_counts, visible_slugs, known_slugs)
    # Only feeds of topics it knows are feedworker's: a file someone else put there stays.
    gone = []
    # What may have to go: the folder's topic feeds, and on a shared store its documents too.
    listed = on_disk.topics | (_stored_feeds(engine).topics if to_store else frozenset())
    for name in sorted(listed):
        slug, _, suffix = name.rpartition(".")
        ours = slug in known_slugs and suffix in FEED_FORMATS
        if ours and slug not in visible_slugs:
            gone.append(f"topics/{name}")
            if remove_feed(topics_dir / name) and not to_store:
                stats.removed += 1
                log.info("feed.removed", feed=f"topics/{name}")
    for path in stale_pages:
        gone.append(path)
        if remove_feed(settings.dir / path) and not to_store:
            stats.removed += 1
            log.info("feed.removed", feed=path)
    if to_store and gone:
        with transaction(engine) as conn:
            stats.removed += document_store.remove_documents(conn, gone)
        for path in gone:
            log.info("feed.removed", feed=path)
    # Rendered at every working cycle and compared (a few topics' lines): a cycle killed between a
    # new topic's feeds and the index would otherwise leave that topic out of it for good. Counted
    # as unchanged only where something could have changed it (the report of a cycle that
    # changed nothing stays the idle cycle's).
    due = bool(stats.written or stats.removed or settings_changed or "index.opml" not in on_disk.index)
    _write_index(engine, settings, visible, stats, to_store, now, count_unchanged=due)
    from worker.publish.site import write_page

    # The feeds page (index.html): its counts and headlines change only with a feed's entries, so
    # it is rendered when a feed was due (a topic left dirty by a cycle killed before the page is
    # due again), one went, the settings changed or the page is missing. A page, not counted
    # among the feeds.
    if jobs or gone or settings_changed or "index.html" not in on_disk.index:
        put = (lambda docs: _put(engine, settings.dir, docs, now)) if to_store else None
        write_page(engine, settings, visible, put=put)
    if to_store:
        _copy_to_folder(engine, settings.dir)
    with transaction(engine) as conn:
        topic_store.clear_dirty(conn, dirty, all_feed=all_dirty)
        for stem, window, written in outcomes:
            if written is not None:
                meta_store.set_meta_value(conn, keys.FEED_WINDOW + stem, window)
        meta_store.delete_meta_values(conn, [keys.FEED_WINDOW + path.removesuffix(".atom") for path in stale_pages])
        if settings_changed:
            meta_store.set_meta_value(conn, keys.FEED_SETTINGS, fingerprint(settings))
    return stats


def _archive_pages(
    stored: dict[str, tuple[str, datetime | None]], on_disk: FeedFiles, kept: frozenset[str] = frozenset()
) -> dict[str, dict[int, tuple[str, bool]]]:
    """Every archive page the store has a window for, or the folder a file of: by topic slug,
    by number, (its stored window, "" when none; whether its document is there)."""
    pages: dict[str, dict[int, tuple[str, bool]]] = {}
    for stem, (window, _) in stored.items():
        place = _page_of(stem + ".atom")
        if place is not None:
            pages.setdefault(place[0], {})[place[1]] = (window, stem + ".atom" in on_disk.archives)
    for path in on_disk.archives | kept:
        place = _page_of(path)
        if place is not None and place[1] not in pages.get(place[0], {}):
            pages.setdefault(place[0], {})[place[1]] = ("", True)
    return pages


def _page_of(path: str) -> tuple[str, int] | None:
    """(slug, number) of an archive page's path (history.archive_path); None for anything else."""
    parts = path.split("/")
    if len(parts) != 3 or parts[0] != "archive" or not parts[2].endswith(".atom"):
        return None
    number = parts[2].removesuffix(".atom")
    if not number.isascii() or not number.isdigit() or number.startswith("0"):
        return None
    return parts[1], int(number)


def _stale_pages(
    pages: dict[str, dict[int, tuple[str, bool]]],
    page_counts: dict[str, int],
    visible: set[str],
    known: set[str],
) -> list[str]:
    """The archive pages to remove: past a rendered topic's last page, or of a known topic no
    longer shown (a folder someone else made under archive/ is left alone)."""
    stale = []
    for slug, numbers in sorted(pages.items()):
        if slug not in known:
            continue
        keep = 0 if slug not in visible else page_counts.get(f"pages:{slug}")
        if keep is None:
            continue  # not rendered this cycle: its pages stand
        stale += [archive_path(slug, number) for number in sorted(numbers) if number > keep]
    return stale


def _stored_window(value: str) -> tuple[str, datetime | None]:
    """keys.FEED_WINDOW's value: the fingerprint, and when the entries last changed."""
    window, _, changed = value.partition("|")
    try:
        return window, datetime.fromisoformat(changed) if changed else None
    except ValueError:
        return window, None


def render_feeds_of(
    database_url: str,
    settings: FeedSettings,
    now: datetime,
    jobs: list[_FeedJob],
    to_store: bool = False,
    fence: int | None = None,
) -> list[Any]:
    """Render and write these feeds from the database at `database_url` (in a helper process)."""
    from worker.store.db import connect

    engine = connect(database_url)
    if fence is not None:
        from worker.store.postgres import fence_writes

        fence_writes(engine, fence)
    try:
        return _render_jobs(engine, settings, now, jobs, to_store)
    finally:
        engine.dispose()


def _stored_feeds(engine: Engine) -> FeedFiles:
    with engine.connect() as conn:
        return document_store.as_feed_files(document_store.listing(conn))


def _put(engine: Engine, folder: Path, documents: list[tuple[str, bytes]], now: datetime) -> list[bool]:
    """Store feed documents (checked first, as files are), then write their copies in the feeds
    folder; whether each document changed."""
    for path, body in documents:
        check_document(path, body)
    with transaction(engine) as conn:
        # Stamped when stored, not with the cycle's time: Last-Modified names one version (a
        # second cycle within the same second gets a later stamp, as a rewritten file would).
        written = document_store.put_documents(conn, documents, datetime.now(UTC))
    for path, body in documents:
        write_if_changed(folder / path, body)
    return written


def _copy_to_folder(engine: Engine, folder: Path) -> None:
    """The stored feeds into the feeds folder where a file is missing, or older than the bytes
    another replica stored: the folder follows the store, never the other way."""
    with engine.connect() as conn:
        stored = document_store.listing(conn)
        stale = [path for path, (_, modified_at) in sorted(stored.items()) if _older(folder / path, modified_at)]
        if not stale:
            return
        for path, body in document_store.bodies(conn, stale).items():
            write_if_changed(folder / path, body)


def _older(path: Path, modified_at: datetime) -> bool:
    try:
        return path.stat().st_mtime < modified_at.timestamp()
    except OSError:
        return True


# stem, window, (path, written) of each document; None: not rendered. ("pages:<slug>", its number
# of archive pages, None) tells how many pages a rendered topic has now.
_Outcome = tuple[str, str, tuple[tuple[str, bool], ...] | None]


def _render_jobs(
    engine: Engine, settings: FeedSettings, now: datetime, jobs: list[_FeedJob], to_store: bool = False
) -> list[_Outcome]:
    """Render each job's feed pair, unless its window is unchanged, and write what changed."""
    outcomes: list[_Outcome] = []
    pages_due: list[_PageTask] = []
    with_pages: list[tuple[_FeedJob, str, int, int]] = []
    # The first topics' other formats, rendered once every first topic's Atom is out (the
    # format `index.opml` subscribes to by default): _write_feed's arguments of each.
    later: list[tuple[_FeedJob, FeedInfo, list[Entry], datetime, str]] = []
    with engine.connect() as conn:
        for job in jobs:
            if later and not job.first:
                outcomes += [_write_feed(engine, settings, now, to_store, *feed, _OTHER_FORMATS) for feed in later]
                later.clear()
            size = settings.max_entries
            entries = feed_store.feed_window(conn, job.topic_id, size + 1)
            complete, entries = len(entries) <= size, entries[:size]
            pages, slug = 0, ""
            if job.topic_id is not None:
                total = 0
                if not complete:
                    total, cuts, newest = feed_store.topic_cuts(conn, job.topic_id, size, size + 1)
                    pages = archive_page_count(total, cuts, newest, size)
                slug = job.stem.removeprefix("topics/")
                outcomes.append((f"pages:{slug}", str(pages), None))
                with_pages.append((job, slug, pages, total - size))
            window = hashlib.blake2b(repr((entries, complete, pages)).encode(), digest_size=16).hexdigest()
            if window == job.window:
                outcomes.append((job.stem, window, None))
                continue
            history = FeedHistory(
                complete=complete,
                prev_archive_url=_url(settings, archive_path(slug, pages)) if pages else None,
            )
            info = _feed_info(settings, job.stem, job.title, job.subtitle, history)
            # A feed's own time is when its entries last changed (one added, changed, removed or
            # reordered), never when it was built: rendered again for other reasons, it keeps it.
            changed_at = job.changed_at if job.stored == window and job.changed_at is not None else now
            feed = (job, info, _entries(conn, entries, keep=True), changed_at, f"{window}|{changed_at.isoformat()}")
            if job.first:
                outcomes.append(_write_feed(engine, settings, now, to_store, *feed, ("atom",)))
                later.append(feed)
            else:
                outcomes.append(_write_feed(engine, settings, now, to_store, *feed, FEED_FORMATS))
        outcomes += [_write_feed(engine, settings, now, to_store, *feed, _OTHER_FORMATS) for feed in later]
        # The archive pages after every current feed: readers (and `serve`'s watcher's latency)
        # wait for the current feeds; a topic's pages take a read of its whole history.
        for job, slug, pages, archived in with_pages:
            outcomes += _archive_pages_due(conn, settings, job, slug, pages, archived, pages_due)
        # The pages of every topic in the order of the weeks they cover: a page shares its
        # articles with other topics' pages of the same weeks, which then find them cached.
        for task in sorted(pages_due):
            outcomes.append(_render_page(engine, conn, settings, task, to_store, now))
    return outcomes


_OTHER_FORMATS = tuple(kind for kind in FEED_FORMATS if kind != "atom")


def _write_feed(
    engine: Engine,
    settings: FeedSettings,
    now: datetime,
    to_store: bool,
    job: _FeedJob,
    info: FeedInfo,
    entries: list[Entry],
    changed_at: datetime,
    window: str,
    formats: Sequence[str],
) -> _Outcome:
    """Render and write a current feed in these formats."""
    from worker.publish.render import render_feeds

    kinds = [kind for kind in FEED_FORMATS if kind in formats]
    bodies = render_feeds(info, entries, changed_at, kinds)
    documents = [(f"{job.stem}.{kind}", body) for kind, body in zip(kinds, bodies, strict=True)]
    return job.stem, window, _write(engine, settings.dir, documents, to_store, now)


def _write(
    engine: Engine, folder: Path, documents: list[tuple[str, bytes]], to_store: bool, now: datetime
) -> tuple[tuple[str, bool], ...]:
    if to_store:
        written = _put(engine, folder, documents, now)
    else:
        written = [write_if_changed(folder / path, body) for path, body in documents]
    return tuple((path, was_written) for (path, _), was_written in zip(documents, written, strict=True))


@dataclass(frozen=True, order=True)
class _PageTask:
    """An archive page to render: ordered by the newest publication time it covers."""

    newest: datetime
    slug: str
    number: int
    window: str = field(compare=False)
    rows: tuple[tuple[int, datetime], ...] = field(compare=False)  # (id, content_at), newest first
    job: _FeedJob = field(compare=False)


def _archive_pages_due(
    conn: Connection,
    settings: FeedSettings,
    job: _FeedJob,
    slug: str,
    pages: int,
    archived: int,
    due: list[_PageTask],
) -> list[_Outcome]:
    """The topic's archive pages (publish.history) of its `archived` oldest entries: each one
    whose entries changed, whose document is missing, or that is rendered regardless goes to
    `due`; the others' outcomes."""
    if not pages:
        return []
    size = settings.max_entries
    # Every entry (archive_pages leaves out the current feed's): the pages as archive_pages
    # cuts them, as many as archive_page_count counted from the feed index.
    history = feed_store.topic_history(conn, job.topic_id or 0, archived + size)
    bounds = archive_pages([row[3] for row in history], size)
    if len(bounds) != pages:  # two reads under the cycle lock disagree: never written over, say so
        raise StoreError(f"topic {slug}: {len(bounds)} archive pages, {pages} counted")
    stored = dict(job.pages)
    outcomes: list[_Outcome] = []
    for number, (start, stop) in enumerate(bounds, start=1):
        rows = history[start:stop]
        window = _page_window([row[:2] for row in rows])
        if job.window is not None and stored.get(number) == window and number in job.pages_present:
            outcomes.append((archive_path(slug, number).removesuffix(".atom"), window, None))
            continue
        shown = tuple((article_id, updated) for article_id, updated, _, _ in reversed(rows))
        due.append(_PageTask(rows[-1][2], slug, number, window, shown, job))
    return outcomes


def _render_page(
    engine: Engine,
    conn: Connection,
    settings: FeedSettings,
    task: _PageTask,
    to_store: bool,
    now: datetime,
) -> _Outcome:
    """Render and write one archive page (fh:archive, linked to its neighbours and the current
    feed); a page that only gained newer entries is its document extended (the newest page, as
    articles leave the current feed), the others rendered whole."""
    from worker.publish.render import archive_updated, extend_archive, render_archive

    job, slug, number = task.job, task.slug, task.number
    path = archive_path(slug, number)
    stem = path.removesuffix(".atom")
    kept = _kept_entries(conn, settings, task, to_store)
    entries = _entries(conn, task.rows[: len(task.rows) - kept[0]] if kept else task.rows, keep=False, archived=True)
    info = _feed_info(
        settings,
        stem,
        f"{job.title} (archive {number})",
        job.subtitle,
        FeedHistory(
            archive=True,
            current_url=_url(settings, f"{job.stem}.atom"),
            prev_archive_url=_url(settings, archive_path(slug, number - 1)) if number > 1 else None,
            # Named before it exists: a page's bytes never depend on how many pages follow it.
            next_archive_url=_url(settings, archive_path(slug, number + 1)),
        ),
        self_url=_url(settings, path),
    )
    # Its own time is its newest entry's: the same entries, the same bytes, in any store.
    updated = max(entry.updated for entry in entries)
    body = None
    if kept:
        before = archive_updated(kept[1])
        if before is not None:
            body = extend_archive(kept[1], render_archive(info, entries, max(updated, before)))
    if body is None:
        entries = _entries(conn, task.rows, keep=False, archived=True) if kept else entries
        body = render_archive(info, entries, max(entry.updated for entry in entries))
    return stem, task.window, _write(engine, settings.dir, [(path, body)], to_store, now)


def _page_window(rows: Sequence[tuple[int, datetime]]) -> str:
    """The fingerprint of an archive page's entries, (id, content_at) oldest first."""
    return hashlib.blake2b(repr(list(rows)).encode(), digest_size=16).hexdigest()


def _kept_entries(
    conn: Connection, settings: FeedSettings, task: _PageTask, to_store: bool
) -> tuple[int, bytes] | None:
    """When the page's document holds its entries but for some newer ones (the stored window is
    that of the page's oldest entries, the settings are those it was rendered with, and the
    document holds those entries: not a page a cycle killed before noting its window had
    written already): how many it holds, and its bytes. None otherwise."""
    stored = dict(task.job.pages).get(task.number)
    if task.job.window is None or stored is None or task.number not in task.job.pages_present:
        return None
    # _page_window of each prefix of the rows (oldest first), in one pass: "[" row ", " row ... "]".
    held, digest = None, hashlib.blake2b(b"[", digest_size=16)
    for n, row in enumerate(reversed(task.rows[1:]), start=1):
        digest.update((", " if n > 1 else "").encode() + repr(row).encode())
        ended = digest.copy()
        ended.update(b"]")
        if ended.hexdigest() == stored:
            held = n
    if held is None:
        return None
    path = archive_path(task.slug, task.number)
    if to_store:
        body = document_store.bodies(conn, [path]).get(path)
    else:
        try:
            body = (settings.dir / path).read_bytes()
        except OSError:
            body = None
    if body is None:
        return None
    oldest = [article_id for article_id, _ in reversed(task.rows)][:held]
    known = feed_store.entry_ids(conn, oldest)
    if _ENTRY_IDS.findall(body) != [known.get(article_id, "").encode() for article_id in reversed(oldest)]:
        return None
    return held, body


# An entry's id in render_archive's pretty-printed Atom: the first element of each entry.
_ENTRY_IDS = re.compile(rb"\n  <entry>\n    <id>([^<]*)</id>")


def _write_index(
    engine: Engine,
    settings: FeedSettings,
    visible: Sequence[Row[int, str, str]],
    stats: FeedCounts,
    to_store: bool,
    now: datetime,
    *,
    count_unchanged: bool = True,
) -> None:
    """index.opml: each topic feed once, in the format of `opml_format`. Not the all feed: a
    reader importing both would get every article twice (it is subscribed to on its own),
    unless there is no topic feed at all: then it is the one feed listed (OPML wants one)."""
    from worker.publish.render import FeedLink, render_opml

    suffix = settings.opml_format
    links = [
        FeedLink(_topic_name(row.name, row.slug), _url(settings, f"topics/{row.slug}.{suffix}")) for row in visible
    ]
    if not links:
        links = [FeedLink(settings.title, _url(settings, f"all.{suffix}"))]
    body = render_opml(settings.title, links)
    if to_store:
        (written,) = _put(engine, settings.dir, [("index.opml", body)], now)
    else:
        written = write_if_changed(settings.dir / "index.opml", body)
    if written or count_unchanged:
        _count(written, "index.opml", stats)


def _count(written: bool, name: str, stats: FeedCounts) -> None:
    if written:
        stats.written += 1
        log.info("feed.written", feed=name)
    else:
        stats.unchanged += 1


def _entries(
    conn: Connection, rows: Sequence[tuple[int, datetime]], *, keep: bool, archived: bool = False
) -> list[Entry]:
    """The entries of these (article id, updated_at) rows, in this order: built already in this
    process for that version of the article, or read and built now. `keep`: a current feed's,
    kept before archive pages' (publish._memo). `archived`: as archive pages show them, rows
    of (article id, content_at)."""
    store = _store_key(conn)
    found = {article_id: _ENTRIES.get((store, article_id, at, archived), keep=keep) for article_id, at in rows}
    if archived:  # an entry no article links back to is its archived one (an entry leaving the current feeds)
        for article_id, at in rows:
            if found[article_id] is None:
                current = _ENTRIES.get((store, article_id, at, False), keep=False)
                found[article_id] = current if current is not None and not current.links_back else None
    missing = [article_id for article_id, entry in found.items() if entry is None]
    if missing:
        loaded = feed_store.articles_by_ids(conn, missing)
        # The related graph of the whole batch at once: a few queries, not a few per entry.
        graph = graph_store.load_graph(
            conn,
            () if archived else {stored.article.url for stored in loaded.values()},
            {item.url for stored in loaded.values() for item in stored.related},
        )
        for article_id, stored in loaded.items():
            found[article_id] = entry = _entry(stored, graph, archived=archived)
            at = stored.article.content_at if archived else stored.article.updated_at
            _ENTRIES.put((store, article_id, at, archived), entry, keep=keep)
    return [entry for entry in (found[article_id] for article_id, _ in rows) if entry is not None]


def warm_entries(engine: Engine, settings: FeedSettings, should_stop: Callable[[], bool]) -> int:
    """Build the entries of every current feed into this process's memos, the all feed's
    first, without rendering or writing anything: `serve`, watching, does it once after its
    first cycle, so that the first change of a topic renders its feed as fast as the next
    (a feed of 50 entries to build is some 100 ms at 50,000 articles, of 50 built 25 ms).
    Stops as soon as `should_stop` says so (a change waits for no warming); the feeds warmed."""
    from worker.publish.render import build_entries

    with engine.connect() as conn:
        topic_ids: list[int | None] = [None, *(row.id for row in topic_store.published_topics(conn))]
        for warmed, topic_id in enumerate(topic_ids):
            if should_stop():
                return warmed
            rows = feed_store.feed_window(conn, topic_id, settings.max_entries)
            build_entries(_entries(conn, rows, keep=True), full_content=settings.content == "full")
    return len(topic_ids)


# For publish.query (feeds of a query over topics, rendered by `serve`): what renders the stored feeds.
def feed_entries(conn: Connection, rows: Sequence[tuple[int, datetime]]) -> list[Entry]:
    """The entries of these (article id, updated_at) rows, in this order, exactly as every
    stored feed renders them."""
    return _entries(conn, rows, keep=False)


def stored_window(value: str) -> tuple[str, datetime | None]:
    """A keys.FEED_WINDOW value: the window's fingerprint, and when the feed's entries last changed."""
    return _stored_window(value)


def topic_feed_name(name: str, slug: str) -> str:
    """A topic as its feed's title names it."""
    return _topic_name(name, slug)


# Entries built in this process, by store, article id and the article's `updated_at`:
# whatever an entry shows (its content, topics, image, related links, the articles linking
# to it, fetched pages) moves `updated_at` when it changes (store.articles, store.related),
# the rule that already spares a feed whose window is the same. A cycle renders again a
# feed or a page for one changed entry; the others come from here, unread.
ENTRIES_KEPT = 4_000  # the current feeds' (60 topics of 50 entries, and the all feed)
ENTRIES_PASSING = 2_000  # archive pages', shared by other topics' pages of the same weeks
_ENTRIES: SegmentedMemo[tuple[str, int, datetime, bool], Entry] = SegmentedMemo(ENTRIES_KEPT, ENTRIES_PASSING)


_CYCLES_LOCK = threading.Lock()
_CYCLE_TIMES: dict[str, datetime] = {}  # store -> the time of this process's last cycle on it
_GENERATIONS: dict[str, int] = {}  # store -> how many times its entries were given up


def cycle_at(engine: Engine, now: datetime) -> None:
    """A cycle of this process starts at `now` on this store. Entries are kept by article
    version (`updated_at`), which every change moves as long as time moves: a cycle at a
    time not after the last one's (FEEDWORKER_CLOCK pinned, a clock set back) may write an
    article at the very time an entry was built for, so none built before is used again."""
    store = _url_key(engine)
    with _CYCLES_LOCK:
        last = _CYCLE_TIMES.get(store)
        _CYCLE_TIMES[store] = now
        if last is not None and now <= last:
            _GENERATIONS[store] = _GENERATIONS.get(store, 0) + 1


def _store_key(conn: Connection) -> str:
    """Which store (and which generation of its entries, cycle_at) an entry was read from:
    a process may publish more than one store (tests)."""
    store = _url_key(conn.engine)
    with _CYCLES_LOCK:
        return f"{store}#{_GENERATIONS.get(store, 0)}"


def _url_key(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _entry(stored: StoredEntry, graph: graph_store.Graph, *, archived: bool = False) -> Entry:
    """An article's entry; `archived`, as archive pages show it: no reverse links, and updated
    when its `content_at` moved."""
    from worker.publish.render import Entry
    from worker.publish.sanitize import article_html, plain_text

    article = stored.article
    title = plain_text(article.title) or article.web_url
    summary = plain_text(article.excerpt or "") or title
    linking = () if archived else graph.linking.get(article.url, ())
    related = related_links(article.url, stored.related, linking, graph.stored, graph.pages, clean=plain_text)
    image = stored.image
    provider = article.provider_name or article.provider_domain
    # Shown as Atom author and RSS dc:creator, which readers may take for HTML: a label, like a topic.
    provider_label = topic_label(provider) if provider else ""
    content_html, has_body = article_html(
        excerpt=article.excerpt,
        body_markdown=article.body,
        image_url=image.url if image is not None else None,
        provider=provider,
        web_url=article.web_url,
    )
    return Entry(
        id=article.entry_id or entry_id(article.url),  # minted once (store.articles), from the URL before
        link=article.web_url,
        title=title,
        published=article.published_at,
        updated=_entry_updated(article, article.content_at if archived else article.updated_at),
        summary=summary,
        content_html=content_html,
        has_body=has_body,
        provider=provider_label or None,
        categories=tuple(label for label in map(topic_label, stored.topics) if label),
        image_url=image.url if image is not None else None,
        image_width=image.width if image is not None else None,
        image_height=image.height if image is not None else None,
        related=related,
        links_back=len(related) > len({item.url for item in stored.related} - {article.url}),
    )


def _topic_name(name: str, slug: str) -> str:
    """A topic as feeds name it: its label, or its slug for a name with no visible text
    (stored before such names were dropped at parse time); never the raw name."""
    return topic_label(name) or slug


def _entry_updated(article: Any, updated: datetime) -> datetime:
    """An entry changes when its content does (`updated`): an article unchanged since
    feedworker first saw it keeps its publication time, so importing an archive does not make
    it all "new"."""
    published: datetime = article.published_at
    if updated == article.first_seen:
        return published
    return max(updated, published)


def _feed_info(
    settings: FeedSettings,
    stem: str,
    title: str,
    subtitle: str,
    history: FeedHistory | None = None,
    *,
    self_url: str | None = None,
) -> FeedInfo:
    from worker.publish.render import FeedInfo

    return FeedInfo(
        id=f"urn:uuid:{uuid5(NAMESPACE_URL, 'feedworker:' + stem)}",  # stable: slugs never change
        title=title,
        subtitle=subtitle,
        home_url=settings.base_url,
        rss_url=self_url or _url(settings, f"{stem}.rss"),
        atom_url=self_url or _url(settings, f"{stem}.atom"),
        json_url=self_url or _url(settings, f"{stem}.json"),
        history=history or FeedHistory(),
        full_content=settings.content == "full",
        hubs=settings.hubs,
    )


def _url(settings: FeedSettings, relative: str) -> str:
    return settings.base_url + relative
