"""Pure: an article file's bytes -> a validated Article, or an ArticleError naming field and line."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from email.utils import parsedate_to_datetime
from typing import Any, Literal, overload

import yaml

from worker.ingest.yamlload import load_yaml
from worker.model import Article, Image, RelatedItem
from worker.text import XML_ILLEGAL, has_visible_text
from worker.topics import display_name
from worker.urls import canonical_item_url, canonical_url, is_http_url

__all__ = [
    "KNOWN_FIELDS",
    "ArticleError",
    "ParseLimits",
    "parse_article",
]

KNOWN_FIELDS = frozenset(
    {
        "title",
        "webUrl",
        "category",
        "excerpt",
        "publishedDateTime",
        "originalUrl",
        "type",
        "quality",
        "heat",
        "published",
        "provider",
        "topics",
        "images",
        "related",
        "id",
    }
)
# Known fields by their name in lower case (`_` and `-` dropped): `webURL`, `web_url` -> webUrl.
_FOLDED_FIELDS = {name.lower(): name for name in sorted(KNOWN_FIELDS)}
# Unknown fields that are meant as they are: never taken for a misspelling.
_NOT_A_MISS = frozenset({"secured", "id"})
_FENCE = re.compile(r"^(?:---|\.\.\.)[ \t]*$", re.MULTILINE)
_OPEN_FENCE = re.compile(r"---[ \t]*\n")


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds on untrusted input; the defaults suit news articles."""

    max_nodes: int = 50_000
    max_topics: int = 20
    max_related: int = 50
    max_images: int = 20
    max_title_chars: int = 300
    max_excerpt_chars: int = 2000
    max_body_chars: int = 200_000


class ArticleError(Exception):
    """A file that cannot be taken: names the file, the field and the line where known."""

    def __init__(self, path: str, message: str, *, field: str | None = None, line: int | None = None):
        self.path = path
        self.field = field
        self.line = line
        self.message = message
        super().__init__(str(self))

    @property
    def detail(self) -> str:
        """The message without the path, as stored next to the path in the quarantine."""
        where = f" (line {self.line})" if self.line else ""
        return f"{self.field}: {self.message}{where}" if self.field else f"{self.message}{where}"

    def __str__(self) -> str:
        return f"{self.path}: {self.detail}"


def parse_article(data: bytes, path: str, limits: ParseLimits = ParseLimits(), *, fast_yaml: bool = True) -> Article:
    """Validate one article file. Raises ArticleError; never anything else for any input.

    `fast_yaml=False` reads the YAML with PyYAML alone (the reference the fast path must equal).
    """
    text = _decode(data, path)
    front, body, body_line = _split(text, path)
    mapping = _load_yaml(front, path, fast_yaml)
    _check_expansion(mapping, path, front, limits.max_nodes)
    return _Fields(path, front, limits).article(mapping, body, body_line)


def _decode(data: bytes, path: str) -> str:
    if b"\x00" in data:
        raise ArticleError(path, "not a text file (it contains NUL bytes)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ArticleError(
            path, f"not UTF-8 text: byte 0x{data[exc.start]:02X} at offset {exc.start} cannot be decoded", line=line
        ) from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _split(text: str, path: str) -> tuple[str, str, int]:
    if not text.strip():
        raise ArticleError(path, "the file is empty")
    if not _OPEN_FENCE.match(text):
        raise ArticleError(path, "front matter must start with a '---' line", line=1)
    start = text.index("\n") + 1
    closing = _FENCE.search(text, start)
    if closing is None:
        raise ArticleError(path, "no closing '---' line after the front matter opened", line=1)
    front = text[start : closing.start()]
    body = text[closing.end() + 1 :]
    return front, body, text.count("\n", 0, closing.end()) + 2


