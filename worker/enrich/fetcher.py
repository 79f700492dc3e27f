"""Fetches related pages' metadata over HTTP: the one place owning timeouts, size caps and SSRF refusal."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Literal

import httpx

from worker.enrich.metadata import extract_metadata
from worker.model import PageMetadata

__all__ = [
    "FetchPolicy",
    "FetchRequest",
    "FetchResult",
    "FetchStatus",
    "RefusedAddress",
    "fetch_many",
    "host_key",
    "is_public_address",
]

FetchStatus = Literal["ok", "not_modified", "refused", "error", "http_error", "not_html", "timeout", "too_large"]

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_ALLOWED_SCHEMES = frozenset({"http", "https"})
# Connect to at most this many of a host's addresses: enough to get past a dead IPv6 route.
_MAX_ADDRESSES_TRIED = 3

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Not reachable on the public internet, or reachable only from inside some network:
# RFC 6890 special-purpose registries, plus what the ipaddress properties below miss.
_NON_PUBLIC_V4 = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata services
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
_NON_PUBLIC_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",  # local-use NAT64: translates to who knows where
        "100::/64",
        "2001::/23",  # IETF protocol assignments, Teredo included
        "2001:db8::/32",
        "3fff::/20",
        "fc00::/7",  # unique local
        "fe80::/10",
        "fec0::/10",  # deprecated site-local
        "ff00::/8",
    )
)
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")


@dataclass(frozen=True)
class FetchPolicy:
    """Bounds of every fetch; times in seconds."""

    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 15.0  # per page, redirects included
    max_bytes: int = 1_000_000  # of decoded body
    max_redirects: int = 5
    concurrency: int = 8
    per_host: int = 2
    allow_private_networks: bool = False
    user_agent: str = "feedworker/0.1 (+https://github.com/feedworker)"


@dataclass(frozen=True)
class FetchRequest:
    """A page to fetch, with the validators of the copy already stored (if any)."""

    url: str
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class FetchResult:
    """Outcome of one fetch. `http_status` is the last HTTP status seen, if any."""

    url: str
    final_url: str
    status: FetchStatus
    http_status: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    metadata: PageMetadata | None = None
    error: str | None = None


class RefusedAddress(Exception):
    """A URL the policy forbids fetching: non-http scheme, credentials, or a non-public address."""


class _TooLarge(Exception):
    pass


@dataclass
class _Progress:
    """What is known of a fetch so far, so a timeout or refusal can still report it."""

    final_url: str
    http_status: int | None = None
    etag: str | None = None
    last_modified: str | None = None


def is_public_address(ip: str | IPAddress) -> bool:
    """True when an address is globally routable unicast, safe to fetch from a server."""
    try:
        address = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            # Mapped, compatible, NAT64 and 6to4 addresses reach the IPv4 address inside.
            return is_public_address(embedded)
        if any(address in net for net in _NON_PUBLIC_V6) or address.is_site_local:
            return False
    elif any(address in net for net in _NON_PUBLIC_V4):
        return False
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address.is_reserved
        or not address.is_global
    )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64_WELL_KNOWN or address in _IPV4_TRANSLATED or address in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


async def fetch_many(
    requests: Iterable[FetchRequest], policy: FetchPolicy | None = None, *, deadline_s: float
) -> list[FetchResult]:
    """Fetch pages concurrently; none is started after `deadline_s` (their results are absent).

    A fetch started before the deadline runs to its own `total_timeout`, so a call lasts at
    most about `deadline_s + policy.total_timeout`. Results keep the order of `requests`.
    """
    policy = policy or FetchPolicy()
    pending = list(requests)
    loop = asyncio.get_running_loop()
    overall = asyncio.Semaphore(max(1, policy.concurrency))
    per_host: dict[str, asyncio.Semaphore] = {}

    async with _new_client(policy) as client:
        # From here: building the client (its TLS context) takes 30-160 ms, which is not fetching.
        run_deadline = loop.time() + deadline_s

        async def run(request: FetchRequest) -> FetchResult | None:
            host_slot = per_host.setdefault(host_key(request.url), asyncio.Semaphore(max(1, policy.per_host)))
            # Host slot first: waiting on a busy host must not hold one of the global slots.
            async with host_slot, overall:
                if loop.time() >= run_deadline:
                    return None
                return await _fetch_one(client, request, policy)

        results = await asyncio.gather(*(run(request) for request in pending))
    return [result for result in results if result is not None]


def _new_client(policy: FetchPolicy) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=policy.connect_timeout,
            read=policy.read_timeout,
            write=policy.read_timeout,
            pool=policy.connect_timeout,
        ),
        # No keep-alive: connections are made to an IP with one host's SNI, and a pooled
        # one must never carry another host's request.
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=0),
        follow_redirects=False,
        # Proxy variables would route fetches around the address check.
        trust_env=False,
        # Cookies would be filed under the IP we connect to and leak between hosts.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        headers={
            "User-Agent": policy.user_agent,
            "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1",
            # A compressed body can blow past the size cap in one chunk.
            "Accept-Encoding": "identity",
        },
    )


def host_key(url: str) -> str:
    """The host a URL's per-host limit counts it under (lower case; empty when unreadable)."""
    try:
        return httpx.URL(url).host.lower()
    except (httpx.InvalidURL, ValueError, TypeError):
        return ""


