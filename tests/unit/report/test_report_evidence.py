"""The evidence report's data: the chain of the release that runs, read from git."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pipeline.cli import run
from pipeline.errors import EXIT_INPUT, EXIT_NOT_FOUND, InputError
from pipeline.release.gitops import GitOpsRepo, Release
from pipeline.release.record import RunInfo, record_release
from pipeline.report import collect, render_html
from pipeline.report.evidence import metrics, registry_url
from pipeline.report.html import safe_href
from pipeline.report.svg import plot
from tests.support.report import HOSTILE, REVISION, V1, V2, V3, release_story, write_evidence


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory):
    return release_story(tmp_path_factory.mktemp("story"))


def test_the_chain_of_what_runs(story) -> None:
    data = collect(story.repo.path, "dev")
    assert data["release"]["image"] == V1[0] and data["release"]["model"] == V1[1]
    assert data["state"]["status"] == "rolled-back"
    rec = data["record"]
    assert rec["source"] == {"repository": "https://git.example/ml/model.git",
                             "revision": REVISION}
    assert rec["run"]["name"] == "release-x1" and rec["run"]["uid"] == "uid-1"
    assert rec["image"]["signature"]["verified"] is True
    assert [a["type"] for a in rec["image"]["attestations"]] == [
        "slsaprovenance", "cyclonedx", "vuln"]
    assert rec["image"]["sbom"]["components"] == 2
    # Not scanned is stated as such, and counted as a gap, never as clean.
    assert rec["image"]["scan"]["status"].startswith("not scanned")
    assert any(g.startswith("vulnerabilities: not scanned") for g in data["gaps"])
    assert data["complete"] is False
    assert rec["image"]["provenance"]["builder"].endswith("/builder/local")
    assert rec["model"]["seal"]["sealed_files"] == ["model.safetensors"]
    assert rec["admission"]["decision"] == "admitted"
    # v1's promotion steps, oldest first, each with generic measurements.
    assert [(s["stage"], s["status"]) for s in data["steps"]] == [
        ("1/2", "progressing"), ("1/2", "progressing"), ("2/2", "progressing"),
        ("2/2", "promoted")]
    measured = [s for s in data["steps"] if s["measurements"]]
    names = {m["name"] for s in measured for x in s["measurements"] for m in x["metrics"]}
    assert names == {"success-rate", "latency-p99"}
    rate = next(m for s in measured for x in s["measurements"] for m in x["metrics"]
                if m["name"] == "success-rate")
    assert (rate["threshold"], rate["comparison"], rate["unit"]) == (0.99, ">=", "ratio")
    # Both roll-backs, with their reasons: v3's failed analysis, then the manual one.
    first, second = data["rollbacks"]
    assert first["failed_image"] == V3[0] and "success rate 0.400 < 0.990" in first["reasons"]
    assert second["reasons"] == [HOSTILE] and second["image"] == V1[0]
    # Every promotion step links to the commit that proves it.
    assert all(s["proof"]["command"].endswith(s["commit"]) for s in data["steps"])


def test_json_and_html_from_the_cli(story, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "report.html"
    assert run(["report", "--gitops", str(story.repo.path), "--env", "dev",
                "--html", str(page), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["html"] == str(page)
    html = page.read_text()
    for ref in (*V1, data["record"]["image"]["signature"]["manifest"], REVISION):
        assert ref.split("@")[-1] in html
    assert run(["report", "--gitops", str(story.repo.path), "--env", "dev"]) == 0
    assert "gap: vulnerabilities: not scanned" in capsys.readouterr().out


def test_hostile_text_is_escaped_everywhere(story) -> None:
    html = render_html(collect(story.repo.path, "dev"))
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script" not in html
    assert "<img" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    # The page loads nothing: no script, no external reference.
    assert "src=" not in html.replace("src=x", "") and "<link" not in html
    assert "default-src 'none'" in html


def test_links_only_for_web_and_file_urls() -> None:
    assert safe_href("https://registry.example/v2/x/manifests/sha256:1")
    assert safe_href("file:///tmp/run.json")
    for bad in ("javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,x", "vbscript:x"):
        assert safe_href(bad) == ""


def test_registry_urls() -> None:
    assert registry_url(V1[0]) == \
        "http://127.0.0.1:5000/v2/ml/runtime/manifests/" + V1[0].split("@")[1]
    assert registry_url("registry.example/ml/app@sha256:" + "a" * 64, what="sha256-a.sig") == \
        "https://registry.example/v2/ml/app/manifests/sha256-a.sig"


def test_older_evidence_without_metrics_is_read_from_its_fields() -> None:
    legacy = {"requests": 120, "success_rate": 0.5, "p99_seconds": 0.004, "ok": False,
              "summary": "requests 120 >= 20; success rate 0.500 < 0.990; p99 4.0 ms <= 500 ms"}
    got = {m["name"]: m for m in metrics(legacy)}
    assert got["success_rate"]["threshold"] == 0.99 and got["success_rate"]["ok"] is False
    assert got["p99_seconds"]["threshold"] == pytest.approx(0.5)
    assert got["p99_seconds"]["ok"] is True and got["requests"]["threshold"] == 20
    # The canary executor's record: one metric per measurement, its limit as data.
    executor = {"template": "t", "metric": "latency-p99", "value": [0.7], "ok": False,
                "threshold": 0.5, "comparison": "<=", "summary": "latency p99 700 ms > 500 ms"}
    (got_p99,) = metrics(executor)
    assert (got_p99["value"], got_p99["threshold"], got_p99["unit"]) == (0.7, 0.5, "seconds")
    # Any metric a newer analysis records is read as it is, whatever its name.
    custom = {"metrics": [{"name": "error_budget", "value": 0.2, "threshold": 0.1,
                           "comparison": "<=", "unit": "ratio", "ok": False}]}
    assert metrics(custom)[0]["name"] == "error_budget"


def test_svg_is_well_formed_and_shows_missing_data() -> None:
    points = [{"value": 1.0, "threshold": 0.99, "comparison": ">=", "unit": "ratio", "ok": True},
              {"value": None, "threshold": 0.99, "comparison": ">=", "unit": "ratio",
               "ok": False}]
    svg = plot("success_rate", points, title='stage 1/2 <"x">')
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert "n/a" in svg and "threshold &gt;= 0.990" in svg and "&lt;&quot;x&quot;&gt;" in svg


def test_missing_things_are_clear_errors(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["report", "--gitops", str(tmp_path / "none"), "--env", "dev"]) == EXIT_NOT_FOUND
    GitOpsRepo(tmp_path / "empty")
    assert run(["report", "--gitops", str(tmp_path / "empty"), "--env", "dev"]) == \
        EXIT_NOT_FOUND
    err = capsys.readouterr().err
    assert "no release" in err and "Traceback" not in err


def test_a_release_without_record_says_so(tmp_path: Path) -> None:
    from pipeline.release.promote import CallbackExecutor, promote
    from tests.support.report import analysis

    repo = GitOpsRepo(tmp_path / "g")
    promote(repo, "dev", *V2, executor=CallbackExecutor(lambda _w: analysis(1.0, 0.01)),
            stages=(100,))
    data = collect(repo.path, "dev")
    assert data["record"] is None and data["complete"] is False
    assert data["gaps"][0].startswith("no release record")
    assert "no release record" in render_html(data)


def test_record_refuses_missing_or_mismatched_evidence(tmp_path: Path) -> None:
    repo = GitOpsRepo(tmp_path / "g")
    ws = write_evidence(tmp_path / "ws", V1[0])
    run_info = RunInfo("repo", REVISION)
    (ws / "evidence" / "attestation-vuln.json").unlink()
    with pytest.raises(InputError, match="missing evidence evidence/attestation-vuln.json"):
        record_release(repo, ws, *V1, run_info)
    write_evidence(ws, V1[0])
    with pytest.raises(InputError, match="not the released"):
        record_release(repo, ws, *V2, run_info)
    with pytest.raises(InputError, match="not a git commit"):
        record_release(repo, ws, *V1, RunInfo("repo", "HEAD"))
    assert repo.committed_files("releases") == []
    rel, _sha, _ = record_release(repo, ws, *V1, run_info)
    assert rel == f"releases/{REVISION[:12]}-{'a' * 12}.json"
    assert repo.committed_files("releases") == [rel]
    assert Release(*V1).to_dict() == json.loads(repo.read(rel) or "{}")["release"]


def test_record_command_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["release", "record", "--gitops", str(tmp_path / "g"),
                "--workspace", str(tmp_path), "--image", V1[0], "--model", V1[1],
                "--git-repo", "r", "--revision", REVISION])
    assert code == EXIT_INPUT
    assert "missing evidence" in capsys.readouterr().err


def test_a_bare_repository_is_read(story, tmp_path: Path) -> None:
    import subprocess

    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(story.repo.path), str(bare)],
                   check=True)
    data = collect(bare, "dev")
    assert data["record"] is not None and len(data["rollbacks"]) == 2


def test_report_on_a_refused_candidate(story, capsys: pytest.CaptureFixture[str]) -> None:
    data = collect(story.repo.path, "dev", V3[1])  # by its model reference
    assert data["release"]["image"] == V3[0] and data["runs"] is False
    assert [s["status"] for s in data["steps"]] == ["progressing"]  # stage 1/2, then refused
    assert data["record"] is None  # it has no release record in this story
    assert "does not run now" in render_html(data)
    assert run(["report", "--gitops", str(story.repo.path), "--env", "dev",
                "--release", "nope@sha256:" + "f" * 64]) == EXIT_NOT_FOUND
    assert "is not the image or model of any release" in capsys.readouterr().err


@pytest.mark.parametrize(("path", "value", "why"), [
    (("image", "signature", "signers"), [1, 2], "image.signature.signers must be a list of str"),
    (("image", "attestations"), "all good", "image.attestations must be a list of dict"),
    (("release",), None, "release must be a dict"),
    (("version",), 2, "version 2 is not 1"),
])
def test_a_malformed_record_is_refused_clearly(story, tmp_path: Path, path: tuple, value,
                                               why: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Records are files anyone with push access can edit: refused, exit 4, no traceback."""
    import shutil
    import subprocess

    clone = tmp_path / "clone"
    shutil.copytree(story.repo.path, clone)
    rel = clone / story.record_path
    data = json.loads(rel.read_text())
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    rel.write_text(json.dumps(data))
    git = ["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@example"]
    subprocess.run([*git, "commit", "-qam", "edit the record"], check=True)
    assert run(["report", "--gitops", str(clone), "--env", "dev"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert why in err and "Traceback" not in err


def test_a_recorded_release_that_was_never_promoted(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The hand-off recorded it, nothing promoted it (no analysis target): the report says
    how to see it, and shows it with --release."""
    repo = GitOpsRepo(tmp_path / "g")
    record_release(repo, write_evidence(tmp_path / "ws", V1[0]), *V1, RunInfo("r", REVISION))
    assert run(["report", "--gitops", str(repo.path), "--env", "dev"]) == EXIT_NOT_FOUND
    assert "1 release record(s) in releases/: --release" in capsys.readouterr().err
    data = collect(repo.path, "dev", V1[0])
    assert data["runs"] is False and data["state"]["status"] == "no release"
    assert data["record"]["image"]["digest"] == V1[0].split("@")[1] and data["steps"] == []
    assert "does not run now" in render_html(data)