def _load_yaml(front: str, path: str, fast: bool) -> dict[str, Any]:
    try:
        mapping = load_yaml(front, fast=fast)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 2 if mark is not None else None
        problem = " ".join(filter(None, [exc.context, exc.problem]))
        if isinstance(exc, yaml.constructor.ConstructorError) and "tag" in (exc.problem or ""):
            problem = f"unsupported YAML tag ({exc.problem})"
        raise ArticleError(path, f"invalid YAML: {problem}", line=line) from None
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError) as exc:
        raise ArticleError(path, f"invalid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(mapping, dict):
        raise ArticleError(path, "the front matter must be a mapping of fields", line=2)
    return mapping


def _check_expansion(mapping: dict[str, Any], path: str, front: str, max_nodes: int) -> None:
    """Refuse alias bombs: PyYAML shares aliased objects, so the blow-up happens on a walk."""
    if "*" not in front:
        return  # no aliases, so the node count is bounded by the (size-capped) text
    budget = max_nodes
    stack: list[Any] = [mapping]
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            raise ArticleError(path, f"YAML aliases expand past {max_nodes} nodes (an alias bomb?)")
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


class _Fields:
    """Field rules of the article format, with the file's text at hand for line numbers."""

    def __init__(self, path: str, front: str, limits: ParseLimits):
        self.path = path
        self.front = front
        self.limits = limits
        self.warnings: list[str] = []

    def error(self, key: str, message: str) -> ArticleError:
        return ArticleError(self.path, message, field=key, line=self.line_of(key))

    def line_of(self, key: str) -> int | None:
        top = key.split(".")[0].split("[")[0]
        match = re.search(rf"^{re.escape(top)}[ \t]*:", self.front, re.MULTILINE)
        return self.front.count("\n", 0, match.start()) + 2 if match else None

    def article(self, raw: dict[str, Any], body: str, body_line: int) -> Article:
        # A YAML "\0" escape makes a NUL no text field may hold (PostgreSQL's text refuses it).
        raw = _without_nul(raw)
        title = self.text(raw, "title", required=True, cap=self.limits.max_title_chars)
        web_url_raw = raw.get("webUrl")
        if web_url_raw is None or web_url_raw == "":
            raise self.error("webUrl", "required field is missing" + self.found_instead(raw, "webUrl"))
        if not isinstance(web_url_raw, str):
            raise self.error("webUrl", f"must be a string, not {_type_name(web_url_raw)}")
        # A URL is linked to as written, so it must hold only characters XML can carry
        # (canonical_url accepts U+FFFE/U+FFFF, percent-encoding them in the canonical form only).
        url = None if XML_ILLEGAL.search(web_url_raw) else canonical_url(web_url_raw.strip())
        if url is None:
            raise self.error("webUrl", f"must be an absolute http or https URL, not {_shorten(web_url_raw)!r}")
        published = raw.get("published", True)
        if published is None:
            published = True
        if not isinstance(published, bool):
            raise self.error("published", f"must be true or false, not {_shorten(published)!r}")
        provider_name, provider_domain = self.provider(raw.get("provider"), "provider", strict=True)
        body_text = body.strip() or None
        if body_text is not None and len(body_text) > self.limits.max_body_chars:
            body_text = body_text[: self.limits.max_body_chars]
            self.warnings.append(f"body: longer than {self.limits.max_body_chars} characters, cut (line {body_line})")
        original = raw.get("originalUrl")
        unknown = {key: value for key, value in raw.items() if key not in KNOWN_FIELDS}
        for key in unknown:
            meant = _likely_field(key)
            if meant is not None:
                line = self.line_of(key)
                where = f" (line {line})" if line else ""
                self.warnings.append(f"{key}: unknown field, stored but not used; did you mean {meant}?{where}")
        extra = _storable(unknown)
        return Article(
            url=url,
            web_url=web_url_raw.strip(),
            title=title,
            excerpt=self.text(raw, "excerpt", cap=self.limits.max_excerpt_chars),
            body=body_text,
            published_at=self.datetime(raw.get("publishedDateTime"), "publishedDateTime", strict=True),
            category=self.text(raw, "category", cap=200),
            type=self.text(raw, "type", cap=100),
            original_url=original if isinstance(original, str) and is_http_url(original) else None,
            quality=self.integer(raw, "quality"),
            heat=self.integer(raw, "heat"),
            is_published=published,
            provider_name=provider_name,
            provider_domain=provider_domain,
            topics=self.topics(raw.get("topics")),
            images=self.images(raw.get("images"), "images"),
            related=self.related(raw.get("related"), url),
            extra=extra,
            given_id=self.given_id(raw.get("id")),
            warnings=tuple(self.warnings),
        )

    def found_instead(self, raw: dict[str, Any], key: str) -> str:
        """`; found webURL (line 3): did you mean webUrl?` when a near miss of a missing field is there."""
        if key in raw:
            return ""
        for other in raw:
            if other not in KNOWN_FIELDS and _likely_field(other) == key:
                line = self.line_of(other)
                where = f" (line {line})" if line else ""
                return f"; found {other}{where}: did you mean {key}?"
        return ""

    @overload
    def text(self, raw: dict[str, Any], key: str, *, required: Literal[True], cap: int) -> str: ...
    @overload
    def text(self, raw: dict[str, Any], key: str, *, required: bool = False, cap: int) -> str | None: ...
    def text(self, raw: dict[str, Any], key: str, *, required: bool = False, cap: int) -> str | None:
        value = raw.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise self.error(key, "required field is missing or empty" + self.found_instead(raw, key))
            return None
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, not {_type_name(value)}")
        value = value.strip()
        if len(value) > cap:
            self.warnings.append(f"{key}: longer than {cap} characters, cut")
            value = value[:cap].rstrip() + "…"
        return value

    def given_id(self, value: Any) -> str | None:
        """The optional `id`: a string (a number is taken as its digits), at most 500 characters."""
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            self.warnings.append(f"id: {_shorten(value)!r} is not a string, ignored")
            return None
        given: str = value.strip()
        if len(given) > 500:
            self.warnings.append("id: longer than 500 characters, ignored")
            return None
        return given

    def integer(self, raw: dict[str, Any], key: str) -> int | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, not {_shorten(value)!r}")
        if not -(2**62) < value < 2**62:
            raise self.error(key, "is out of range")
        return value

    def datetime(self, value: Any, key: str, *, strict: bool) -> datetime | None:
        if value is None or value == "":
            return None
        parsed = _to_datetime(value)
        if parsed is None:
            if strict:
                raise self.error(
                    key, f"must be an ISO 8601 date-time from year {_MIN_YEAR} on, not {_shorten(value)!r}"
                )
            self.warnings.append(f"{key}: {_shorten(value)!r} is not a date-time, ignored")
        return parsed

    def provider(self, value: Any, key: str, *, strict: bool) -> tuple[str | None, str | None]:
        if value is None:
            return None, None
        if isinstance(value, str):  # a bare name is a common shorthand
            return (value.strip()[:200] or None), None
        if not isinstance(value, dict):
            if strict:
                raise self.error(key, f"must be a mapping with name and domain, not {_type_name(value)}")
            return None, None
        name, domain = value.get("name"), value.get("domain")
        name = name.strip()[:200] or None if isinstance(name, str) else None
        domain = domain.strip()[:200] or None if isinstance(domain, str) else None
        return name, domain

    def topics(self, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.error("topics", f"must be a list of strings, not {_type_name(value)}")
        names: list[str] = []
        for index, item in enumerate(value):
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                item = str(item)
            if not isinstance(item, str):
                raise self.error(f"topics[{index}]", f"must be a string, not {_type_name(item)}")
            name = display_name(item)[:200]
            if name and not has_visible_text(name):
                # Markup or controls alone: shown as nothing, and never shown raw.
                self.warnings.append(f"topics[{index}]: dropped, no visible text in {_shorten(name)!r}")
                continue
            if name and name not in names:
                names.append(name)
        if len(names) > self.limits.max_topics:
            self.warnings.append(f"topics: more than {self.limits.max_topics}, the rest ignored")
            names = names[: self.limits.max_topics]
        return tuple(names)

    def images(self, value: Any, key: str) -> tuple[Image, ...]:
        items = self.item_list(value, key)
        images: list[Image] = []
        for index, item in items:
            url = item.get("url") if isinstance(item, dict) else item if isinstance(item, str) else None
            url = url.strip() if isinstance(url, str) else None
            if not url or XML_ILLEGAL.search(url) or not is_http_url(url):
                self.warnings.append(f"{key}[{index}]: dropped, no absolute http(s) url")
                continue
            width = item.get("width") if isinstance(item, dict) else None
            height = item.get("height") if isinstance(item, dict) else None
            images.append(Image(url, _dimension(width), _dimension(height)))
            if len(images) == self.limits.max_images:
                break
        return tuple(images)

    def related(self, value: Any, own_url: str) -> tuple[RelatedItem, ...]:
        seen = {own_url}
        related: list[RelatedItem] = []
        for index, item in self.item_list(value, "related"):
            where = f"related[{index}]"
            if not isinstance(item, dict):
                self.warnings.append(f"{where}: dropped, not a mapping")
                continue
            urls = [item.get(k) for k in ("webUrl", "ampWebUrl", "cdnAmpWebUrl")]
            if not all(u is None or isinstance(u, str) for u in urls):
                self.warnings.append(f"{where}: dropped, a URL field is not a string")
                continue
            url = canonical_item_url(*urls)
            if url is None:
                self.warnings.append(f"{where}: dropped, no absolute http(s) webUrl")
                continue
            if url in seen:
                continue  # the article itself, or a duplicate of an earlier item
            seen.add(url)
            title = item.get("title")
            excerpt = item.get("excerpt")
            name, domain = self.provider(item.get("provider"), f"{where}.provider", strict=False)
            images = self.images(item.get("images"), f"{where}.images") if item.get("images") else ()
            related.append(
                RelatedItem(
                    url=url,
                    web_url=next(u.strip() for u in urls if u and canonical_url(u.strip())),
                    title=title.strip()[: self.limits.max_title_chars] or None if isinstance(title, str) else None,
                    excerpt=excerpt.strip()[: self.limits.max_excerpt_chars] or None
                    if isinstance(excerpt, str)
                    else None,
                    published_at=self.datetime(
                        item.get("publishedDateTime"), f"{where}.publishedDateTime", strict=False
                    ),
                    provider_name=name,
                    provider_domain=domain,
                    image_url=images[0].url if images else None,
                )
            )
            if len(related) == self.limits.max_related:
                self.warnings.append(f"related: more than {self.limits.max_related} items, the rest ignored")
                break
        return tuple(related)

    def item_list(self, value: Any, key: str) -> list[tuple[int, Any]]:
        if value is None:
            return []
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list):
            self.warnings.append(f"{key}: ignored, not a list")
            return []
        return list(enumerate(value))


def _without_nul(value: Any, depth: int = 0) -> Any:
    """`value` with every NUL in its strings (keys too) replaced by U+FFFD; the YAML loader
    already capped the depth, this only follows it."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if depth > 128:
        return value
    if isinstance(value, dict):
        return {_without_nul(key, depth + 1): _without_nul(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_without_nul(item, depth + 1) for item in value)
    return value


def _likely_field(key: Any) -> str | None:
    """The known field an unknown one is probably a misspelling of: the same name but for
    case, `_` and `-` (`webURL`, `published_date_time`), else a close match (`topcis`)."""
    if not isinstance(key, str) or key in _NOT_A_MISS or len(key) > 100:
        return None
    folded = key.lower().replace("_", "").replace("-", "")
    exact = _FOLDED_FIELDS.get(folded)
    if exact is not None:
        return exact
    close = difflib.get_close_matches(folded, _FOLDED_FIELDS, n=1, cutoff=0.8)
    return _FOLDED_FIELDS[close[0]] if close else None


_MIN_YEAR = 1000  # RSS dates (RFC 822) need a four-digit year; an earlier one is an error


def _to_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time())
    elif isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            try:
                parsed = parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                return None
    else:
        return None
    try:
        parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
    return parsed if parsed.year >= _MIN_YEAR else None


_MAX_EXTRA_DEPTH = 64  # the store's JSON encoder (orjson) refuses nesting past 254 levels


def _storable(value: Any, depth: int = 0) -> Any:
    """Unknown fields as the store can write them (JSON): integers beyond 64 bits become
    strings, and so does anything nested deeper than _MAX_EXTRA_DEPTH."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, (dict, list, tuple, set, frozenset)) and depth >= _MAX_EXTRA_DEPTH:
        try:
            return str(value)
        except RecursionError:  # str() recurses as deep as the value goes
            return "…"
    if isinstance(value, dict):
        return {_storable_key(key, depth + 1): _storable(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (set, frozenset)):  # !!set: in a stable order, so equal files store equal rows
        return sorted((_storable(item, depth + 1) for item in value), key=repr)
    if isinstance(value, (list, tuple)):  # !!pairs and !!omap load as lists of tuples
        return [_storable(item, depth + 1) for item in value]
    if value is None or isinstance(value, (bool, float, str, date, time)):
        return value  # the JSON encoder writes dates and times as RFC 3339
    return str(value)  # bytes (!!binary) and anything else: their text


def _storable_key(key: Any, depth: int) -> Any:
    stored = _storable(key, depth)
    return stored if isinstance(stored, (str, int, float, bool)) or stored is None else str(stored)


def _dimension(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 100_000 else None


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _shorten(value: Any, limit: int = 60) -> str:
    # A date inside the value shows the same whichever YAML reader read it (one gives a
    # date, the other the text): always in its ISO 8601 form.
    text = str(_dates_as_iso(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _dates_as_iso(value: Any, depth: int = 0) -> Any:
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    if isinstance(value, str) and _LOOKS_LIKE_A_DATE.match(value):
        try:
            return (date if len(value) == 10 else datetime).fromisoformat(value).isoformat()
        except ValueError:
            return value
    if depth < 8 and isinstance(value, dict):
        return {key: _dates_as_iso(item, depth + 1) for key, item in value.items()}
    if depth < 8 and isinstance(value, list):
        return [_dates_as_iso(item, depth + 1) for item in value]
    return value


_LOOKS_LIKE_A_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
