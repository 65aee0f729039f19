"""The run queue: numbering, newest first, one worker at a time, failures recorded."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipeline.errors import ConfigError, NotFoundError
from pipeline.workflow.runs import Run, RunStore, run_details


def test_runs_are_numbered_in_push_order_and_listed_newest_first(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    first = store.enqueue("release", "refs/heads/main", "a" * 40)
    second = store.enqueue("pr-check", "refs/heads/x", "b" * 40)
    assert (first.id, second.id) == ("000001", "000002")
    assert [r.id for r in store.all()] == ["000002", "000001"]
    assert all(r.state == "queued" for r in store.all())
    assert store.load("2").revision == "b" * 40 and store.load("000001").workflow == "release"
    with pytest.raises(NotFoundError, match="no run '9'"):
        store.load("9")
    with pytest.raises(NotFoundError):
        store.load("../etc")


def test_concurrent_pushes_get_distinct_consecutive_numbers(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    ids: list[str] = []
    threads = [threading.Thread(target=lambda i=i: ids.append(
        store.enqueue("pr-check", f"refs/heads/b{i}", f"{i:040d}").id)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ids) == [f"{n:06d}" for n in range(1, 9)]


def test_a_failing_run_is_recorded_and_the_next_one_still_runs(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.enqueue("pr-check", "refs/heads/a", "a" * 40)
    store.enqueue("pr-check", "refs/heads/b", "b" * 40)
    seen: list[str] = []

    def parameters(_store: RunStore, run: Run, _declared: set[str]) -> dict[str, str]:
        seen.append(run.id)
        if run.id == "000001":
            raise ConfigError("signing-key-secret: not a directory")
        raise RuntimeError("a bug")

    done = store.work(parameters)
    assert seen == ["000001", "000002"]
    assert [(r.id, r.state) for r in done] == [("000001", "failed"), ("000002", "failed")]
    first, second = store.load("1"), store.load("2")
    assert first.reason == "signing-key-secret: not a directory" and first.exit_code == 3
    assert second.reason == "internal error: RuntimeError: a bug"
    assert first.finished and first.started and first.started <= first.finished
    assert "Traceback" in (store.directory("000002") / "run.log").read_text()
    assert run_details(store, first)["log"].endswith("000001/run.log")


def test_a_run_left_running_by_a_dead_worker_is_failed_by_the_next(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run = store.enqueue("release", "refs/heads/main", "a" * 40)
    run.state = "running"
    store.save(run)
    assert store.work(lambda *_: {}) == []
    stale = store.load(run.id)
    assert stale.state == "failed" and "stopped before it finished" in str(stale.reason)


def test_one_worker_at_a_time(tmp_path: Path) -> None:
    """A second worker waits for the lock; by then the first drained the queue."""
    store = RunStore(tmp_path)
    store.enqueue("pr-check", "refs/heads/a", "a" * 40)
    order: list[str] = []
    release = threading.Event()

    def slow(_store: RunStore, run: Run, _declared: set[str]) -> dict[str, str]:
        order.append(f"start {run.id}")
        release.wait(30)
        order.append(f"end {run.id}")
        raise ConfigError("stop here")

    first = threading.Thread(target=store.work, args=(slow,))
    first.start()
    while not order:
        threading.Event().wait(0.01)
    store.enqueue("pr-check", "refs/heads/b", "b" * 40)  # pushed while 000001 runs
    assert store.load("2").state == "queued"
    second = threading.Thread(target=store.work, args=(slow,))
    second.start()
    release.set()
    first.join()
    second.join()
    assert order == ["start 000001", "end 000001", "start 000002", "end 000002"]
