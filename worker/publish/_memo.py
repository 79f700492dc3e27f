"""A bounded memo in two parts, so that the entries of current feeds outlive archive pages' entries."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["SegmentedMemo"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SegmentedMemo(Generic[K, V]):
    """Values kept by key, least recently used out, in two parts: `kept` for what readers wait
    for (the current feeds, rendered again cycle after cycle), `passing` for the rest (archive
    pages, which pass through the entries of a topic's whole history and would otherwise push
    the current feeds' entries out). A value asked for with `keep` moves to the kept part.
    Thread-safe (`serve` renders query feeds beside its cycles)."""

    def __init__(self, kept: int, passing: int) -> None:
        self._lock = threading.Lock()
        self._sizes = (kept, passing)
        self._kept: OrderedDict[K, V] = OrderedDict()
        self._passing: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K, *, keep: bool) -> V | None:
        with self._lock:
            value = self._kept.get(key)
            if value is not None:
                self._kept.move_to_end(key)
                return value
            value = self._passing.get(key)
            if value is None:
                return None
            if keep:
                del self._passing[key]
                self._store(key, value, keep=True)
            else:
                self._passing.move_to_end(key)
            return value

    def put(self, key: K, value: V, *, keep: bool) -> None:
        with self._lock:
            self._store(key, value, keep=keep)

    def __len__(self) -> int:
        return len(self._kept) + len(self._passing)

    def _store(self, key: K, value: V, *, keep: bool) -> None:
        if keep:
            self._passing.pop(key, None)
        elif key in self._kept:  # never moved out of the kept part by a passing use
            keep = True
        part, size = (self._kept, self._sizes[0]) if keep else (self._passing, self._sizes[1])
        part[key] = value
        part.move_to_end(key)
        while len(part) > size:
            part.popitem(last=False)
