"""Start-up order: the load starts before the servers exist, and its failure still stops them.

The weight load runs on its own thread from the moment the hardening holds (issue 14:
decryption overlaps importing and setting up uvicorn and gRPC). A load that fails
before uvicorn is even built must still make the server exit right after it starts:
``_Stopper`` remembers the stop and applies it on ``attach``. Real uvicorn servers,
never started here.
"""

from __future__ import annotations

import threading

import uvicorn

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
