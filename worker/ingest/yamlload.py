"""Pure: front-matter YAML -> Python data; a fast parser where it provably agrees with PyYAML.

PyYAML's C loader (`yaml.CSafeLoader`) is the reference. `yaml_rs` (a Rust YAML 1.2
parser) is about ten times faster but resolves some plain scalars differently, because
YAML 1.1 and 1.2 disagree: `yes`/`no`/`on`/`off`, `0755`, `1e3`, `12:30:00`, `<<`, and
unquoted timestamps. Before using it, the text is screened for every plain scalar where
the two could differ; such a document, a tag, an anchor or alias, a flow collection other
than an empty one, or anything yaml_rs refuses, is read by PyYAML instead.
tests/test_yamlload.py checks both give the same articles over generated, sample and
hostile corpora, and over generated tokens that start like numbers.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

try:  # optional: without it everything goes through PyYAML
    import yaml_rs
except ImportError:  # pragma: no cover
    yaml_rs = None  # type: ignore[assignment]  # the optional module's stand-in; load_yaml tests for None

__all__ = ["YAMLError", "has_special_characters", "load_yaml", "needs_reference_loader"]

YAMLError = yaml.YAMLError

# Plain scalars both parsers resolve alike (a trailing comment allowed).
_AGREED = re.compile(
    r"(?:-?(?:0|[1-9][0-9]{0,17})|true|True|TRUE|false|False|FALSE|~|null|Null|NULL"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))[ ]*(?:[ ]#.*)?"
)
# An unquoted date-time under `publishedDateTime`: yaml_rs (asked for no datetimes) gives
# the string, PyYAML a datetime, and the article's date parsing makes them the same instant.
_ISO_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{3}|\.[0-9]{6})?(?:Z|[+-][0-9]{2}:[0-9]{2})?)?[ ]*"
)
# Characters PyYAML refuses or reads as line breaks (YAML 1.2 does not), tabs, merge keys.
_SPECIAL = re.compile("[^\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]|<<")
# A token starting with one of these may resolve to something other than a plain string.
# `_` too: yaml_rs reads `_0`, `__1_0`, `_.5` and `_1e3` as numbers, PyYAML as text.
_RISKY_FIRST = frozenset("-+._0123456789<=@`!&*%|>[]{}?,:#")
# Every character that any implicit resolver which can match a token starting with a digit or
# `+` accepts: PyYAML's YAML 1.1 int (`0b`, `0x` + hex digits, octal `0…`, `_`, sexagesimal
# `1:20`), float (`1_000.5`, `.5`, `1.e+3`, sexagesimal `1:20.5`, `.inf`, `.nan`) and timestamp
# (`2001-12-14`, `t`/`T` or spaces, `Z`, `+05:00`), and yaml_rs's YAML 1.2 core int (`0o`,
# `0x`, `0b`, either case, `_`) and float (`1e3`, `.inf`/`.nan` in any case). `y` (of
# `infinity`, which neither takes) is a margin. The other resolvers (bool, null, merge `<<`,
# value `=`) only match tokens starting with a letter, `~`, `<` or `=`, or the empty token.
_NUMBER_CHARACTERS = frozenset("0123456789+-._: \tabcdefABCDEFiInNoOtTxXyYzZ")
# A plain scalar starting with a digit or `+` in characters that cannot open anything (no
# `#`, `:`, quote, bracket, indicator or tab): its whole value, whatever lines continue it.
_WORDLIKE = re.compile(r"[0-9+][0-9A-Za-z+/=;._ -]*")
# An empty flow sequence or mapping as a whole value; both loaders give [] or {}.
_EMPTY_FLOW = re.compile(r"(?:\[\]|\{\})[ ]*(?:[ ]#.*)?")
_BOOL_WORDS = frozenset(
    ["y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF"]
)
_BOOL_FIRST = frozenset(word[0] for word in _BOOL_WORDS)
_DATE_KEY = "publishedDateTime"


def needs_reference_loader(text: str) -> bool:
    """True when yaml_rs and PyYAML might read `text` differently (false alarms are fine).

    Looks at the first plain scalar of every line and the value after its first `: `:
    that is where a YAML 1.1/1.2 difference can hide in block-style front matter. Flow
    collections, block scalars, quoted keys, tags, anchors and aliases all go to PyYAML.
    """
    if has_special_characters(text):
        return True
    field = ""  # the article field the line belongs to: only its own and its related items'
    for line in text.split("\n"):  # publishedDateTime are read as dates whatever their type
        rest = line.lstrip(" ")
        top_level = not line.startswith(" ")
        if rest and top_level and rest[0] not in "#-":
            field = rest.partition(":")[0]
        date_key_here = top_level or field == "related"
        while rest.startswith("- "):
            rest = rest[2:].lstrip(" ")
        if not rest or rest[0] == "#":
            continue
        if rest[0] in "\"'":
            if ": " in rest or rest.endswith(":"):
                return True  # a quoted key: its value is not looked at here
            continue
        key, separator, value = rest.partition(": ")
        if not separator and key.endswith(":"):
            key = key[:-1]
        # The common line, `key: text`, passes both checks on its first characters alone.
        if (key[:1] in _RISKY_FIRST or key[:1] in _BOOL_FIRST) and _risky(key.rstrip(" "), None):
            return True
        if separator:
            value = value.lstrip(" ")
            if (
                value
                and (value[0] in _RISKY_FIRST or value[0] in _BOOL_FIRST)
                and _risky(value, key if date_key_here else None)
                and not _EMPTY_FLOW.fullmatch(value)
            ):
                return True
    return False


def has_special_characters(text: str) -> bool:
    """`_SPECIAL.search(text)`, mostly without the regex: every character it finds is a
    control, surrogate, format, separator or non-character, and none of those is printable."""
    if "<<" in text:
        return True
    if text.replace("\n", " ").isprintable():
        return False
    return _SPECIAL.search(text) is not None


def _risky(token: str, key: str | None) -> bool:
    if not token or token[0] in "\"'#":
        return False
    if token in _BOOL_WORDS or token.partition(" #")[0].rstrip(" ") in _BOOL_WORDS:
        return True
    if token[0] not in _RISKY_FIRST:
        return False
    if _AGREED.fullmatch(token):
        return False
    if key == _DATE_KEY and _ISO_TIMESTAMP.fullmatch(token):
        return False
    return not _read_as_text_by_both(token)


def _read_as_text_by_both(token: str) -> bool:
    """True when `token`, a plain scalar starting with a digit or `+` (`5G`, `9to5Mac`,
    `24/7 Wire`, an unquoted base64 `5b84…==`), is a string to both loaders: it holds a
    character no number or date of either uses, so no implicit resolver can match it."""
    scalar = token.partition(" #")[0].rstrip(" ")
    return _WORDLIKE.fullmatch(scalar) is not None and not _NUMBER_CHARACTERS.issuperset(scalar)


def load_yaml(text: str, *, fast: bool = True) -> Any:
    """The YAML document in `text`, as PyYAML's safe C loader reads it. Raises YAMLError."""
    if fast and yaml_rs is not None and not needs_reference_loader(text):
        try:
            return yaml_rs.loads(text, parse_datetime=False, duplicate_key_policy=yaml_rs.DuplicateKeyPolicy.LastWins)
        except Exception:  # noqa: BLE001, S110 - PyYAML gives the verdict, with its line numbers
            pass
    return yaml.load(text, Loader=yaml.CSafeLoader)
