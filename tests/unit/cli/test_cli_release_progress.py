"""Promotion progress on a terminal is a live rich view; elsewhere plain lines; none with
--json (stdout stays machine-readable)."""

from __future__ import annotations

import io

import pytest

from pipeline._cli.release import _live


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_progress_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    with _live(True) as say:
        say("stage 1/3: 10% to app@sha256:bbbbbbbbbbbb + model@sha256:222222222222")
        say("  FAIL requests 57 >= 20; success rate 0.000 < 0.990; p99 3.9 ms <= 500 ms")
    text = screen.getvalue()
    assert "stage 1/3: 10% to app@sha256:bbbbbbbbbbbb + model@sha256:222222222222" in text
    assert "success rate 0.000 < 0.990" in text and "\x1b[" in text  # drawn by rich


def test_plain_lines_off_a_terminal_and_silence_with_json(
    capsys: pytest.CaptureFixture[str]
) -> None:
    with _live(True) as say:
        say("stage 1/1: 100% to x")
    assert capsys.readouterr().err == "stage 1/1: 100% to x\n"
    with _live(False) as say:
        say("stage 1/1: 100% to x")
    assert capsys.readouterr() == ("", "")
