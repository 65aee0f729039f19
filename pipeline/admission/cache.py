"""A TTL cache of image-policy verdicts, keyed by ``registry/repository@digest``.

Why: verifying signatures and attestations is the slow part of a decision (registry
round trips and ECDSA), and a rollout asks about the same digest for every replica.
Only *allowed* verdicts are cached: a denial (unsigned image, unreachable registry) is
re-checked on every request, so signing an image or a registry coming back takes effect
at once, and an outage is never remembered. The price of caching allowances is that a
signature removed from the registry keeps admitting its digest for at most ``ttl``
seconds (``ttl=0`` disables the cache). A digest names immutable content, so the key
cannot be fooled by a moved tag.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from pipeline.policy.image_policy import PolicyResult


class VerdictCache:
    """Thread-safe, bounded (LRU) and time-limited; ``hits``/``misses`` for metrics."""

    def __init__(self, ttl: float = 300.0, max_entries: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, PolicyResult]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> PolicyResult | None:
        """The cached allowed verdict for ``key``, or None (expired entries are dropped)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or self._clock() >= entry[0]:
                if entry is not None:
                    del self._entries[key]
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: str, result: PolicyResult) -> None:
        """Remember ``result`` if it allowed the image (denials are never cached)."""
        if self.ttl <= 0 or not result.allowed:
            return
        with self._lock:
            self._entries[key] = (self._clock() + self.ttl, result)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


__all__ = ["VerdictCache"]
