"""Canonical forms of article URLs, so one article has one identity and one feed entry id."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import uuid
from functools import lru_cache

import idna

__all__ = [
    "AMP_CACHE_SUFFIXES",
    "MAX_URL_LENGTH",
    "TRACKING_PARAMS",
    "TRACKING_PREFIXES",
    "canonical_item_url",
    "canonical_url",
    "entry_id",
    "given_entry_id",
    "is_http_url",
    "page_cut",
]

MAX_URL_LENGTH = 2048

# Query parameters that only say where a click came from; the page is the same without them.
# Compared case-insensitively. `amp` is here because `?amp`, `?amp=1` only select the AMP
# rendering of the same article.
TRACKING_PARAMS: frozenset[str] = frozenset(
    {
        "_ga",
        "_gl",
        "_hsenc",
        "_hsmi",
        "amp",
        "cmpid",
        "dclid",
        "fbclid",
        "gbraid",
        "gclid",
        "gclsrc",
        "igshid",
        "mc_cid",
        "mc_eid",
        "mkt_tok",
        "msclkid",
        "ocid",
        "ref_src",
        "ref_url",
        "twclid",
        "usqp",
        "wbraid",
        "yclid",
    }
)

# `utm_*` is the Google Analytics family; `amp_*` (amp_js_v, amp_gsa, amp_tf...) is added by
# AMP caches and viewers, never by the origin site.
TRACKING_PREFIXES: tuple[str, ...] = ("utm_", "amp_")

# AMP caches serve origin pages at https://<mangled-host>.<suffix>/c/s/<host>/<path>.
# The list is the one published by the AMP project (caches.json): Google and Bing.
AMP_CACHE_SUFFIXES: tuple[str, ...] = ("cdn.ampproject.org", "bing-amp.com")

_DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
# Whitespace, controls and the backslash are where URL parsers disagree (WHATWG turns `\`
# into `/`); refusing them keeps the check here and a later fetch in agreement.
_FORBIDDEN_RE = re.compile(r"[\x00-\x20\x7f\\\u0085\u00a0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff]")
_ASCII_LABEL_RE = re.compile(r"^[a-z0-9_\-]{1,63}$")
_PCT_RE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PATH_SAFE = frozenset("!$&'()*+,;=:@/%") | _UNRESERVED
_QUERY_SAFE = _PATH_SAFE | frozenset("?")
_AMP_CACHE_PATH_RE = re.compile(r"^/(?:c|v|i)/(s/)?([^/?#]+)(/.*)?$", re.DOTALL)
# HT Media (livemint, hindustantimes) serve /<slug>-<id>.html as AMP at /<slug>/amp-<id>.html.
_AMP_ID_SEGMENT_RE = re.compile(r"^amp-([0-9]{6,})(\.html?)$")
# TownNews/BLOX sites (omaha.com, theeagle.com...) serve x.html as AMP at x.amp.html.
_AMP_SUFFIX_RE = re.compile(r"^(.+)\.amp(\.html?)$")


def canonical_url(url: object) -> str | None:
    """The canonical form of an absolute http(s) URL, or None when it is not one (nor a string)."""
    if not isinstance(url, str):
        return None
    return _canonical_cached(url)


# Related items recur across articles (four in five URLs of the benchmark corpus are repeats),
# and canonicalising is the parser's largest cost after YAML; a bounded memo keeps memory flat.
@lru_cache(maxsize=1 << 14)
def _canonical_cached(url: str) -> str | None:
    return _canonical(url, depth=0)


def canonical_item_url(web_url: str | None, amp_url: str | None = None, cdn_amp_url: str | None = None) -> str | None:
    """Canonical URL of a related item: its webUrl, else its AMP URLs mapped back."""
    for candidate in (web_url, amp_url, cdn_amp_url):
        if isinstance(candidate, str):
            canonical = canonical_url(candidate)
            if canonical is not None:
                return canonical
    return None


def entry_id(canonical: str) -> str:
    """Stable feed entry id (Atom id, RSS guid) derived from a canonical URL only."""
    return "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, canonical))


def page_cut(canonical: str) -> int:
    """A stable hash of a canonical URL, 0 to 2**31 - 1: a topic's archive page ends after an
    article whose `page_cut` the page size divides (publish.history), wherever it lands."""
    return int.from_bytes(hashlib.blake2b(canonical.encode(), digest_size=4).digest(), "big") >> 1


def given_entry_id(given: str) -> str:
    """The entry id of a file's own `id` field: deterministic from it alone, always a valid IRI
    (whatever the field holds), never one a URL gives."""
    return "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, "feedworker:id:" + given))


# Up to this length an ASCII URL's canonical form, each character escaped at worst (x3),
# stays under MAX_URL_LENGTH: only its scheme and authority decide whether it has one.
_SHORT_ASCII = (MAX_URL_LENGTH - 1) // 3


def is_http_url(url: str) -> bool:
    """`canonical_url(url) is not None`, without normalising path and query where they cannot change the answer."""
    if isinstance(url, str) and len(url) <= _SHORT_ASCII and url.isascii():
        return _split(url) is not None
    return canonical_url(url) is not None


def _split(url: str) -> tuple[str, str, int | None, str, str, str] | None:
    """(scheme, host, port, path, "?" or "", query) of an absolute http(s) URL with a valid authority."""
    # Surrounding whitespace is how YAML and copy-paste leave URLs; inner whitespace is not.
    url = url.strip(" \t\r\n")
    if not url or len(url) > MAX_URL_LENGTH or _FORBIDDEN_RE.search(url):
        return None
    match = _SCHEME_RE.match(url)
    if match is None:
        return None
    scheme = match.group(1).lower()
    if scheme not in _DEFAULT_PORTS:
        return None
    rest = url[match.end() :]
    if not rest.startswith("//"):
        return None
    rest = rest[2:]

    rest, _, _fragment = rest.partition("#")
    auth_end = len(rest)
    for sep in "/?":
        pos = rest.find(sep)
        if pos != -1:
            auth_end = min(auth_end, pos)
    authority, path_query = rest[:auth_end], rest[auth_end:]
    path, has_query, query = path_query.partition("?")

    hostport = _canonical_authority(authority, scheme)
    if hostport is None:
        return None
    return scheme, hostport[0], hostport[1], path, has_query, query


def _canonical(url: str, depth: int) -> str | None:
    parts = _split(url)
    if parts is None:
        return None
    scheme, host, port, path, has_query, query = parts

    if depth == 0 and _is_amp_cache(host):
        origin = _amp_cache_origin(path, query if has_query else None)
        if origin is not None:
            mapped = _canonical(origin, depth + 1)
            if mapped is not None:
                return mapped

    path = _remove_dot_segments(_normalise_pct(path, _PATH_SAFE)) or "/"
    path = _strip_amp_path(path)
    query_out = _filter_query(_normalise_pct(query, _QUERY_SAFE)) if has_query else ""

    netloc = host if port is None else f"{host}:{port}"
    result = f"{scheme}://{netloc}{path}" + (f"?{query_out}" if query_out else "")
    return result if len(result) <= MAX_URL_LENGTH else None


def _canonical_authority(authority: str, scheme: str) -> tuple[str, int | None] | None:
    # Any userinfo is refused: credentials have no place in a feed, and
    # `http://trusted.example@evil.example/` is a classic disguise.
    if not authority or "@" in authority:
        return None
    if authority.startswith("["):
        close = authority.find("]")
        if close == -1:
            return None
        host = _canonical_ipv6(authority[1:close])
        port_text = authority[close + 1 :]
        if port_text and not port_text.startswith(":"):
            return None
        port_text = port_text[1:]
    else:
        host_text, _, port_text = authority.partition(":")
        host = _canonical_host(host_text)
    if host is None:
        return None
    if port_text == "":
        return host, None
    if not port_text.isascii() or not port_text.isdigit():
        return None
    port = int(port_text)
    if not 0 < port <= 65535:
        return None
    return host, (None if port == _DEFAULT_PORTS[scheme] else port)


def _canonical_ipv6(text: str) -> str | None:
    try:
        # Zone ids (`%eth0`) only mean something on one machine.
        return f"[{ipaddress.IPv6Address(text).compressed}]" if "%" not in text else None
    except ValueError:
        return None


def _canonical_host(text: str) -> str | None:
    if not text or "%" in text:
        return None
    if not text.isascii():
        encoded = _idna_encode(text)
        if encoded is None:
            return None
        text = encoded
    host = text.lower()
    host = host.removesuffix(".")
    if not host or len(host) > 253:
        return None
    labels = host.split(".")
    if not all(_ASCII_LABEL_RE.match(label) for label in labels):
        return None
    # A numeric last label is no TLD: it must be a plain dotted quad. Forms like
    # `2130706433` or `0x7f.1` mean 127.0.0.1 to some parsers and are refused.
    if labels[-1].isdigit() or labels[-1].startswith("0x"):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            return None
    return host


def _idna_encode(host: str) -> str | None:
    try:
        # UTS #46 non-transitional is what browsers and httpx use (straße.de stays ß).
        return idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        pass
    try:
        # IDNA 2008 refuses symbols that IDNA 2003 (and browsers) still map, e.g. ☃.net.
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def _is_amp_cache(host: str) -> bool:
    return any(host == suffix or host.endswith("." + suffix) for suffix in AMP_CACHE_SUFFIXES)


def _amp_cache_origin(path: str, query: str | None) -> str | None:
    match = _AMP_CACHE_PATH_RE.match(path)
    if match is None:
        return None
    scheme = "https" if match.group(1) else "http"
    origin = f"{scheme}://{match.group(2)}{match.group(3) or '/'}"
    return origin if query is None else f"{origin}?{query}"


def _normalise_pct(text: str, safe: frozenset[str]) -> str:
    """RFC 3986 normalisation: upper-case escapes, unescape unreserved, escape the rest."""
    if "%" not in text and safe.issuperset(text):
        return text  # the common case, and a hot path: nothing to change
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "%":
            match = _PCT_RE.match(text, i)
            if match is None:
                out.append("%25")
                i += 1
                continue
            decoded = chr(int(match.group(1), 16))
            out.append(decoded if decoded in _UNRESERVED else "%" + match.group(1).upper())
            i += 3
            continue
        if char in safe:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
        i += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    if "." not in path:
        return path
    segments = path.split("/")
    output: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if len(output) > 1:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    result = "/".join(output)
    return result if result.startswith("/") else "/" + result


def _strip_amp_path(path: str) -> str:
    """Map the AMP path conventions seen in real related items back to the article path."""
    segments = path.split("/")[1:]  # path always starts with "/"
    if len(segments) > 1 and segments[0] == "google-amp":
        # zdnet: /google-amp/article/<slug>/ is /article/<slug>/
        segments = segments[1:]
    amp_positions = [i for i, segment in enumerate(segments) if segment == "amp"]
    others = [segment for segment in segments if segment and segment != "amp"]
    if len(amp_positions) == 1 and others:
        # One `amp` segment anywhere (/x/amp, /x/amp/, /news/amp/x, /amp/news/x) is the AMP
        # twin of the same path without it. With two there is no telling which one it is.
        position = amp_positions[0]
        trailing = all(segment == "" for segment in segments[position + 1 :])
        segments = segments[:position] + segments[position + 1 :]
        if trailing and (not segments or segments[-1] != ""):
            segments.append("")
    if segments:
        last = segments[-1]
        id_match = _AMP_ID_SEGMENT_RE.match(last)
        if id_match and len(segments) > 1 and segments[-2]:
            segments = segments[:-2] + [f"{segments[-2]}-{id_match.group(1)}{id_match.group(2)}"]
        else:
            suffix_match = _AMP_SUFFIX_RE.match(last)
            if suffix_match:
                segments[-1] = suffix_match.group(1) + suffix_match.group(2)
    return "/" + "/".join(segments)


def _filter_query(query: str) -> str:
    kept: list[str] = []
    for pair in query.split("&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        name = _unquote_plus(raw_name).lower()
        if name in TRACKING_PARAMS or name.startswith(TRACKING_PREFIXES):
            continue
        # The Globe and Mail style `?outputType=amp` selects the AMP rendering.
        if name == "outputtype" and _unquote_plus(raw_value).lower() == "amp":
            continue
        kept.append(pair)
    return "&".join(kept)


def _unquote_plus(text: str) -> str:
    text = text.replace("+", " ")
    return _PCT_RE.sub(lambda m: chr(int(m.group(1), 16)), text)
