"""`serve` as feed readers, caches, probes and container runtimes use it (issue 11, items 4, 5 and 8).

HTTP caching per encoding (ETag, Vary, Cache-Control, Last-Modified, conditional requests,
HEAD), source folders in /healthz and /metrics, /livez, and no defunct children. Real
`feedworker serve` processes, or its HTTP server in this process on port 0; real requests.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service_helpers import (
    EXAMPLES,
    ServedExamples,
    Service,
    copy_examples,
    free_port,
    make_corpus,
    serve_examples,
    serving_in_process,
    wait_for,
    write_config,
)
from worker.config import ScheduleConfig
from worker.ingest import parsers

TOKEN = "readers-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
IDENTITY = {"Accept-Encoding": "identity"}
GZIP = {"Accept-Encoding": "gzip"}


Served = ServedExamples


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One `feedworker serve` over the example articles, every hour, triggers enabled."""
    with serve_examples(
        tmp_path_factory.mktemp("readers"), schedule={"every": "1h"}, server={"token": TOKEN}
    ) as served:
        time.sleep(1.1)  # the feeds carry their Last-Modified once the second they were written in is over
        yield served


def fetch(service: Service, method: str, path: str, headers: dict[str, str]) -> tuple[httpx.Response, bytes]:
    """The response and its body as sent (not decompressed)."""
    with service.client() as client, client.stream(method, path, headers=headers) as response:
        return response, b"".join(response.iter_raw())


def max_age(response: httpx.Response) -> int:
    directives = [part.strip() for part in response.headers["cache-control"].split(",")]
    ages = [int(part.partition("=")[2]) for part in directives if part.startswith("max-age=")]
    assert len(ages) == 1, response.headers["cache-control"]
    return ages[0]


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


# --- item 4: HTTP caching as readers use it ---------------------------------------------------


