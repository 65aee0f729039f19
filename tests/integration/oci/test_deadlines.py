"""One total deadline per registry operation (issue 10 §3), against sockets that hold on.

Each case would take minutes with per-request timeouts alone (30 s per try, 5 tries);
with a deadline it ends at the deadline with DeadlineError (exit 9) naming the budget.
The bound asserted is the deadline plus generous slack for a loaded machine, far below
what a per-try timeout would take: it checks the behaviour, not the speed.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from pipeline.errors import EXIT_UNREACHABLE, DeadlineError, NotFoundError
from pipeline.oci import RegistryOptions
from pipeline.oci.reference import Reference
from pipeline.oci.registry import open_client, resolve_descriptor
from pipeline.signing.image import verify_image
from tests.support import slow_servers

pytestmark = pytest.mark.integration
#: Per-request timeout and retries as the CLI defaults: without a deadline, minutes.
SLOW_OPTIONS = RegistryOptions(insecure=True, timeout=30.0, retries=4, backoff=0.2)
BUDGET = 1.0
SLACK = 10.0  # << 30 s: one per-request timeout alone


def _resolve(host: str, options: RegistryOptions) -> None:
    ref = Reference.parse(f"{host}/team/app:v1")
    with open_client(ref, None, options) as client:
        resolve_descriptor(client, ref)


def _bounded(call) -> DeadlineError:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    with pytest.raises(DeadlineError) as caught:
        call()
    assert time.monotonic() - start < BUDGET + SLACK
    return caught.value


def test_a_registry_that_never_answers_is_cut_at_the_deadline() -> None:
    with slow_servers.silent() as host:
        error = _bounded(lambda: _resolve(host, SLOW_OPTIONS.with_deadline(BUDGET)))
    assert f"registry {host} did not answer within 1s" in str(error)


def test_headers_trickling_forever_are_cut_at_the_deadline() -> None:
    """Every read gets a byte, so only the socket watch can end this request."""
    with slow_servers.trickling(pause=0.1) as host:
        error = _bounded(lambda: _resolve(host, SLOW_OPTIONS.with_deadline(BUDGET)))
    assert "did not answer within 1s" in str(error)



def test_the_deadline_covers_a_whole_verification(keys) -> None:  # type: ignore[no-untyped-def]
    """Many requests (resolve, tag list, ...): one budget for all of them."""
    _, public = keys("alice")
    with slow_servers.trickling(pause=0.1) as host:
        options = SLOW_OPTIONS.with_deadline(BUDGET)
        _bounded(lambda: verify_image(f"{host}/team/app:v1", [public], registry_options=options))


def test_a_slow_answer_within_the_deadline_is_an_answer() -> None:
    with slow_servers.slow(0.3) as host, pytest.raises(NotFoundError):
        _resolve(host, SLOW_OPTIONS.with_deadline(20.0))


def test_the_token_fetch_spends_the_same_deadline() -> None:
    """The registry answers 401 at once; its token service never answers."""
    with slow_servers.silent() as token_host:
        challenge = f'Bearer realm="http://{token_host}/token",service="test"'
        with slow_servers.slow(0.0, challenge=challenge) as host:
            error = _bounded(lambda: _resolve(host, SLOW_OPTIONS.with_deadline(BUDGET)))
    assert "token service 127.0.0.1 did not answer within 1s" in str(error)


def test_cli_timeout_bounds_a_pull(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with slow_servers.silent() as host:
        start = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline", "pull", f"{host}/team/app:v1",
             str(tmp_path / "out"), "--insecure", "--timeout", "1"],
            capture_output=True, text=True, timeout=120)
        elapsed = time.monotonic() - start
    assert proc.returncode == EXIT_UNREACHABLE, proc.stderr
    assert "did not answer within 1s" in proc.stderr and "Traceback" not in proc.stderr
    assert elapsed < BUDGET + SLACK + 10  # interpreter start-up included