async def _fetch_one(client: httpx.AsyncClient, request: FetchRequest, policy: FetchPolicy) -> FetchResult:
    progress = _Progress(final_url=request.url)

    def result(status: FetchStatus, error: str | None = None, metadata: PageMetadata | None = None) -> FetchResult:
        return FetchResult(
            url=request.url,
            final_url=progress.final_url,
            status=status,
            http_status=progress.http_status,
            etag=progress.etag,
            last_modified=progress.last_modified,
            metadata=metadata,
            error=error,
        )

    try:
        # httpx timeouts bound each read, not the page: a server dripping bytes never trips them.
        async with asyncio.timeout(policy.total_timeout):
            status, error, metadata = await _follow(client, request, policy, progress)
        return result(status, error, metadata)
    except (TimeoutError, httpx.TimeoutException):
        return result("timeout", f"no complete answer within {policy.total_timeout:g} s")
    except RefusedAddress as exc:
        return result("refused", str(exc))
    except _TooLarge:
        return result("too_large", f"body larger than {policy.max_bytes} bytes")
    except socket.gaierror as exc:
        return result("error", f"cannot resolve host: {exc.strerror or exc}")
    except httpx.HTTPError as exc:
        return result("error", f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - one bad page must never end the run
        return result("error", f"{type(exc).__name__}: {exc}")


async def _follow(
    client: httpx.AsyncClient, request: FetchRequest, policy: FetchPolicy, progress: _Progress
) -> tuple[FetchStatus, str | None, PageMetadata | None]:
    try:
        url = httpx.URL(request.url)
    except (httpx.InvalidURL, TypeError) as exc:
        return "error", f"invalid URL: {exc}", None

    for _ in range(policy.max_redirects + 1):
        progress.final_url = str(url)
        _check_url(url)
        addresses = await _resolve(url, policy)
        response = await _send(client, url, addresses, request)
        try:
            progress.http_status = response.status_code
            progress.etag = response.headers.get("etag")
            progress.last_modified = response.headers.get("last-modified")
            if response.status_code == 304:
                # The stored copy is still good: keep its validators unless new ones came.
                progress.etag = progress.etag or request.etag
                progress.last_modified = progress.last_modified or request.last_modified
            location = response.headers.get("location")
            if response.status_code in _REDIRECT_STATUSES and location:
                try:
                    url = url.join(location.strip())
                except (httpx.InvalidURL, ValueError) as exc:
                    return "error", f"bad redirect location {location!r}: {exc}", None
                continue
            return await _outcome(response, policy, url)
        finally:
            await response.aclose()
    return "error", f"more than {policy.max_redirects} redirects", None


async def _outcome(
    response: httpx.Response, policy: FetchPolicy, url: httpx.URL
) -> tuple[FetchStatus, str | None, PageMetadata | None]:
    status = response.status_code
    if status == 304:
        return "not_modified", None, None
    if not 200 <= status < 300 or status in (204, 205):
        return "http_error", f"HTTP {status}", None
    media_type, charset = _content_type(response.headers.get("content-type"))
    if media_type not in _HTML_TYPES:
        return "not_html", f"content type {media_type or 'missing'}", None
    body = await _read_capped(response, policy.max_bytes)
    return "ok", None, extract_metadata(body, str(url), encoding=charset)


def _check_url(url: httpx.URL) -> None:
    if url.scheme not in _ALLOWED_SCHEMES:
        raise RefusedAddress(f"scheme {url.scheme!r} is not fetched")
    if url.userinfo:
        raise RefusedAddress("URLs with credentials are not fetched")
    if not url.host:
        raise RefusedAddress("URL has no host")


async def _resolve(url: httpx.URL, policy: FetchPolicy) -> list[str]:
    """Addresses to connect to, all checked: any non-public one refuses the whole host."""
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise socket.gaierror(socket.EAI_NONAME, "no address")
    if not policy.allow_private_networks:
        # ANY, not first: with several records, which one gets used is not ours to predict.
        for address in addresses:
            if not is_public_address(address):
                raise RefusedAddress(f"{host} resolves to non-public address {address}")
    return addresses


async def _send(
    client: httpx.AsyncClient, url: httpx.URL, addresses: list[str], request: FetchRequest
) -> httpx.Response:
    host = url.raw_host.decode("ascii")
    headers = {"Host": url.netloc.decode("ascii")}
    if request.etag:
        headers["If-None-Match"] = request.etag
    if request.last_modified:
        headers["If-Modified-Since"] = request.last_modified
    # TLS is verified against the name, while the socket goes to the address we checked:
    # a second DNS answer (rebinding) never gets a say.
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    failure: httpx.ConnectError | None = None
    for address in addresses[:_MAX_ADDRESSES_TRIED]:
        pinned = url.copy_with(host=address.split("%", 1)[0])
        outgoing = client.build_request("GET", pinned, headers=headers, extensions=extensions)
        try:
            return await client.send(outgoing, stream=True)
        except httpx.ConnectError as exc:
            failure = exc
    assert failure is not None
    raise failure


def _content_type(value: str | None) -> tuple[str, str | None]:
    if not value:
        return "", None
    media_type, *params = value.split(";")
    charset = None
    for param in params:
        name, _, raw = param.partition("=")
        if name.strip().lower() == "charset":
            charset = raw.strip().strip("\"'") or None
    return media_type.strip().lower(), charset


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    encoding = response.headers.get("content-encoding", "identity").strip().lower() or "identity"
    if encoding == "identity" and declared.isdigit() and int(declared) > max_bytes:
        raise _TooLarge
    decoder = _BoundedDecoder(encoding)
    chunks: list[bytes] = []
    total = 0
    # Raw bytes, decoded here: httpx would inflate a compressed chunk without any bound.
    async for raw in response.aiter_raw():
        data = decoder.decode(raw, max_bytes - total)
        total += len(data)
        if total > max_bytes:
            raise _TooLarge
        chunks.append(data)
    data = decoder.flush(max_bytes - total)
    if total + len(data) > max_bytes:
        raise _TooLarge
    chunks.append(data)
    return b"".join(chunks)


class _BoundedDecoder:
    """Content-Encoding decoder that never produces more than it is allowed to."""

    def __init__(self, encoding: str) -> None:
        if encoding in ("identity", ""):
            self._zlib = None
        elif encoding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif encoding == "deflate":
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS)
        else:
            raise httpx.DecodingError(f"unsupported content-encoding {encoding!r}")
        self._deflate = encoding == "deflate"
        self._started = False

    def decode(self, data: bytes, allowance: int) -> bytes:
        if self._zlib is None:
            return data
        try:
            # max_length = allowance + 1 shows an overflow without inflating all of it.
            out = self._zlib.decompress(data, max(allowance, 0) + 1)
        except zlib.error:
            if self._deflate and not self._started:
                # Some servers send raw deflate without the zlib header.
                self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                self._deflate = False
                return self.decode(data, allowance)
            raise httpx.DecodingError("corrupt compressed body") from None
        self._started = True
        return out

    def flush(self, allowance: int) -> bytes:
        if self._zlib is None:
            return b""
        return self._zlib.flush()[: max(allowance, 0) + 1]