def test_gzip_and_identity_bodies_have_their_own_etags(served: Served) -> None:
    service = served.service
    expected = (served.feeds / "all.rss").read_bytes()
    zipped, raw = fetch(service, "GET", "/feeds/all.rss", GZIP)
    plain, body = fetch(service, "GET", "/feeds/all.rss", IDENTITY)
    assert zipped.headers["content-encoding"] == "gzip" and gzip.decompress(raw) == expected
    assert "content-encoding" not in plain.headers and body == expected
    zipped_tag, plain_tag = zipped.headers["etag"], plain.headers["etag"]
    assert zipped_tag != plain_tag
    # Each ETag validates its own representation, and only that one.
    again = service.get("/feeds/all.rss", headers={**GZIP, "If-None-Match": zipped_tag})
    assert again.status_code == 304 and again.headers["etag"] == zipped_tag
    assert service.get("/feeds/all.rss", headers={**IDENTITY, "If-None-Match": plain_tag}).status_code == 304
    other = service.get("/feeds/all.rss", headers={**GZIP, "If-None-Match": plain_tag})
    assert other.status_code == 200 and other.headers["etag"] == zipped_tag and other.content == expected
    assert service.get("/feeds/all.rss", headers={**IDENTITY, "If-None-Match": zipped_tag}).status_code == 200
    # Weak comparison: W/ (as nginx turns a gzipped ETag) still matches.
    assert service.get("/feeds/all.rss", headers={**GZIP, "If-None-Match": f"W/{zipped_tag}"}).status_code == 304
    # gzip;q=0 refuses gzip: the bytes as they are, with their own ETag.
    refused, _ = fetch(service, "GET", "/feeds/all.rss", {"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in refused.headers and refused.headers["etag"] == plain_tag


def test_vary_max_age_and_a_304_that_repeats_the_validators(served: Served) -> None:
    service = served.service
    small = "topics/" + min((served.feeds / "topics").glob("*.atom"), key=lambda p: p.stat().st_size).name
    for name in ("all.atom", "index.opml", small):
        for headers in (IDENTITY, GZIP):
            full = service.get(f"/feeds/{name}", headers=headers)
            assert full.status_code == 200, (name, headers)
            assert "accept-encoding" in full.headers["vary"].lower(), (name, headers)
            # schedule.every is 1h and the last run was just now: until the next scheduled run.
            assert 3000 < max_age(full) <= 3600, full.headers["cache-control"]
            assert "no-cache" not in full.headers["cache-control"]
            not_modified = service.get(f"/feeds/{name}", headers={**headers, "If-None-Match": full.headers["etag"]})
            assert not_modified.status_code == 304 and not_modified.content == b""
            for field in ("etag", "last-modified", "vary"):
                assert not_modified.headers[field] == full.headers[field], (name, field)
            assert abs(max_age(not_modified) - max_age(full)) <= 2


def test_if_modified_since_is_compared_as_a_date(served: Served) -> None:
    service = served.service
    full = service.get("/feeds/all.atom", headers=IDENTITY)
    modified = full.headers["last-modified"]
    at = parsedate_to_datetime(modified).timestamp()
    assert service.get("/feeds/all.atom", headers={"If-Modified-Since": modified}).status_code == 304
    later = service.get("/feeds/all.atom", headers={"If-Modified-Since": formatdate(at + 86_400, usegmt=True)})
    assert later.status_code == 304 and later.headers["last-modified"] == modified
    assert later.headers["etag"] and later.headers["cache-control"].startswith("max-age=")
    # Another form of the same date (RFC 850) compares the same.
    rfc850 = datetime.fromtimestamp(at, UTC).strftime("%A, %d-%b-%y %H:%M:%S GMT")
    assert service.get("/feeds/all.atom", headers={"If-Modified-Since": rfc850}).status_code == 304
    assert (
        service.get("/feeds/all.atom", headers={"If-Modified-Since": formatdate(at - 1, usegmt=True)}).status_code
        == 200
    )
    assert service.get("/feeds/all.atom", headers={"If-Modified-Since": "yesterday"}).status_code == 200
    # If-None-Match decides when both are present.
    both = {"If-Modified-Since": modified, "If-None-Match": '"something-else"'}
    assert service.get("/feeds/all.atom", headers=both).status_code == 200


def test_if_none_match_weak_listed_and_star(served: Served) -> None:
    service = served.service
    etag = service.get("/feeds/all.rss", headers=IDENTITY).headers["etag"]
    for header in (etag, f"W/{etag}", f'"a", {etag} , "b"', f'W/"a",W/{etag}', "*"):
        assert service.get("/feeds/all.rss", headers={**IDENTITY, "If-None-Match": header}).status_code == 304, header
    for header in ('"a", "b"', 'W/"a"', etag.replace('"', '"x', 1)):
        assert service.get("/feeds/all.rss", headers={**IDENTITY, "If-None-Match": header}).status_code == 200, header


def test_head_answers_like_get_without_a_body(served: Served) -> None:
    service = served.service
    for headers in (IDENTITY, GZIP):
        got, raw = fetch(service, "GET", "/feeds/all.rss", headers)
        head, nothing = fetch(service, "HEAD", "/feeds/all.rss", headers)
        assert head.status_code == 200 and nothing == b""
        assert int(head.headers["content-length"]) == len(raw), headers
        for field in ("content-type", "content-encoding", "etag", "last-modified", "vary", "content-length"):
            assert head.headers.get(field) == got.headers.get(field), (headers, field)
        assert abs(max_age(head) - max_age(got)) <= 2
        conditional, _ = fetch(service, "HEAD", "/feeds/all.rss", {**headers, "If-None-Match": got.headers["etag"]})
        assert conditional.status_code == 304 and conditional.headers["etag"] == got.headers["etag"]


def test_max_age_runs_until_the_next_scheduled_run() -> None:
    from worker.service.http import MAX_AGE_CAP_S, feed_max_age

    now = datetime(2030, 1, 1, 12, 5, 30, tzinfo=UTC).timestamp()
    every = ScheduleConfig(every=300)
    assert feed_max_age(every, now, None) == 300  # no scheduler to ask: the interval
    assert feed_max_age(every, now, datetime.fromtimestamp(now + 42.7, UTC)) == 42  # the scheduler's next firing
    assert feed_max_age(every, now, datetime.fromtimestamp(now - 5, UTC)) == 0  # a firing overdue
    assert feed_max_age(every, now, datetime.fromtimestamp(now + 42.7, UTC), busy=True) == 0  # a run under way
    assert feed_max_age(ScheduleConfig(cron="*/15 * * * *"), now, None) == 570  # 12:05:30 -> 12:15
    assert feed_max_age(ScheduleConfig(cron="0 9 * * 1"), now, None) == MAX_AGE_CAP_S == 86_400
    assert feed_max_age(ScheduleConfig(every=365 * 86_400), now, None) == MAX_AGE_CAP_S


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def in_process(tmp_path: Path, clock: Callable[[], float]) -> contextlib.AbstractContextManager[int]:
    """`serve`'s HTTP server on 127.0.0.1 port 0 with `clock`; yields the port."""
    return serving_in_process(tmp_path, clock=clock)


def replace_file(path: Path, data: bytes, mtime_ns: int | None = None) -> None:
    """As the feed writer does: a temporary file renamed over the old one (a new inode)."""
    temporary = path.with_name(f".tmp-{path.name}")
    temporary.write_bytes(data)
    if mtime_ns is not None:
        os.utime(temporary, ns=(mtime_ns, mtime_ns))
    os.replace(temporary, path)


def rss(title: str) -> bytes:
    return f"<?xml version='1.0'?><rss version='2.0'><channel><title>{title}</title></channel></rss>".encode()


def test_a_feed_replaced_within_one_second_never_shares_a_date_with_its_successor(tmp_path: Path) -> None:
    """HTTP dates have 1 s resolution: two versions written within one second must not both be
    sent with that second as Last-Modified, or a client revalidating by date alone (no
    If-None-Match) gets 304 for bytes it never saw."""
    second = int(time.time()) - 3600
    first, then = rss("first"), rss("then, within the same second")
    clock = Clock(second + 0.4)
    with (
        in_process(tmp_path, clock) as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as client,
    ):
        feed = tmp_path / "feeds" / "all.rss"
        replace_file(feed, first, second * 10**9 + 200_000_000)
        early = client.get("/feeds/all.rss", headers=IDENTITY)
        assert early.status_code == 200 and early.content == first
        replace_file(feed, then, second * 10**9 + 700_000_000)
        clock.now = second + 1.5
        later = client.get("/feeds/all.rss", headers=IDENTITY)
        assert later.content == then and later.headers["etag"] != early.headers["etag"]
        assert later.headers["last-modified"] == formatdate(second, usegmt=True)
        date_of_first = early.headers.get("last-modified")
        if date_of_first is not None:
            # The date moves with the ETag...
            assert date_of_first != later.headers["last-modified"]
            # ...so the first version's date, sent alone, never passes for the second version.
            stale = client.get("/feeds/all.rss", headers={**IDENTITY, "If-Modified-Since": date_of_first})
            assert stale.status_code == 200 and stale.content == then
        # The second version's own date (or a later one) does validate it.
        assert (
            client.get("/feeds/all.rss", headers={"If-Modified-Since": later.headers["last-modified"]}).status_code
            == 304
        )
        assert (
            client.get(
                "/feeds/all.rss", headers={"If-Modified-Since": formatdate(second + 60, usegmt=True)}
            ).status_code
            == 304
        )


def test_a_feed_asked_for_in_the_second_it_was_written_is_answered_at_once_and_dated_once_it_is_over(
    tmp_path: Path,
) -> None:
    """A new version is served the moment it is written (the watcher's latency depends on it),
    with its ETag alone: its date could still name a later version of the same second."""
    with (
        in_process(tmp_path, time.time) as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as client,
    ):
        time.sleep(1.02 - time.time() % 1)  # just after a second began
        feed = tmp_path / "feeds" / "all.rss"
        replace_file(feed, rss("fresh"))
        written = feed.stat().st_mtime_ns // 10**9
        started = time.monotonic()
        response = client.get("/feeds/all.rss", headers=IDENTITY)
        assert time.monotonic() - started < 0.5
        if time.time() < written + 1:  # still that second (a busy machine may have passed it)
            assert response.status_code == 200 and response.content == rss("fresh")
            assert "last-modified" not in response.headers and response.headers["etag"]
            # Its ETag validates it; a date, even a later one, does not within that second.
            assert (
                client.get(
                    "/feeds/all.rss", headers={**IDENTITY, "If-None-Match": response.headers["etag"]}
                ).status_code
                == 304
            )
        time.sleep(max(0.0, written + 1.02 - time.time()))
        dated = client.get("/feeds/all.rss", headers=IDENTITY)
        assert dated.content == rss("fresh") and dated.headers["last-modified"] == formatdate(written, usegmt=True)
        assert dated.headers["etag"] == response.headers["etag"]


# --- item 5: source folders, /healthz, /livez, /metrics ---------------------------------------


def _sources(body: dict) -> dict[str, str]:
    return {Path(entry["path"]).name: entry["state"] for entry in body["sources"]}


def test_a_missing_source_folder_makes_healthz_503_and_livez_stays_200(tmp_path: Path) -> None:
    copy_examples(tmp_path / "inbox")
    volume = tmp_path / "volume"  # an unmounted volume: the folder is not there
    port = free_port()
    config = write_config(tmp_path, port=port, sources=[{"path": "inbox"}, {"path": "volume"}], server={"token": TOKEN})
    with Service(config, port) as service:
        service.wait_listening()
        wait_for(lambda: service.get("/runs/latest").status_code == 200, 60, "the first run")
        assert service.get("/runs/latest").json()["status"] == "ok"  # one folder of two is enough to run
        healthz = service.get("/healthz")
        assert healthz.status_code == 503
        body = healthz.json()
        assert body["status"] == "unavailable" and body["reason"] == f"source folder missing: {volume}"
        assert _sources(body) == {"inbox": "ok", "volume": "missing"}
        assert {Path(entry["path"]).name: entry["files"] for entry in body["sources"]} == {
            "inbox": len(EXAMPLES),
            "volume": 0,
        }
        livez = service.get("/livez")
        assert livez.status_code == 200 and livez.json() == {"status": "ok"}
        with service.client() as client:
            assert client.head("/livez").status_code == 200

        samples = metric_samples(service.get("/metrics").text)
        inbox_label, volume_label = (("source", str(tmp_path / "inbox")),), (("source", str(volume)),)
        assert samples[("feedworker_source_up", inbox_label)] == 1
        assert samples[("feedworker_source_up", volume_label)] == 0
        assert samples[("feedworker_source_files", inbox_label)] == len(EXAMPLES)
        assert samples[("feedworker_source_files", volume_label)] == 0

        # Mounted again: readable now, but the feeds have not seen it yet; a run settles it.
        volume.mkdir()
        (volume / "late.txt").write_text(
            '---\ntitle: "From the volume"\nwebUrl: "https://news.example.com/volume"\n---\n', encoding="utf-8"
        )
        pending = service.get("/healthz").json()
        assert pending["reason"] == f"source folder {volume} was missing at the last run"
        assert metric_samples(service.get("/metrics").text)[("feedworker_source_up", volume_label)] == 1
        run_id = service.post("/runs", headers=BEARER).json()["run_id"]
        wait_for(lambda: service.get(f"/runs/{run_id}").json()["status"] == "ok", 60, "the triggered run")
        assert service.get("/healthz").status_code == 200
        samples = metric_samples(service.get("/metrics").text)
        assert samples[("feedworker_source_files", volume_label)] == 1


def test_healthz_sees_an_unmounted_volume_without_waiting_for_a_run(tmp_path: Path) -> None:
    copy_examples(tmp_path / "inbox")
    port = free_port()
    config = write_config(tmp_path, port=port)  # every 1h: no run comes to notice it
    with Service(config, port) as service:
        service.wait_healthy(60)
        inbox, away = tmp_path / "inbox", tmp_path / "unmounted"
        inbox.rename(away)
        try:
            healthz = service.get("/healthz")
            assert healthz.status_code == 503 and healthz.json()["reason"] == f"source folder missing: {inbox}"
            assert service.get("/livez").status_code == 200
            samples = metric_samples(service.get("/metrics").text)
            assert samples[("feedworker_source_up", (("source", str(inbox)),))] == 0
            if os.geteuid() != 0:  # root reads every folder
                away.rename(inbox)
                inbox.chmod(0)
                try:
                    unreadable = service.get("/healthz").json()
                    assert unreadable["reason"] == f"source folder unreadable: {inbox}"
                finally:
                    inbox.chmod(0o755)
                    inbox.rename(away)
        finally:
            away.rename(inbox)
        # It is back: the watcher's cycle of the folder (a run may have seen it gone) sees it.
        wait_for(lambda: service.get("/healthz").status_code == 200, 20, "/healthz to answer 200 again")


def test_livez_answers_200_while_shutting_down(tmp_path: Path) -> None:
    import fcntl

    copy_examples(tmp_path / "inbox")
    port = free_port()
    config = write_config(tmp_path, port=port)
    database = tmp_path / "db" / "feedworker.db"
    database.parent.mkdir(parents=True)
    fd = os.open(str(database) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a `feedworker run` in another process would: the cycle waits
    try:
        with Service(config, port) as service:
            service.wait_listening()
            wait_for(lambda: "run.waiting" in service.log(), 20, "serve to wait for the lock")
            service.signal(signal.SIGTERM)
            wait_for(lambda: service.get("/healthz").json()["reason"] == "shutting down", 10, "healthz to say so")
            assert service.get("/healthz").status_code == 503
            livez = service.get("/livez")
            assert livez.status_code == 200 and livez.json() == {"status": "ok"}
            os.close(fd)
            fd = -1
            assert service.wait_exit(60) == 0
    finally:
        if fd >= 0:
            os.close(fd)


# --- item 8: no <defunct> children ------------------------------------------------------------

FORKSERVER = "from multiprocessing.forkserver import main"
# `serve` as a child subreaper, as PID 1 of a container without an init is: every process that
# loses its parent below it becomes its child. (The attribute survives exec.)
SUBREAPER = (
    "import ctypes, os, sys; ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0); "
    "os.execv(sys.executable, [sys.executable, '-m', 'worker', 'serve', '--config', sys.argv[1]])"
)


def _stat(pid: int) -> tuple[str, int] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def children(pid: int) -> dict[int, str]:
    """The children of `pid` (zombies included) -> their state."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    found = {}
    for task in tasks:
        try:
            pids = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, pids):
            if (stat := _stat(child)) is not None and stat[1] == pid:
                found[child] = stat[0]
    return found


def no_zombie_children(service: Service) -> bool:
    assert service.process is not None
    return not [pid for pid, state in children(service.process.pid).items() if state == "Z"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_no_defunct_child_after_cycles_that_used_a_process_pool(tmp_path: Path) -> None:
    make_corpus(tmp_path / "inbox", 3 * parsers.INLINE_BELOW)
    port = free_port()
    config = write_config(tmp_path, port=port, server={"token": TOKEN})
    with Service(config, port) as service:
        service.wait_healthy(90)
        for path in (tmp_path / "inbox").iterdir():  # all changed: the next cycle parses in a pool too
            path.write_text(path.read_text(encoding="utf-8") + "\nChanged.\n", encoding="utf-8")
        run_id = service.post("/runs", headers=BEARER).json()["run_id"]
        done = wait_for(
            lambda: (r := service.get(f"/runs/{run_id}").json())["status"] in ("ok", "failed") and r,
            90,
            "the second run",
        )
        assert done["status"] == "ok" and done["report"]["files"]["changed"] == 3 * parsers.INLINE_BELOW
        wait_for(lambda: no_zombie_children(service), 5, "no <defunct> child of serve")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, PR_SET_CHILD_SUBREAPER")
def test_serve_reaps_the_children_it_adopts(tmp_path: Path) -> None:
    """As PID 1 of a container without an init, `serve` adopts every orphan of the container:
    here the parser processes of a fork server that died under a cycle (killed, as the OOM
    killer would). They die with it, and stayed <defunct> children of `serve` for good."""
    make_corpus(tmp_path / "inbox", 300)
    port = free_port()
    config = write_config(tmp_path, port=port, schedule={"every": "2s"})
    service = Service(config, port, command=[sys.executable, "-c", SUBREAPER, str(config)]).start()
    try:
        assert service.process is not None
        serve = service.process.pid
        parser = wait_for(lambda: _a_parser_process(serve), 60, "a parser process under the fork server", 0.001)
        server = _stat(parser)[1]  # type: ignore[index]
        os.kill(server, signal.SIGKILL)

        def adopted() -> list[int]:
            return [pid for pid, state in children(serve).items() if state == "Z" and pid != server]

        # The parser processes die with their server; serve adopts what is left of them.
        seen = set(wait_for(adopted, 10, "a parser process of the dead server adopted by serve", 0.01))
        deadline = time.monotonic() + 10
        while (left := seen & set(adopted())) and time.monotonic() < deadline:
            time.sleep(0.1)
            seen |= set(adopted())
        assert not left, f"<defunct> children of serve: {sorted(left)} ({children(serve)})"
        assert service.get("/livez").status_code == 200
    finally:
        service.kill_all()


def _a_parser_process(serve: int) -> int | None:
    """A parser process: a child of the fork server (a child of serve)."""
    for server, state in children(serve).items():
        if state != "Z" and FORKSERVER in _cmdline(server):
            for pid, child_state in children(server).items():
                if child_state != "Z" and FORKSERVER in _cmdline(pid):
                    return pid
    return None
