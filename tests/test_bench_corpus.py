"""Tests of the benchmark corpus generator (bench/corpus.py): determinism, shape, edits."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "inbox" / "2021" / "01" / "000_5ffeefc380e2a43b.txt"
N = 200


def _load_corpus():
    spec = importlib.util.spec_from_file_location("bench_corpus", ROOT / "bench" / "corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_corpus"] = module
    spec.loader.exec_module(module)
    return module


corpus = _load_corpus()


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    end = text.index("\n---\n", 3)
    data = yaml.load(text[4:end], Loader=yaml.CSafeLoader)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    corpus.generate(out, N, seed=1)
    return out


def test_same_seed_same_bytes(corpus_dir: Path, tmp_path: Path) -> None:
    corpus.generate(tmp_path, N, seed=1)
    first, second = _snapshot(corpus_dir), _snapshot(tmp_path)
    assert len(first) == N
    assert first == second


def test_other_seed_other_corpus(corpus_dir: Path, tmp_path: Path) -> None:
    corpus.generate(tmp_path, 20, seed=2)
    assert not set(_snapshot(tmp_path).values()) & set(_snapshot(corpus_dir).values())


def test_files_are_sample_like(corpus_dir: Path) -> None:
    files = sorted(p for p in corpus_dir.rglob("*") if p.is_file())
    assert len(files) == N
    web_urls: set[str] = set()
    related_counts, sizes, published, topic_keys, variant_urls, no_topics = [], [], 0, set(), set(), 0
    for path in files:
        rel = path.relative_to(corpus_dir).as_posix()
        assert re.fullmatch(r"20\d\d/(0[1-9]|1[0-2])/\d{6}_[0-9a-f]{16}\.(txt|md)", rel), rel
        raw = path.read_bytes()
        sizes.append(len(raw))
        data = _front_matter(raw.decode("utf-8"))
        assert isinstance(data["title"], str) and data["title"].strip()
        assert re.match(r"https://[a-z0-9.-]+\.example/", data["webUrl"])
        assert data["webUrl"] not in web_urls
        web_urls.add(data["webUrl"])
        assert isinstance(data["published"], bool)
        published += data["published"]
        assert len(data["topics"]) <= 4
        no_topics += not data["topics"]
        topic_keys.update(" ".join(t.split()).casefold() for t in data["topics"])
        related = data.get("related") or []
        related_counts.append(len(related))
        for item in related:
            assert item["webUrl"].startswith("https://")
            if ".cdn.ampproject.org/c/s/" in item["webUrl"]:
                variant_urls.add("cdn")
            elif "utm_source=" in item["webUrl"]:
                variant_urls.add("utm")
    assert 9 <= sum(related_counts) / N <= 17
    assert 5_000 <= sum(sizes) / N <= 11_000
    assert max(sizes) > 2 * (sum(sizes) / N) > 2 * min(sizes)  # a realistic spread
    assert 0.55 <= published / N <= 0.85
    assert 0 < no_topics < N * 0.15
    assert len(topic_keys) >= 30
    assert {"C", "C++", "C#"} <= set(corpus.TOPICS)  # look-alikes that must stay distinct topics
    assert variant_urls == {"cdn", "utm"}


def test_files_carry_what_the_reference_sample_carries(corpus_dir: Path) -> None:
    sample = _front_matter(SAMPLE.read_text("utf-8"))
    texts = [p.read_text("utf-8") for p in sorted(corpus_dir.rglob("*")) if p.is_file()]
    docs = [_front_matter(text) for text in texts]
    assert set(sample) <= set().union(*docs)
    sample_item_keys = set().union(*sample["related"])
    assert sample_item_keys <= set().union(*(item for d in docs for item in d.get("related") or []))
    assert set().union(*sample["images"]) <= set().union(*(image for d in docs for image in d.get("images") or []))
    lines = [line for text in texts for line in text.split("\n---\n", 1)[0].split("\n")]
    # The shapes a YAML reader has to tell from numbers and empty values, as sources write them.
    assert "topics: []" in lines and "related: []" in lines
    assert any(line.startswith("  - ") and line[4:5].isdigit() for line in lines)  # `- 5G`
    assert any(line.startswith("  name: ") and line[8:9].isdigit() for line in lines)  # `name: 9to5Tech`
    assert any(line.startswith("  name: ") and not line.startswith('  name: "') for line in lines)  # as the sample
    secured = [line.removeprefix("secured: ") for line in lines if line.startswith("secured: ")]
    assert any(value.startswith('"') for value in secured)  # quoted, as in the sample
    assert any(value[:1].isdigit() and value.endswith("==") for value in secured)  # unquoted, from a digit
    assert any("’" in d["excerpt"] for d in docs)  # typographic quotes, as in the sample


def test_related_items_point_at_other_articles(corpus_dir: Path) -> None:
    docs = [_front_matter(p.read_text("utf-8")) for p in sorted(corpus_dir.rglob("*")) if p.is_file()]
    own = {d["webUrl"] for d in docs}
    plain_hits = sum(1 for d in docs for r in d.get("related") or [] if r["webUrl"] in own)
    assert plain_hits >= N // 4
    for d in docs:
        assert d["webUrl"] not in {r["webUrl"] for r in d.get("related") or []}


def test_mutate_changes_exactly_that_fraction(tmp_path: Path) -> None:
    corpus.generate(tmp_path, N, seed=3)
    before = _snapshot(tmp_path)
    changed = corpus.mutate(tmp_path, 0.1, seed=5)
    after = _snapshot(tmp_path)
    assert before.keys() == after.keys()
    differing = {k for k in before if before[k] != after[k]}
    assert len(differing) == round(N * 0.1) == len(changed)
    assert differing == {p.relative_to(tmp_path).as_posix() for p in changed}
    for key in differing:
        old, new = _front_matter(before[key].decode()), _front_matter(after[key].decode())
        assert new["excerpt"] != old["excerpt"]
        assert new["webUrl"] == old["webUrl"] and new["title"] == old["title"]


def test_mutate_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        corpus.generate(d, 50, seed=1)
        corpus.mutate(d, 0.3, seed=9)
    assert _snapshot(a) == _snapshot(b)


def test_add_one_adds_one_new_article(tmp_path: Path) -> None:
    corpus.generate(tmp_path, 30, seed=1)
    before = _snapshot(tmp_path)
    path = corpus.add_one(tmp_path, seed=4)
    after = _snapshot(tmp_path)
    assert set(after) - set(before) == {path.relative_to(tmp_path).as_posix()}
    assert all(after[k] == v for k, v in before.items())
    data = _front_matter(path.read_text("utf-8"))
    assert data["webUrl"] not in {_front_matter(v.decode())["webUrl"] for v in before.values()}
    second = corpus.add_one(tmp_path, seed=4)
    assert second != path and len(_snapshot(tmp_path)) == 32


def test_cli(tmp_path: Path) -> None:
    assert corpus.main([str(tmp_path / "out"), "--files", "5", "--seed", "7"]) == 0
    assert len(_snapshot(tmp_path / "out")) == 5
