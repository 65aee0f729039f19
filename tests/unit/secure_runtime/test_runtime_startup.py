"""Start-up order: the load starts before the servers exist, and its failure still stops them.

The weight load runs on its own thread from the moment the hardening holds (issue 14:
decryption overlaps importing and setting up uvicorn and gRPC). A load that fails
before uvicorn is even built must still make the server exit right after it starts:
``_Stopper`` remembers the stop and applies it on ``attach``. Real uvicorn servers,
never started here.
"""

from __future__ import annotations

import sys
import threading

import pytest
import uvicorn

from pipeline.errors import ConfigError
from secure_runtime import startup
from secure_runtime.startup import _Stopper


def _server() -> uvicorn.Server:
    async def app(scope: object, receive: object, send: object) -> None:  # pragma: no cover
        raise AssertionError("never served")

    return uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off"))


def test_a_stop_before_the_server_exists_applies_on_attach() -> None:
    stopper = _Stopper()
    stopper.stop()
    server = _server()
    assert server.should_exit is False
    stopper.attach(server)
    assert server.should_exit is True


def test_a_stop_after_attach_applies_at_once() -> None:
    stopper = _Stopper()
    server = _server()
    stopper.attach(server)
    assert server.should_exit is False
    stopper.stop()
    assert server.should_exit is True


def test_stop_and_attach_racing_never_lose_the_stop() -> None:
    for _ in range(200):
        stopper, server = _Stopper(), _server()
        go = threading.Barrier(2)

        def stop(s: _Stopper = stopper, b: threading.Barrier = go) -> None:
            b.wait()
            s.stop()

        thread = threading.Thread(target=stop)
        thread.start()
        go.wait()
        stopper.attach(server)
        thread.join()
        assert server.should_exit is True


class _Plane:
    """What _background_load touches of the data plane (load_engine is replaced)."""

    def __init__(self) -> None:
        self.registered: object = None
        self.failure: BaseException | None = None
        self.load_report = {"timings": {"total": 0.0}, "signature_verified": True}

    def register(self, engine: object) -> None:
        self.registered = engine

    def record_failure(self, exc: BaseException) -> None:
        self.failure = exc


class _Engine:
    name, device = "m", "cpu"


@pytest.mark.parametrize("fails", [False, True])
def test_the_load_runs_with_a_short_switch_interval_and_restores_it(
    monkeypatch: pytest.MonkeyPatch, fails: bool,
) -> None:
    """The decrypting threads get the GIL back quickly while the main thread imports
    (startup.LOAD_SWITCH_INTERVAL); serving, after the load, runs with the old interval,
    whether the load succeeded or failed."""
    seen: list[float] = []

    def load_engine(config: object, plane: object) -> _Engine:
        seen.append(sys.getswitchinterval())
        if fails:
            raise ConfigError("no model")
        return _Engine()

    monkeypatch.setattr(startup, "load_engine", load_engine)
    before = sys.getswitchinterval()
    plane, stopper = _Plane(), _Stopper()
    thread = threading.Thread(target=startup._background_load,
                              args=(object(), plane, stopper))
    thread.start()
    thread.join()
    assert seen == [min(before, startup.LOAD_SWITCH_INTERVAL)]
    assert seen[0] < before
    assert sys.getswitchinterval() == before
    assert (plane.failure is not None) is fails
    assert (plane.registered is None) is fails


def test_an_interval_changed_during_the_load_is_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whoever set the interval while the model loaded (another load, an operator's
    hook) keeps it: only the value the load itself set is put back."""
    before = sys.getswitchinterval()
    theirs = before * 2

    def load_engine(config: object, plane: object) -> _Engine:
        sys.setswitchinterval(theirs)
        return _Engine()

    monkeypatch.setattr(startup, "load_engine", load_engine)
    try:
        startup._background_load(object(), _Plane(), _Stopper())  # type: ignore[arg-type]
        assert sys.getswitchinterval() == theirs
    finally:
        sys.setswitchinterval(before)
