"""The fast YAML path must read every article exactly as PyYAML's C loader does."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT
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
        fast += not needs_reference_loader(data.decode("utf-8-sig").split("\n---\n", 1)[0].removeprefix("---\n"))
    assert fast > len(files) * 0.9  # the fast path is actually taken on sample-like files


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
