"""One total deadline per registry operation or decision, not a timeout per try.

A per-request timeout multiplies: retries, redirects, a token fetch and several
manifests each get the full timeout again, so a registry that accepts connections and
never answers held an admission decision for 15 s with ``--registry-timeout 5``, past
the API server's own deadline. A :class:`Deadline` is made once, where the operation
starts (a CLI command, a webhook decision), travels in
:class:`~pipeline.oci.registry.RegistryOptions`, and every request, retry sleep and
token fetch takes what is *left* of it. When it runs out, the client shuts the
sockets it has open (a server trickling its headers a byte at a time never trips a
per-read timeout) and raises :class:`~pipeline.errors.DeadlineError`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pipeline.errors import DeadlineError

__all__ = ["Deadline"]


@dataclass(frozen=True)
class Deadline:
    """An instant (``time.monotonic()``) by which an operation must be over.

    ``budget`` is the number of seconds it was given, for messages ("did not answer
    within 5s"). Frozen and shareable: threads of one decision share one deadline.
    """

    budget: float
    expires: float = field(default=0.0)

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """A deadline ``seconds`` from now."""
        if seconds <= 0:
            raise ValueError("a deadline needs a positive number of seconds")
        return cls(float(seconds), time.monotonic() + float(seconds))

    def remaining(self) -> float:
        """Seconds left (0.0 when expired, never negative)."""
        return max(0.0, self.expires - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.expires

    def bound(self, seconds: float) -> float:
        """``seconds`` cut to what is left (the timeout of one request or sleep)."""
        return min(seconds, self.remaining())

    def error(self, who: str, during: str = "") -> DeadlineError:
        """The error to raise: ``<who> did not answer within <budget>s (<during>)``."""
        suffix = f" ({during})" if during else ""
        return DeadlineError(f"{who} did not answer within {self.budget:g}s{suffix}")

    def check(self, who: str, during: str = "") -> None:
        """Raise :meth:`error` when the deadline has passed."""
        if self.expired:
            raise self.error(who, during)
