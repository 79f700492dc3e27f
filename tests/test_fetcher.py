"""Tests of the related-page fetcher against real local HTTP servers (no httpx mocks)."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.localserver import LocalServer
from tests.nodns import FakeNames, fake_names
from worker.enrich import fetcher
from worker.enrich.fetcher import (
    FetchPolicy,
    FetchRequest,
    FetchResult,
    RefusedAddress,
    fetch_many,
    is_public_address,
)

OG_PAGE = b"""<html><head><title>Plain</title>
<meta property="og:title" content="OG title"><meta property="og:description" content="OG description">
<meta property="og:image" content="/lead.jpg"><meta property="og:site_name" content="Local">
<link rel="canonical" href="/og"></head><body>hi</body></html>"""
TWITTER_PAGE = b"""<html><head><meta name="twitter:title" content="Tw title">
<meta name="twitter:description" content="Tw description"><meta name="twitter:image" content="http://img.test/t.png">
</head></html>"""
TITLE_PAGE = b"<html><head><title>Just a title</title></head><body></body></html>"
ETAG = '"v1"'
LAST_MODIFIED = "Tue, 26 Jan 2021 22:12:00 GMT"

# Small bounds keep every slow case well under a second.
FAST = FetchPolicy(connect_timeout=1.0, read_timeout=1.0, total_timeout=2.0, allow_private_networks=True)


class Server(LocalServer):
    """A threaded HTTP server on a loopback address that counts what it is asked."""

    def __init__(self, host: str, tls: ssl.SSLContext | None = None) -> None:
        self.headers: dict[str, dict[str, str]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        super().__init__(_make_handler(self), host, tls)


def _make_handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            route, query = parts.path, parse_qs(parts.query)
            with server.lock:
                server.counts[route] += 1
                server.headers[route] = {k.lower(): v for k, v in self.headers.items()}
            try:
                self.dispatch(route, query)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def send(self, status: int, body: bytes, content_type: str | None = "text/html", **headers: str) -> None:
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def redirect(self, location: str, status: int = 302) -> None:
            self.send(status, b"", None, Location=location)

        def dispatch(self, route: str, query: dict[str, list[str]]) -> None:
            if route == "/og":
                self.send(200, OG_PAGE, "text/html; charset=utf-8")
            elif route == "/twitter":
                self.send(200, TWITTER_PAGE)
            elif route == "/title":
                self.send(200, TITLE_PAGE)
            elif route == "/xhtml":
                self.send(200, TITLE_PAGE, "application/xhtml+xml")
            elif route.startswith("/hop/"):
                left = int(route.rsplit("/", 1)[1])
                if left == 0:
                    self.send(200, OG_PAGE)
                elif left % 2:
                    self.redirect(f"/hop/{left - 1}", 301)
                else:
                    self.redirect(f"http://{self.headers['Host']}/hop/{left - 1}", 307)
            elif route == "/loop":
                self.redirect("/loop")
            elif route == "/goto":
                self.redirect(query["to"][0])
            elif route == "/slow":
                server.stop.wait(5)
                self.send(200, TITLE_PAGE)
            elif route == "/drip":
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                while not server.stop.wait(0.05):
                    self.wfile.write(b" ")
                    self.wfile.flush()
            elif route == "/endless":
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(b"<html><head><title>endless</title></head><body>")
                while not server.stop.is_set():
                    self.wfile.write(b"x" * 65536)
            elif route == "/declared-huge":
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", "50000000")
                self.end_headers()
                self.wfile.write(TITLE_PAGE)
            elif route == "/gzip-bomb":
                # Ignores Accept-Encoding: identity, as a hostile server would.
                self.send(200, gzip.compress(b"<html>" + b" " * 20_000_000), Content_Encoding="gzip")
            elif route == "/gzip-small":
                self.send(200, gzip.compress(OG_PAGE), Content_Encoding="gzip")
            elif route == "/brotli":
                self.send(200, b"\x1b\x00", Content_Encoding="br")
            elif route == "/png":
                self.send(200, b"\x89PNG\r\n\x1a\n", "image/png")
            elif route == "/untyped":
                self.send(200, TITLE_PAGE, None)
            elif route == "/404":
                self.send(404, b"<title>Not found</title>")
            elif route == "/500":
                self.send(500, b"<title>Oops</title>")
            elif route == "/latin1":
                body = "<html><head><title>Caf\u00e9 cr\u00e8me</title></head></html>".encode("latin-1")
                self.send(200, body, "text/html; charset=ISO-8859-1")
            elif route == "/etag":
                if self.headers.get("If-None-Match") == ETAG:
                    self.send_response(304)
                    self.send_header("ETag", ETAG)
                    self.end_headers()
                else:
                    self.send(200, TITLE_PAGE, ETag=ETAG)
            elif route == "/lastmod":
                if self.headers.get("If-Modified-Since") == LAST_MODIFIED:
                    self.send_response(304)
                    self.end_headers()
                else:
                    self.send(200, TITLE_PAGE, Last_Modified=LAST_MODIFIED)
            elif route == "/busy":
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                server.stop.wait(float(query.get("s", ["0.15"])[0]))
                with server.lock:
                    server.in_flight -= 1
                self.send(200, TITLE_PAGE)
            elif route == "/echo-host":
                self.send(200, f"<title>{self.headers['Host']}</title>".encode())
            else:
                self.send(404, b"")

    return Handler


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with fake_names():  # http.server asks for the name of the address it binds: answered here
        srv = Server("127.0.0.1")
    yield srv
    srv.close()


@pytest.fixture()
def names() -> Iterator[FakeNames]:
    """The fake resolver: tests resolve no name outside the machine (see tests/nodns.py)."""
    with fake_names() as fake:
        yield fake


@pytest.fixture()
def public_server(monkeypatch: pytest.MonkeyPatch, names: FakeNames) -> Iterator[Server]:
    """A server on 127.0.0.2 that the fetcher is made to treat as a public address."""
    try:
        srv = Server("127.0.0.2")  # under the fake: no PTR query for 127.0.0.2 leaves the machine
    except OSError:
        pytest.skip("cannot bind 127.0.0.2 on this system")
    real = fetcher.is_public_address
    monkeypatch.setattr(fetcher, "is_public_address", lambda ip: str(ip) == "127.0.0.2" or real(ip))
    yield srv
    srv.close()


def fetch(*urls: str | FetchRequest, policy: FetchPolicy = FAST, deadline_s: float = 30.0) -> list[FetchResult]:
    requests = [u if isinstance(u, FetchRequest) else FetchRequest(u) for u in urls]
    return asyncio.run(fetch_many(requests, policy, deadline_s=deadline_s))


def fetch_one(url: str | FetchRequest, policy: FetchPolicy = FAST) -> FetchResult:
    [result] = fetch(url, policy=policy)
    return result


# --- pages -------------------------------------------------------------------------------


def test_open_graph_page(server: Server) -> None:
    result = fetch_one(server.url("/og"))
    assert result.status == "ok", result.error
    assert result.http_status == 200
    assert result.url == result.final_url == server.url("/og")
    assert result.error is None
    assert result.metadata is not None
    assert result.metadata.title == "OG title"
    assert result.metadata.description == "OG description"
    assert result.metadata.image == server.url("/lead.jpg")
    assert result.metadata.canonical == server.url("/og")
    assert result.metadata.site_name == "Local"


def test_twitter_only_page(server: Server) -> None:
    result = fetch_one(server.url("/twitter"))
    assert result.status == "ok"
    assert result.metadata is not None
    assert (result.metadata.title, result.metadata.description, result.metadata.image) == (
        "Tw title",
        "Tw description",
        "http://img.test/t.png",
    )


def test_title_only_page_and_xhtml(server: Server) -> None:
    for path in ("/title", "/xhtml"):
        result = fetch_one(server.url(path))
        assert result.status == "ok"
        assert result.metadata is not None
        assert result.metadata.title == "Just a title"
        assert result.metadata.description is None


def test_request_headers(server: Server) -> None:
    fetch_one(server.url("/title"))
    sent = server.headers["/title"]
    assert sent["user-agent"] == FAST.user_agent
    assert sent["accept-encoding"] == "identity"
    assert sent["host"] == f"127.0.0.1:{server.port}"
    assert "cookie" not in sent


def test_host_header_keeps_the_name_while_connecting_to_the_address(server: Server) -> None:
    # `localhost` may resolve to ::1 first, where nothing listens: the next address is tried.
    result = fetch_one(f"http://localhost:{server.port}/echo-host")
    assert result.status == "ok", result.error
    assert result.metadata is not None
    assert result.metadata.title == f"localhost:{server.port}"
    assert result.final_url == f"http://localhost:{server.port}/echo-host"


def test_https_sends_the_name_as_sni_and_verifies_it(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not available to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,return-value]
    srv = Server("127.0.0.1", tls=context)
    try:
        result = fetch_one(f"https://localhost:{srv.port}/og")
    finally:
        srv.close()
    # Connected to the checked IP, yet TLS saw the host name, and the self-signed
    # certificate was rejected: verification is on.
    assert "localhost" in names
    assert result.status == "error"
    assert "CERTIFICATE_VERIFY_FAILED" in (result.error or "")


def test_latin1_page_declared_in_header(server: Server) -> None:
    result = fetch_one(server.url("/latin1"))
    assert result.status == "ok"
    assert result.metadata is not None
    assert result.metadata.title == "Caf\u00e9 cr\u00e8me"


def test_gzip_body_despite_identity_is_decoded(server: Server) -> None:
    result = fetch_one(server.url("/gzip-small"))
    assert result.status == "ok", result.error
    assert result.metadata is not None
    assert result.metadata.title == "OG title"


# --- redirects ---------------------------------------------------------------------------


def test_redirect_chain(server: Server) -> None:
    before = server.total
    result = fetch_one(server.url("/hop/3"))
    assert result.status == "ok", result.error
    assert result.url == server.url("/hop/3")
    assert result.final_url == server.url("/hop/0")
    assert result.http_status == 200
    assert result.metadata is not None and result.metadata.title == "OG title"
    assert server.total - before == 4


def test_too_many_redirects(server: Server) -> None:
    before = server.counts["/loop"]
    result = fetch_one(server.url("/loop"), replace(FAST, max_redirects=5))
    assert result.status == "error"
    assert "redirects" in (result.error or "")
    assert server.counts["/loop"] - before == 6


def test_redirect_to_other_scheme_is_refused(server: Server) -> None:
    result = fetch_one(server.url("/goto?to=file:///etc/passwd"))
    assert result.status == "refused"
    assert result.final_url.startswith("file:")
    assert result.http_status == 302


# --- private networks --------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "http://127.0.0.1:{port}/og",
        "http://localhost:{port}/og",
        "http://[::1]:{port}/og",
        "http://2130706433:{port}/og",  # 127.0.0.1 to inet_aton
        "http://0.0.0.0:{port}/og",
    ],
)
def test_private_address_refused_before_any_request(server: Server, template: str) -> None:
    before = server.total
    result = fetch_one(template.format(port=server.port), FetchPolicy(total_timeout=2.0))
    assert result.status == "refused", result.error
    assert "non-public" in (result.error or "")
    assert result.http_status is None
    assert server.total == before


def test_redirect_to_private_address_refused(server: Server, public_server: Server) -> None:
    private_before = server.total
    start = public_server.url("/goto?to=" + server.url("/og"))
    result = fetch_one(start, FetchPolicy(total_timeout=2.0))
    assert result.status == "refused", result.error
    assert result.final_url == server.url("/og")
    assert public_server.counts["/goto"] == 1
    assert server.total == private_before


def test_public_server_fetch_works_with_private_refused(public_server: Server) -> None:
    result = fetch_one(public_server.url("/hop/2"), FetchPolicy(total_timeout=2.0))
    assert result.status == "ok", result.error


def test_credentials_in_url_refused(server: Server) -> None:
    before = server.total
    result = fetch_one(f"http://user:secret@127.0.0.1:{server.port}/og")
    assert result.status == "refused"
    assert server.total == before


@pytest.mark.parametrize("url", ["ftp://example.com/", "file:///etc/passwd", "javascript:alert(1)"])
def test_non_http_schemes_refused(url: str) -> None:
    assert fetch_one(url).status == "refused"


def test_invalid_url_is_an_error(names: FakeNames) -> None:
    names.fail("exa%20mple.com")  # the host as httpx quotes it, should it get as far as a lookup
    result = fetch_one("http://exa mple.com:99999999/")
    assert result.status in {"error", "refused"}
    assert result.error


# --- name resolution (a fake resolver: no lookup leaves the machine) -----------------------


def test_a_name_that_does_not_resolve_is_an_error(names: FakeNames) -> None:
    names.fail("nonexistent.invalid")
    result = fetch_one("http://nonexistent.invalid/page")
    assert result.status == "error"
    assert (result.error or "").startswith("cannot resolve host:"), result.error
    assert result.http_status is None and result.final_url == "http://nonexistent.invalid/page"


def test_a_lookup_that_never_answers_ends_at_the_page_deadline(names: FakeNames) -> None:
    names.hang("no-answer.invalid")
    started = time.monotonic()
    # Not asyncio.run: at its end it would wait for the lookup's thread, still waiting.
    loop = asyncio.new_event_loop()
    try:
        [result] = loop.run_until_complete(
            fetch_many([FetchRequest("http://no-answer.invalid/page")], replace(FAST, total_timeout=0.4), deadline_s=30)
        )
    finally:
        loop.close()
    assert result.status == "timeout"
    assert time.monotonic() - started < 2


def test_a_resolved_name_is_fetched_from_its_address_under_its_own_name(
    names: FakeNames, public_server: Server
) -> None:
    names.answer("news.example", "127.0.0.2")
    result = fetch_one(f"http://news.example:{public_server.port}/echo-host", FetchPolicy(total_timeout=2.0))
    assert result.status == "ok", result.error
    assert result.metadata is not None and result.metadata.title == f"news.example:{public_server.port}"


def test_a_name_with_any_non_public_address_is_refused(names: FakeNames, public_server: Server) -> None:
    names.answer("mixed.example", "127.0.0.2", "10.0.0.1")
    result = fetch_one(f"http://mixed.example:{public_server.port}/og", FetchPolicy(total_timeout=2.0))
    assert result.status == "refused"
    assert "10.0.0.1" in (result.error or "")
    assert public_server.total == 0


# --- bounds ------------------------------------------------------------------------------


def test_server_that_never_answers_times_out(server: Server) -> None:
    policy = FetchPolicy(connect_timeout=1.0, read_timeout=5.0, total_timeout=0.4, allow_private_networks=True)
    started = time.monotonic()
    result = fetch_one(server.url("/slow"), policy)
    assert result.status == "timeout"
    assert time.monotonic() - started < 1.5


def test_dripping_server_hits_the_overall_deadline(server: Server) -> None:
    # Each byte comes well within read_timeout: only the per-page deadline stops it.
    policy = FetchPolicy(connect_timeout=1.0, read_timeout=5.0, total_timeout=0.4, allow_private_networks=True)
    started = time.monotonic()
    result = fetch_one(server.url("/drip"), policy)
    assert result.status == "timeout"
    assert result.http_status == 200
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("path", ["/endless", "/declared-huge", "/gzip-bomb"])
def test_body_size_cap(server: Server, path: str) -> None:
    policy = replace(FAST, max_bytes=100_000)
    result = fetch_one(server.url(path), policy)
    assert result.status == "too_large", result.error
    assert result.metadata is None


def test_unsupported_content_encoding(server: Server) -> None:
    result = fetch_one(server.url("/brotli"))
    assert result.status == "error"
    assert "br" in (result.error or "")


@pytest.mark.parametrize("path", ["/png", "/untyped"])
def test_not_html(server: Server, path: str) -> None:
    result = fetch_one(server.url(path))
    assert result.status == "not_html"
    assert result.http_status == 200
    assert result.metadata is None


@pytest.mark.parametrize(("path", "code"), [("/404", 404), ("/500", 500)])
def test_http_errors(server: Server, path: str, code: int) -> None:
    result = fetch_one(server.url(path))
    assert result.status == "http_error"
    assert result.http_status == code
    assert result.metadata is None


# --- revalidation ------------------------------------------------------------------------


def test_etag_revalidation(server: Server) -> None:
    first = fetch_one(server.url("/etag"))
    assert first.status == "ok"
    assert first.etag == ETAG
    second = fetch_one(FetchRequest(server.url("/etag"), etag=first.etag))
    assert server.headers["/etag"]["if-none-match"] == ETAG
    assert second.status == "not_modified"
    assert second.http_status == 304
    assert second.etag == ETAG
    assert second.metadata is None


def test_last_modified_revalidation(server: Server) -> None:
    first = fetch_one(server.url("/lastmod"))
    assert first.status == "ok"
    assert first.last_modified == LAST_MODIFIED
    second = fetch_one(FetchRequest(server.url("/lastmod"), last_modified=first.last_modified))
    assert second.status == "not_modified"
    # The 304 carries no validators: the stored ones are handed back.
    assert second.last_modified == LAST_MODIFIED


# --- concurrency and the run deadline ------------------------------------------------------


def test_per_host_limit(server: Server) -> None:
    server.max_in_flight = 0
    policy = replace(FAST, concurrency=8, per_host=2)
    results = fetch(*(server.url(f"/busy?i={i}") for i in range(6)), policy=policy)
    assert [r.status for r in results] == ["ok"] * 6
    assert server.max_in_flight == 2


def test_global_limit(server: Server) -> None:
    server.max_in_flight = 0
    policy = replace(FAST, concurrency=1, per_host=4)
    results = fetch(*(server.url(f"/busy?s=0.05&i={i}") for i in range(3)), policy=policy)
    assert len(results) == 3
    assert server.max_in_flight == 1


def test_results_keep_request_order(server: Server) -> None:
    urls = [server.url("/404"), server.url("/og"), server.url("/png"), server.url("/title")]
    results = fetch(*urls)
    assert [r.url for r in results] == urls
    assert [r.status for r in results] == ["http_error", "ok", "not_html", "ok"]


def test_run_deadline_stops_new_fetches(server: Server) -> None:
    policy = replace(FAST, concurrency=1)
    urls = [server.url(f"/busy?s=0.3&d={i}") for i in range(4)]
    started = time.monotonic()
    results = fetch(*urls, policy=policy, deadline_s=0.1)
    assert [r.url for r in results] == urls[:1]
    assert time.monotonic() - started < 1.0


def test_the_run_deadline_starts_when_fetching_does(server: Server) -> None:
    # Building the client alone takes longer than this (30-160 ms: its TLS context): a deadline
    # counted from before it would let no fetch start at all.
    urls = [server.url(f"/busy?s=0.3&d=start{i}") for i in range(3)]
    results = fetch(*urls, policy=replace(FAST, concurrency=1), deadline_s=0.02)
    assert [r.url for r in results] == urls[:1]


def test_no_time_no_fetch(server: Server) -> None:
    before = server.total
    assert fetch(server.url("/og"), deadline_s=0) == []
    assert fetch(deadline_s=10) == []
    assert server.total == before


# --- address table -----------------------------------------------------------------------

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "100.63.255.255",
    "100.128.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
]
NOT_PUBLIC = [
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.255",
    "0.0.0.0",
    "0.1.2.3",
    "192.0.0.8",
    "192.0.2.1",
    "198.18.0.1",
    "198.51.100.7",
    "203.0.113.9",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "fe80::1",
    "fe80::1%eth0",
    "febf::1",
    "fec0::1",
    "fc00::1",
    "fd12:3456:789a::1",
    "ff02::1",
    "ff0e::1",
    "2001:db8::1",
    "2001::1",  # Teredo
    "100::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",  # IPv4-compatible
    "::ffff:0:7f00:1",  # IPv4-translated
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b:1::a00:1",  # local-use NAT64
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
    "not an address",
    "",
]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses(address: str) -> None:
    assert is_public_address(address) is True


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses(address: str) -> None:
    assert is_public_address(address) is False


def test_refused_address_is_an_exception() -> None:
    assert issubclass(RefusedAddress, Exception)
