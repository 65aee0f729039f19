"""A small thread-safe LRU, optionally time-limited: the one cache of the pipeline.

Verification results are cached by content digests and key fingerprints (immutable
facts), so a hit can never answer for different content or different trust; a TTL
bounds how long an answer outlives a change the key cannot see (a signature removed
from a registry). Bounded, so an attacker feeding digests cannot grow it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["LRUCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRUCache(Generic[K, V]):
    """At most ``maxsize`` entries, least recently used out first; ``ttl`` seconds each."""

    def __init__(self, maxsize: int, *, ttl: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.maxsize = maxsize
        self.ttl = ttl
        self._clock = clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        """The value for ``key``, or None (an expired entry is dropped)."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None or (self.ttl is not None and self._clock() >= entry[0]):
                if entry is not None:
                    del self._data[key]
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            expires = self._clock() + self.ttl if self.ttl is not None else 0.0
            self._data[key] = (expires, value)
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
