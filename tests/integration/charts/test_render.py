"""Charts render with the real Helm engine, and every object knows its template and line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.charts import is_chart, render
from pipeline.cli import run
from pipeline.errors import EXIT_INPUT, EXIT_RENDER, ChartRenderError, InputError
from tests.support.charts import POD_LINE, SERVICE_LINE, write_chart

ROOT = Path(__file__).resolve().parents[3]
RUNTIME = ROOT / "helm" / "secure-runtime"
DIGESTS = ["image.digest=sha256:" + "a1" * 32, "model.digest=sha256:" + "b2" * 32]


def test_objects_name_their_template_and_line(tmp_path: Path) -> None:
    chart = write_chart(tmp_path)
    rendered = render(chart, release_name="rel", namespace="team")
    by_kind = {o.obj["kind"]: o for o in rendered.objects}
    assert set(by_kind) == {"Service", "Pod"}
    assert by_kind["Service"].source == "demo/templates/pods.yaml"
    assert by_kind["Pod"].template_path == str(chart / "templates" / "pods.yaml")
    assert (by_kind["Service"].index, by_kind["Service"].line) == (0, SERVICE_LINE)
    assert (by_kind["Pod"].index, by_kind["Pod"].line) == (1, POD_LINE)
    assert by_kind["Pod"].obj["metadata"] == {"name": "rel-pod", "namespace": "team"}
    assert rendered.notes == "installed rel\n"


def test_typed_set_enables_the_rollout_variant() -> None:
    """The case the old string-only render could not do: rollout.enabled=true."""
    rendered = render(RUNTIME, set_values=[*DIGESTS, "rollout.enabled=true"])
    kinds = {o.obj["kind"]: o for o in rendered.objects}
    assert "Rollout" in kinds and "Deployment" not in kinds
    rollout = kinds["Rollout"]
    assert rollout.source == "secure-runtime/templates/rollout.yaml"
    source_line = (RUNTIME / "templates" / "rollout.yaml").read_text().splitlines()[
        rollout.line - 1]
    assert source_line.startswith("kind:")


def test_a_chart_that_fails_to_render_is_a_render_error(tmp_path: Path) -> None:
    chart = write_chart(tmp_path)
    with pytest.raises(ChartRenderError, match="mustFail is set") as caught:
        render(chart, set_values=["mustFail=true"])
    assert caught.value.exit_code == EXIT_RENDER
    with pytest.raises(ChartRenderError, match="digest is required: secure-runtime deploys by"):
        render(RUNTIME)


def test_values_against_the_schema_are_checked(tmp_path: Path) -> None:
    chart = write_chart(tmp_path)
    values = tmp_path / "wrong.yaml"
    values.write_text("replicas: two\n")
    with pytest.raises(ChartRenderError, match="replicas"):
        render(chart, values_files=[values])


def test_not_a_chart_is_input_error(tmp_path: Path) -> None:
    assert not is_chart(tmp_path)
    with pytest.raises(InputError, match="not a chart"):
        render(tmp_path)
    with pytest.raises(InputError, match="release-name"):
        render(write_chart(tmp_path), release_name="Not_Valid")


def test_chart_render_cli_writes_helm_template_style_yaml(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chart = write_chart(tmp_path)
    assert run(["chart", "render", str(chart), "--set", "replicas=2",
                "--release-name", "rel"]) == 0
    out = capsys.readouterr().out
    assert out.count("# Source: demo/templates/pods.yaml") == 2
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert [d["kind"] for d in docs] == ["Service", "Pod"]
    target = tmp_path / "out" / "rendered.yaml"
    target.parent.mkdir()
    assert run(["chart", "render", str(chart), "-o", str(target)]) == 0
    assert [d["kind"] for d in yaml.safe_load_all(target.read_text()) if d] == ["Service", "Pod"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["rendered.yaml"]


def test_the_old_render_command_is_the_same_command(tmp_path: Path) -> None:
    from pipeline.cli import main

    workflow = main.commands["workflow"]
    chart = main.commands["chart"]
    assert workflow.commands["render-chart"] is chart.commands["render"]  # type: ignore[attr-defined]
    target = tmp_path / "rendered.yaml"
    # The earlier spelling (--release, --set, -o) keeps working.
    assert run(["workflow", "render-chart", str(write_chart(tmp_path)), "--release", "old",
                "--set", "hostNetwork=true", "-o", str(target)]) == 0
    pod = [d for d in yaml.safe_load_all(target.read_text()) if d and d["kind"] == "Pod"][0]
    assert pod["metadata"]["name"] == "old-pod" and pod["spec"]["hostNetwork"] is True


def test_render_errors_exit_with_their_codes(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    chart = write_chart(tmp_path)
    assert run(["chart", "render", str(chart), "--set", "mustFail=true"]) == EXIT_RENDER
    err = capsys.readouterr().err
    assert err.startswith("error: chart ") and "Traceback" not in err
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n")
    assert run(["chart", "render", str(chart), "-f", str(listed)]) == EXIT_INPUT
    assert "expected a mapping" in capsys.readouterr().err


def test_subchart_objects_point_into_the_subchart(tmp_path: Path) -> None:
    parent = write_chart(tmp_path, "parent")
    write_chart(parent / "charts", "sub")
    (parent / "charts" / "sub" / "templates" / "NOTES.txt").write_text("the sub's notes\n")
    rendered = render(parent, set_values=["sub.hostNetwork=true"])
    subs = [o for o in rendered.objects if o.source.startswith("parent/charts/sub/")]
    assert [o.obj["kind"] for o in subs] == ["Service", "Pod"]
    assert subs[1].template_path == str(parent / "charts" / "sub" / "templates" / "pods.yaml")
    assert subs[1].line == POD_LINE and subs[1].obj["spec"]["hostNetwork"] is True
    assert rendered.notes == "installed release\n"  # the parent's NOTES only, as Helm prints
