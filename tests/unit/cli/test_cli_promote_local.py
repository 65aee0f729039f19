"""``pipeline promote --local``: the chart's pods, or servers given by URL, never a mix.

Refused before anything starts (exit 4, nothing written): one of --stable-url/--canary-url
alone, the URLs without --local, and the pods' flags (--secret, --volume, --state-dir)
together with the URLs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import run

IMAGE = "registry.local/app@sha256:" + "c" * 64
MODEL = "registry.local/model@sha256:" + "d" * 64


@pytest.mark.parametrize(("extra", "message"), [
    (["--local", "--stable-url", "http://127.0.0.1:1"], "go together"),
    (["--stable-url", "http://127.0.0.1:1", "--canary-url", "http://127.0.0.1:2",
      "--prometheus", "http://127.0.0.1:3"], "need --local"),
    (["--local", "--stable-url", "http://127.0.0.1:1", "--canary-url", "http://127.0.0.1:2",
      "--secret", "kek=/tmp"], "the chart's pods"),
])
def test_local_flag_mixes_are_refused(extra: list[str], message: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    gitops = tmp_path / "gitops"
    code = run(["promote", "--gitops", str(gitops), "--env", "prod", "--image", IMAGE,
                "--model", MODEL, *extra])
    assert code == 4
    assert message in capsys.readouterr().err
    assert not gitops.exists()
