"""Pure: untrusted text as text: reduced to its characters once, and escaped for where it is shown."""

from __future__ import annotations

import html
import re

__all__ = ["XML_ILLEGAL", "has_visible_text", "plain_text", "printable", "topic_label", "xml_safe"]

# The characters XML 1.0 forbids (lxml refuses them), lone surrogates among them: the one
# definition every module that checks or cleans text for a feed uses.
_XML_ILLEGAL_CHARS = "\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff"
XML_ILLEGAL = re.compile(f"[{_XML_ILLEGAL_CHARS}]")
# What shown text drops: those, and DEL, which XML allows but is a control no reader shows.
_NOT_SHOWN = re.compile(f"[{_XML_ILLEGAL_CHARS}\x7f]")
# Bidirectional embeddings, overrides and isolates: they reorder the text around them, so a
# title or topic could show a reader something other than what it says (U+202E "RLO").
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
# What a terminal would act on rather than show: C0 and C1 controls, DEL, bidi controls.
_TERMINAL_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def xml_safe(text: str) -> str:
    """Drop the characters that XML 1.0 cannot carry (and DEL)."""
    return _NOT_SHOWN.sub("", text)


def plain_text(text: str) -> str:
    """The characters a piece of untrusted text shows, whitespace collapsed.

    The text is read as HTML exactly once: tags are dropped (script and style with their
    content) and entities decoded. What comes out is characters, never markup: `&lt;b&gt;`
    becomes the four characters `<b>`, which every output escapes for its own format.
    """
    if "<" in text or "&" in text:
        import nh3  # here: commands that only print (status, check) never load it

        text = html.unescape(nh3.clean(text, tags=set(), clean_content_tags={"script", "style"}))
    return " ".join(_BIDI_CONTROLS.sub("", xml_safe(text)).split())


def topic_label(name: str) -> str:
    """A topic name as feeds show it: its plain text without angle brackets, which a label
    never needs and a reader that takes categories for HTML would take for a tag."""
    return " ".join(plain_text(name).replace("<", " ").replace(">", " ").split())


def has_visible_text(name: str) -> bool:
    """Whether a topic name shows anything at all once reduced to its characters."""
    return bool(topic_label(name))


def printable(text: str) -> str:
    """Text for a terminal line: control characters shown as escapes, so a file name with a
    newline or an escape sequence cannot forge lines or move the cursor."""
    if not _TERMINAL_CONTROLS.search(text):
        return text
    return _TERMINAL_CONTROLS.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)
