"""Retries with exponential backoff for transient registry failures.

Only failures that say "try again" are retried: connection errors, timeouts and
HTTP 429/5xx. Anything else (401, 404, a digest mismatch) is an answer, and
retrying it would only hide it. After the last attempt the caller sees
UnreachableError with the last cause, never a raw ``requests`` exception.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import requests

from pipeline.errors import UnreachableError

if TYPE_CHECKING:
    from pipeline.oci.deadline import Deadline

T = TypeVar("T")
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class RetryableStatus(Exception):
    """An HTTP answer worth retrying (raised inside an attempt, never escapes)."""

    def __init__(self, response: requests.Response):
        super().__init__(
            f"HTTP {response.status_code} from {response.request.method} {_redact(response.url)}"
        )
        self.response = response


def _redact(url: str) -> str:
    # Upload locations carry opaque state tokens; the path is enough for a message.
    return url.split("?", 1)[0]


def backoff_delays(retries: int, base: float = 0.2, cap: float = 5.0) -> list[float]:
    """The sleeps between attempts: base, 2*base, 4*base ... capped."""
    return [min(cap, base * (2**i)) for i in range(max(0, retries))]


def with_retries(
    attempt: Callable[[], T],
    *,
    retries: int,
    what: str,
    base_delay: float = 0.2,
    sleep: Callable[[float], None] = time.sleep,
    deadline: Deadline | None = None,
    who: str = "registry",
) -> T:
    """Run ``attempt`` up to ``retries + 1`` times; UnreachableError when all fail.

    With a ``deadline``, sleeps are cut to what it leaves and no attempt starts after
    it: DeadlineError (``<who> did not answer within Ns``) instead.
    """
    last: BaseException | None = None
    delays = backoff_delays(retries, base_delay)
    for index in range(len(delays) + 1):
        if deadline is not None and index > 0:
            deadline.check(who, f"{what}: {_describe(last)}")
        try:
            return attempt()
        except RetryableStatus as exc:
            last = exc
            retry_after = exc.response.headers.get("Retry-After", "")
            if retry_after.isdigit() and index < len(delays):
                delays[index] = min(float(retry_after), 30.0)
        except (requests.ConnectionError, requests.Timeout) as exc:
            last = exc
        except requests.exceptions.ChunkedEncodingError as exc:
            last = exc
        if index < len(delays):
            sleep(delays[index] if deadline is None else deadline.bound(delays[index]))
    if deadline is not None:
        deadline.check(who, f"{what}: {_describe(last)}")
    raise UnreachableError(f"{what}: failed after {retries + 1} attempts: {_describe(last)}")


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, RetryableStatus):
        return str(exc)
    if isinstance(exc, requests.ConnectionError) and exc.__class__.__name__ == "_UploadFailed":
        return str(exc)
    if isinstance(exc, requests.ConnectionError):
        return f"connection failed ({exc.__class__.__name__})"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    return exc.__class__.__name__ if exc else "unknown error"
