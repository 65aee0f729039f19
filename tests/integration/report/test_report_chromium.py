"""The evidence page in a real headless Chromium (Debian ``chromium``): it renders to a
screenshot, and the DOM Chromium built holds the release's digests and the hostile
reason only as text. Chromium runs with no network at all (every host resolves to
nothing, background networking off): the page needs none.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from pipeline.cli import run
from tests.support.report import HOSTILE, REVISION, V1, V3, release_story

pytestmark = [pytest.mark.integration]

WIDTH, HEIGHT = 1200, 2400


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed (scripts/setup.sh installs it)"
    flags = ["--headless", "--disable-gpu", f"--user-data-dir={profile}",
             "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
             f"--window-size={WIDTH},{HEIGHT}"]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_page_renders_in_chromium_and_holds_the_digests(tmp_path: Path) -> None:
    story = release_story(tmp_path / "story")
    page = tmp_path / "report.html"
    assert run(["report", "--gitops", str(story.repo.path), "--env", "dev",
                "--html", str(page)]) == 0
    shot = tmp_path / "report.png"
    done = _chromium(tmp_path / "profile", f"--screenshot={shot}", page.as_uri())
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (WIDTH, HEIGHT)
    assert len(data) > 50_000  # text, tables and plots, not a blank page

    dom = _chromium(tmp_path / "profile2", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    for ref in (*V1, REVISION, V3[0]):
        assert ref in html, ref
    assert html.count("<svg") >= 4  # success rate and p99 of each analysed stage
    # The hostile reason became text: Chromium built no element from it.
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(\"x\")&lt;/script&gt;" in html
    assert HOSTILE not in html
