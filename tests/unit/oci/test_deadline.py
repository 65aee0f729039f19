"""Deadline arithmetic and the retry loop under a deadline (no sockets: see the
integration tests for silent and trickling servers)."""

from __future__ import annotations

import pytest
import requests

from pipeline.errors import DeadlineError, UnreachableError
from pipeline.oci._retry import with_retries
from pipeline.oci.deadline import Deadline
from pipeline.oci.registry import RegistryOptions


def test_remaining_and_bound_never_go_negative() -> None:
    deadline = Deadline.after(30)
    assert 0 < deadline.remaining() <= 30 and deadline.bound(5) == 5
    spent = Deadline(2.0, 0.0)  # expired long ago
    assert spent.expired and spent.remaining() == 0.0 and spent.bound(5) == 0.0
    with pytest.raises(DeadlineError, match="registry r did not answer within 2s"):
        spent.check("registry r")
    with pytest.raises(ValueError):
        Deadline.after(0)


def test_retries_stop_at_the_deadline_and_say_so() -> None:
    calls, sleeps = [], []

    def attempt() -> None:
        calls.append(1)
        raise requests.ConnectionError("refused")

    with pytest.raises(DeadlineError, match="did not answer within 2s"):
        with_retries(attempt, retries=10, what="manifest x", sleep=sleeps.append,
                     deadline=Deadline(2.0, 0.0), who="registry r")
    assert len(calls) == 1 and sleeps == [0.0]
    # Without a deadline the same failure is the usual UnreachableError after all tries.
    calls.clear()
    with pytest.raises(UnreachableError, match="failed after 3 attempts"):
        with_retries(attempt, retries=2, what="manifest x", sleep=lambda _: None)
    assert len(calls) == 3


def test_options_carry_one_deadline() -> None:
    options = RegistryOptions(insecure=True).with_deadline(5)
    assert options.deadline is not None and options.deadline.budget == 5
    assert RegistryOptions().with_deadline(None).deadline is None
    with options.client("127.0.0.1:1") as client:
        assert client.deadline is options.deadline
