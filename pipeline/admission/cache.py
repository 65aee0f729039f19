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

import time
from collections.abc import Callable

from pipeline._lru import LRUCache
from pipeline.policy.image_policy import PolicyResult


class VerdictCache(LRUCache[str, PolicyResult]):
    """Thread-safe, bounded (LRU) and time-limited; ``hits``/``misses`` for metrics."""

    def __init__(self, ttl: float = 300.0, max_entries: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(max_entries, ttl=ttl, clock=clock)

    @property
    def max_entries(self) -> int:
        return self.maxsize

    def put(self, key: str, result: PolicyResult) -> None:
        """Remember ``result`` if it allowed the image (denials are never cached)."""
        if self.ttl is not None and self.ttl > 0 and result.allowed:
            super().put(key, result)


__all__ = ["VerdictCache"]
