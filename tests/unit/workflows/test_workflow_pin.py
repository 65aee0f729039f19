"""``pipeline workflow render --pipeline-image``: the step image pinned by digest only."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pipeline.workflows.catalog import WORKFLOWS, build, pinned_image, to_dict

from pipeline.cli import run
from pipeline.errors import EXIT_INPUT, InputError

PINNED = "127.0.0.1:5000/ml/pipeline@sha256:" + "ab" * 32


def _image_parameter(template: dict) -> str:
    params = {p["name"]: p["value"] for p in template["spec"]["arguments"]["parameters"]}
    return params["pipeline-image"]


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_the_pin_replaces_the_placeholder_that_every_step_runs(name: str) -> None:
    placeholder = _image_parameter(to_dict(build(name)))
    assert placeholder.endswith("@sha256:" + "0" * 64)
    template = to_dict(build(name, pipeline_image=PINNED))
    assert _image_parameter(template) == PINNED
    steps = [t for t in template["spec"]["templates"] if "script" in t]
    assert steps and {t["script"]["image"] for t in steps} == {
        "{{workflow.parameters.pipeline-image}}"}


@pytest.mark.parametrize("ref", ["127.0.0.1:5000/ml/pipeline:v1", "ml/pipeline",
                                 "ml/pipeline@sha256:abc", "Not A Ref"])
def test_a_reference_without_a_valid_digest_is_refused(ref: str) -> None:
    with pytest.raises(InputError):
        pinned_image(ref)


def test_render_pins_every_template_and_a_tag_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert run(["workflow", "render", "--out", str(out), "--pipeline-image", PINNED]) == 0
    for name in WORKFLOWS:
        assert _image_parameter(yaml.safe_load((out / f"{name}.yaml").read_text())) == PINNED
    refused = tmp_path / "refused"
    code = run(["workflow", "render", "--out", str(refused),
                "--pipeline-image", "127.0.0.1:5000/ml/pipeline:v1"])
    err = capsys.readouterr().err
    assert code == EXIT_INPUT and "by digest" in err and "Traceback" not in err
    assert not refused.exists()
