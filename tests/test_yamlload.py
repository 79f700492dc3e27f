"""The fast YAML path must read every article exactly as PyYAML's C loader does."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT, SAMPLE
from worker.ingest import yamlload
from worker.ingest.frontmatter import ArticleError, parse_article
from worker.ingest.yamlload import (
    _SPECIAL,
    has_special_characters,
    load_yaml,
    needs_reference_loader,
)

pytestmark = pytest.mark.skipif(yamlload.yaml_rs is None, reason="yaml_rs is not installed")


def outcome(data: bytes, fast: bool):
    try:
        return parse_article(data, "a.txt", fast_yaml=fast)
    except ArticleError as exc:
        return ("error", exc.field, exc.line, exc.message)


def assert_same(data: bytes) -> None:
    # repr, because NaN != NaN
    assert repr(outcome(data, True)) == repr(outcome(data, False)), data.decode("utf-8", "replace")[:500]


def front_matter(data: bytes) -> str:
    return data.decode("utf-8-sig").split("\n---\n", 1)[0].removeprefix("---\n")


def _corpus_module():
    spec = importlib.util.spec_from_file_location("bench_corpus_for_yaml", ROOT / "bench" / "corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_generated_and_example_corpora_read_the_same(tmp_path: Path):
    _corpus_module().generate(tmp_path, 400, seed=7)
    files = sorted(tmp_path.rglob("*.*")) + sorted((ROOT / "examples" / "inbox").rglob("*.*"))
    fast = 0
    for path in files:
        data = path.read_bytes()
        assert_same(data)
        fast += not needs_reference_loader(front_matter(data))
    assert fast > len(files) * 0.9  # the fast path is actually taken on sample-like files


def test_the_reference_sample_takes_the_fast_path():
    data = SAMPLE.read_bytes()
    assert not needs_reference_loader(front_matter(data))
    assert_same(data)


# What sources write and the bench corpus now carries: empty flow lists, topic and provider
# names starting with a digit, unquoted opaque tokens (base64 may start with a digit or `+`).
SOURCE_SHAPES = [
    "topics: []",
    "related: []",
    "images: []",
    "provider: {}",
    "topics: []  # none given",
    "topics:\n  - 5G\n  - 3D Printing\n  - AI",
    "provider:\n  name: 9to5Tech\n  domain: 9to5tech.example",
    "provider:\n  name: 24/7 Wire\n  domain: 247wire.example",
    "related:\n  - title: T\n    webUrl: https://e.com/r\n    provider:\n      name: 9to5Tech\n      domain: 9to5tech.example",
    "secured: 5b84Ghq+/x0=;mQgrIYNxvZX1sjCExiG6Bw==",
    "secured: +b84Ghq/x0==;mQgrIYNxvZX1sjCExiG6Bw==",
    "secured: 0xGg==",
    "5G: 9to5Mac",
    "extra: 5G # a comment",
    "extra: 1e3 G",
    "extra: 2024-01-01 G",
]


@pytest.mark.parametrize("shape", SOURCE_SHAPES)
def test_source_shapes_take_the_fast_path_and_read_the_same(shape):
    front = f"title: T\nwebUrl: https://e.com/x\n{shape}\n"
    assert not needs_reference_loader(front)
    assert_same(f"---\n{front}---\n".encode())


@pytest.mark.parametrize(
    "shape",
    [
        "topics: [5G]",
        "topics: [ ]",
        "topics: []x",
        "- []",
        "extra: 5G: x",
        "extra: 5G#x",
        "extra: 5 G\t",
        "extra: 9to5",
        "extra: 12:30 G",
        "extra: 5G\n  1e3",
    ],
)
def test_other_flow_and_digit_shapes_still_go_to_pyyaml(shape):
    assert needs_reference_loader(f"title: T\n{shape}\n")


SCALARS = [
    "yes",
    "No",
    "ON",
    "off",
    "y",
    "n",
    "true",
    "False",
    "TRUE",
    "null",
    "~",
    "Null",
    "",
    "0755",
    "0o17",
    "0x1F",
    "1e3",
    "1.5e+3",
    "1.5",
    ".5",
    "+5",
    "-0",
    "-12",
    "1_000",
    "12:30:00",
    "190:20:30",
    "2021-01-26",
    "2021-01-26T22:12:00Z",
    "2021-01-26 22:12:00",
    "2021-1-2 3:04:05 -5",
    "2021-01-26T22:12:00.123456789+02:00",
    ".inf",
    "-.Inf",
    ".NaN",
    "<<",
    "=",
    "123456789012345678901234",
    "5G rollout",
    "5G",
    "9to5Mac",
    "24/7 Wire",
    "5b84+/x==;mQ==",
    "+abc/d=",
    "1e3x",
    "0x1G",
    "[]",
    "{}",
    "[] # c",
    "C#",
    "a: b",
    "@handle",
    "`tick`",
    "&anchor x",
    "*alias",
    "!!str 5",
    "!!python/none ''",
    "[yes, 0755]",
    "{a: no}",
    "|\n  yes\n  no",
    ">-\n  0755\n  x",
    "'quoted yes'",
    '"0755"',
    '"\\x41"',
    "x # comment",
    "yes # comment",
    "https://e.com/a?b=1&c=2#frag",
    "a\u0085b",
    "a\u2028b",
    "tab\there",
]
KEYS = [
    "title",
    "webUrl",
    "excerpt",
    "published",
    "quality",
    "heat",
    "publishedDateTime",
    "topics",
    "category",
    "extra",
    "yes",
    "0755",
    "1",
]


@st.composite
def documents(draw):
    lines = []
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=6))
    for key in keys:
        kind = draw(st.sampled_from(["scalar", "list", "nested"]))
        if kind == "scalar":
            lines.append(f"{key}: {draw(st.sampled_from(SCALARS))}")
        elif kind == "list":
            lines.append(f"{key}:")
            lines += [f"  - {draw(st.sampled_from(SCALARS))}" for _ in range(draw(st.integers(1, 3)))]
        else:
            lines.append(f"{key}:")
            lines.append(f"  name: {draw(st.sampled_from(SCALARS))}")
            lines.append(f"  publishedDateTime: {draw(st.sampled_from(SCALARS))}")
    if draw(st.booleans()):
        lines.append("webUrl: https://e.com/x")
    if draw(st.booleans()):
        lines.append("title: T")
    return "\n".join(lines) + "\n"


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
@example("published:\n  name: true\n  publishedDateTime: 2021-01-26\nwebUrl: https://e.com/x\ntitle: T\n")
@example("published:\n  name: true\n  publishedDateTime: 2021-01-26T22:12:00Z\nwebUrl: https://e.com/x\ntitle: T\n")
@example("title: true\nextra:\n  name: true\n  publishedDateTime: 2021-01-26\nwebUrl: https://e.com/x\ntitle: T\n")
def test_hostile_scalars_read_the_same(document):
    assert_same(f"---\n{document}---\n".encode())


@settings(max_examples=600, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
@example("_0")  # found here once: yaml_rs read it as 0
def test_arbitrary_text_reads_the_same(text):
    assert_same(f"---\ntitle: T\nwebUrl: https://e.com/x\nexcerpt: {text}\n---\n".encode("utf-8", "surrogatepass"))


def test_the_yaml_1_1_readings_are_kept():
    assert load_yaml("a: yes\nb: 0755\nc: 1e3\nd: 12:30:00") == {"a": True, "b": 493, "c": "1e3", "d": 45000}


@settings(max_examples=3000, deadline=None)
@given(
    st.text(alphabet=st.characters(), max_size=40) | st.text(alphabet=st.characters(max_codepoint=0x3000), max_size=40)
)
def test_the_printable_shortcut_finds_what_the_special_character_pattern_does(text):
    assert has_special_characters(text) == bool(_SPECIAL.search(text))


def test_each_refused_character_is_found():
    for char in "\x00\t\r\x7f\x85\x9f\u2028\u2029\ud800\udfff\ufeff\ufffe\uffff":
        assert has_special_characters(f"title: a{char}b\n") == bool(_SPECIAL.search(char)) is True, repr(char)
    assert has_special_characters("a: <<\n") and not has_special_characters("a: \xa0\u2019\ue000 b\n")


# Tokens a plain scalar starting with a digit or sign may be: every YAML 1.1 and 1.2 number
# and date form, with the characters that make (or do not make) them text.
RISKY_TOKENS = [
    "_0",  # yaml_rs: 0, PyYAML: "_0" (found by test_arbitrary_text_reads_the_same)
    "__1_0",
    "_.5",
    "_1e3",
    "5G",
    "5e",
    "5e1",
    "1e3",
    "1E+3",
    "1e-3",
    "1_0",
    "1__0",
    "1_000.5",
    "0x1F",
    "0X1F",
    "0x1_F",
    "0o17",
    "0O17",
    "0b101",
    "0B101",
    "0755",
    "0_7",
    "1:30",
    "12:30:00",
    "190:20:30.15",
    "-1:30",
    "2024-01-01",
    "2024-1-1 1:02:03",
    "2024-01-01T10:00:00Z",
    "2024-01-01t10:00:00.5 +05:00",
    ".5",
    "5.",
    "0.",
    "+1",
    "+.5",
    "+.inf",
    "+.Inf",
    "+.nan",
    "1.e3",
    "1.5E3",
    "0e0",
    "00",
    "0_",
    "0b",
    "0x",
    "0o",
    "+0x1",
    "+0o7",
    "+0b1",
    "1f",
    "1d",
    "1ab",
    "9to5",
    "9to5Mac",
    "3D Printing",
    "24/7",
    "5=",
    "5;",
    "5/",
    "1 000",
    "1,000",
    "+",
    "+_",
    "+infinity",
    "1y",
]
_TOKEN_ALPHABET = "0123456789_.:+-eExXoObBaAcCdDfFiInNtTzZyYgGkKpPwW/=; "


def _yaml_rs_reads_as_pyyaml_does(text: str) -> None:
    """Whenever the screen lets `text` through, yaml_rs reads it as PyYAML does (or refuses
    it, and then load_yaml asks PyYAML)."""
    if needs_reference_loader(text):
        return
    try:
        fast = yamlload.yaml_rs.loads(
            text, parse_datetime=False, duplicate_key_policy=yamlload.yaml_rs.DuplicateKeyPolicy.LastWins
        )
    except Exception:  # noqa: BLE001 - load_yaml falls back to PyYAML
        return
    assert repr(fast) == repr(yaml.load(text, Loader=yaml.CSafeLoader)), text


def _contexts(token: str) -> list[str]:
    return [
        f"a: {token}\n",
        f"a: {token} # c\n",
        f"a:\n  - {token}\n",
        f"{token}: x\n",
        f"a:\n  {token}: x\n",
        f"a: {token}\n  {token}\n",
        f"a: x\n  {token}\n",
        f"a: {token}\n  x\n",
        f"a:\n  - {token} #x: z\n",  # a comment that looks like a mapping
        f"a: {token} #x: [\n",
    ]


def _as_article_date_reads_the_same(token: str) -> None:
    # Under publishedDateTime the screen lets unquoted ISO dates through: yaml_rs gives the
    # text, PyYAML a datetime, and the article's date parsing makes them one instant.
    for date_line in (
        f"publishedDateTime: {token}",
        f"related:\n  - webUrl: https://e.com/r\n    publishedDateTime: {token}",
    ):
        assert_same(f"---\ntitle: T\nwebUrl: https://e.com/x\n{date_line}\n---\n".encode())


# Of RISKY_TOKENS, those with a character no number or date uses (`9to5`, `1ab`, `+infinity`
# and `1y` are text to both loaders too, but spelled in number characters: false alarms).
# `+.inf` was let through before: both loaders give infinity.
LET_THROUGH = {"5G", "9to5Mac", "3D Printing", "24/7", "5=", "5;", "5/", "+.inf", "+.Inf"}


@pytest.mark.parametrize("token", RISKY_TOKENS)
def test_risky_tokens_read_the_same_when_let_through(token):
    for text in _contexts(token):
        _yaml_rs_reads_as_pyyaml_does(text)
    _as_article_date_reads_the_same(token)
    assert needs_reference_loader(f"a: {token}\n") == (token not in LET_THROUGH)


@settings(max_examples=3000, deadline=None)
@given(
    st.sampled_from("0123456789+"),
    st.text(alphabet=_TOKEN_ALPHABET, max_size=14),
    st.sampled_from(range(10)),
)
@example("5", "G", 0)
@example("1", "e3", 0)
@example("1", "2:30:00.5", 0)
def test_generated_digit_tokens_read_the_same_when_let_through(first, rest, context):
    token = (first + rest).rstrip(" ")
    _yaml_rs_reads_as_pyyaml_does(_contexts(token)[context])
    if context == 0:
        _as_article_date_reads_the_same(token)


def test_many_seeded_digit_tokens_read_the_same_when_let_through():
    rng = random.Random(15)
    let_through = 0
    for _ in range(20_000):
        token = rng.choice("0123456789+") + "".join(rng.choice(_TOKEN_ALPHABET) for _ in range(rng.randrange(8)))
        token = token.rstrip(" ")
        for text in _contexts(token)[:4]:
            _yaml_rs_reads_as_pyyaml_does(text)
        let_through += not needs_reference_loader(f"a: {token}\n")
    assert let_through > 5_000  # the rule lets text through, not only numbers refused
