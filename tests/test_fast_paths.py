"""Fast paths of the ingest must answer exactly as their slow twins (docs/benchmarks.md,
"Fast paths on record"). The YAML ones (yaml_rs screened against PyYAML, and the
`isprintable` shortcut of the screen) have theirs in tests/test_yamlload.py."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT
from worker.config import SourceConfig
from worker.ingest.scanner import _matcher, _SuffixMatcher

# What `_SUFFIX_ONLY` lets through as an extension: `**/*.<ext>` patterns take the fast path.
EXTENSIONS = st.text(alphabet="abcmdtxTXMD019_-", min_size=1, max_size=4)
# Paths built from the pieces where a glob and a suffix test could part: separators, dots
# (hidden segments, `.`/`..`), the extensions themselves, glob syntax, controls, surrogates.
PIECES = st.sampled_from(
    [
        "/",
        "//",
        ".",
        "..",
        "a",
        "b.",
        ".txt",
        "txt",
        ".md",
        "md",
        "\\",
        "*",
        "?",
        "[",
        "]",
        "!",
        "{",
        "}",
        ",",
        "~",
        "#",
        " ",
        "\n",
        "\udcff",
        "é",
    ]
)
PATHS = st.lists(PIECES | st.text(max_size=3) | EXTENSIONS, max_size=10).map("".join) | st.text()


@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EXTENSIONS, min_size=1, max_size=3), PATHS)
def test_the_suffix_matcher_answers_as_wcmatch_for_any_path(extensions, path):
    patterns = tuple(f"**/*.{extension}" for extension in extensions)
    fast, slow = _matcher(patterns), _matcher(patterns, fast=False)
    assert isinstance(fast, _SuffixMatcher) and not isinstance(slow, _SuffixMatcher)
    assert fast.match(path) == slow.match(path), (patterns, path)


def test_the_default_patterns_take_the_fast_path_and_agree_on_the_examples():
    patterns = SourceConfig.model_fields["include"].default
    fast, slow = _matcher(patterns), _matcher(patterns, fast=False)
    assert isinstance(fast, _SuffixMatcher)
    inbox = ROOT / "examples" / "inbox"
    names = [str(path.relative_to(inbox)) for path in inbox.rglob("*")]
    names += ["a/.hidden.txt", ".git/x.md", "x.txt/", "notes.txt.bak", "a.md~"]
    assert [fast.match(name) for name in names] == [slow.match(name) for name in names]
    assert sum(fast.match(name) for name in names) >= 33  # every article file of the examples


def test_other_patterns_go_to_wcmatch():
    for patterns in [("*.txt",), ("**/*.txt", "news/**/*.md"), ("**/*.{txt,md}",), ("!**/*.txt",)]:
        assert not isinstance(_matcher(patterns), _SuffixMatcher), patterns
