"""``pipeline init``: the layout the workflows' defaults expect, and nothing half-made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.cli import run
from pipeline.errors import EXIT_CONFIG, EXIT_CONFLICT
from pipeline.workflow.params import project_parameters
from pipeline.workflow.runner import load_plan


def test_the_scaffold_matches_every_path_default_of_the_workflows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = tmp_path / "fraud-model"
    assert run(["--json", "init", str(project), "--registry", "127.0.0.1:5123"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["name"] == "fraud-model" and "model/model.safetensors" in made["files"]
    release, pr_check = load_plan("release").parameters, load_plan("pr-check").parameters
    assert (project / release["model-dir"] / "pipeline.yaml").is_file()
    assert (project / release["chart"] / "Chart.yaml").is_file()
    assert (project / release["image-policy"]).is_file()
    assert (project / pr_check["manifests"]).is_dir()
    assert (project / pr_check["charts"] / "secure-runtime" / "values-dev.yaml").is_file()
    # The weights are only in model/: the serving project at the root has its code.
    assert not (project / "model.safetensors").exists() and (project / "model.py").is_file()
    data = yaml.safe_load((project / "pipeline.yaml").read_text())
    assert [e["name"] for e in data["release"]["environments"]] == ["dev", "staging"]
    params = project_parameters(data, "release", set(release))
    assert params["repository"] == "127.0.0.1:5123/fraud-model/runtime"
    assert params["registry-insecure"] == "true" and params["scan-env"] == "dev"
    assert "127.0.0.1:5123/fraud-model/**" in (project / release["image-policy"]).read_text()
    readme = (project / "README.md").read_text()
    assert "pipeline hooks install --repo" in readme and "git push origin main" in readme


def test_init_refuses_a_non_empty_directory_and_bad_names(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    assert run(["init", str(taken)]) == EXIT_CONFLICT
    assert "exists and is not empty" in capsys.readouterr().err
    assert sorted(p.name for p in taken.iterdir()) == ["keep.txt"]
    assert run(["init", str(tmp_path / "Bad Name")]) == EXIT_CONFIG
    assert "--name" in capsys.readouterr().err
    assert run(["init", str(tmp_path / "x"), "--registry", "https://r"]) == EXIT_CONFIG
    assert not (tmp_path / "x").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(["init", str(empty), "--name", "ok"]) == 0
    assert (empty / "pipeline.yaml").is_file()


def test_the_scaffold_promotes_to_dev_on_this_machine_with_traffic_for_its_model(
        tmp_path: Path) -> None:
    """A loopback registry: the embedded default (promote-local, the canary request for
    the model's declared input); dev's short canary in pipeline.yaml and values-dev.yaml."""
    project = tmp_path / "fraud-model"
    assert run(["init", str(project), "--registry", "127.0.0.1:5123"]) == 0
    data = yaml.safe_load((project / "pipeline.yaml").read_text())
    release = load_plan("release").parameters
    params = project_parameters(data, "release", set(release))
    assert params["promote-local"] == "true"
    assert params["canary-traffic-path"] == "/v2/models/fraud-model/infer"
    body = json.loads((project / params["canary-traffic-body"]).read_text())
    [tensor] = body["inputs"]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == ("input", "FP32", [1, 16])
    assert len(tensor["data"]) == 16
    dev = data["release"]["environments"][0]
    assert dev["name"] == "dev" and dev["values"]["rollout"]["weights"] == [50, 100]
    assert yaml.safe_load((project / "helm" / "secure-runtime" / "values-dev.yaml")
                          .read_text()) == dev["values"]
    elsewhere = tmp_path / "remote"
    assert run(["init", str(elsewhere), "--registry", "registry.example.com"]) == 0
    remote = yaml.safe_load((elsewhere / "pipeline.yaml").read_text())
    assert "promote-local" not in remote["workflows"]["release"]
