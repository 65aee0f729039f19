"""The Hera definitions render to deterministic, schema-shaped Argo WorkflowTemplates.

No Argo CRD JSON schema ships in any package installed here; hera's models are generated
from Argo's OpenAPI spec, so the rendered YAML is validated against them (types) and
walked strictly (every key must be a field of the model at that level: hera's models
themselves accept unknown keys). The embedded PVC goes through kubernetes-validate.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path

import pydantic
import pytest
import yaml
from hera.workflows.models import WorkflowTemplate as WorkflowTemplateModel
from pipeline.workflows import WORKFLOWS, build, render_all, to_yaml
from pipeline.workflows.catalog import to_dict

from pipeline.cli import run


def _models(annotation: object) -> list[type[pydantic.BaseModel]]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, dict, typing.Annotated):
        return [m for arg in typing.get_args(annotation) for m in _models(arg)]
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    return []


def _strict(model: type[pydantic.BaseModel], data: object, path: str = "") -> None:
    """Fail on any key that is not a field (by alias) of ``model`` at that level."""
    if isinstance(data, list):
        for i, item in enumerate(data):
            _strict(model, item, f"{path}[{i}]")
        return
    if not isinstance(data, dict) or isinstance(getattr(model, "model_fields", None), type):
        return
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    if "root" in model.model_fields and len(fields) == 1:
        return  # a RootModel (Quantity, IntOrString): a scalar or free map
    for key, value in data.items():
        assert key in fields, f"{path}.{key}: not a field of {model.__name__}"
        for sub in _models(fields[key].annotation):
            _strict(sub, value, f"{path}.{key}")


@pytest.mark.parametrize("name", sorted(WORKFLOWS))
def test_rendered_yaml_is_an_argo_workflow_template(name: str) -> None:
    data = yaml.safe_load(to_yaml(build(name)))
    assert data["apiVersion"] == "argoproj.io/v1alpha1" and data["kind"] == "WorkflowTemplate"
    model = WorkflowTemplateModel.model_validate(data)
    assert model.model_dump(by_alias=True, exclude_none=True, mode="json") == data
    _strict(WorkflowTemplateModel, data)


def test_strict_walk_catches_unknown_fields() -> None:
    data = to_dict(build("release"))
    data["spec"]["templates"][0]["script"]["bogus"] = 1
    with pytest.raises(AssertionError, match="bogus"):
        _strict(WorkflowTemplateModel, data)


def test_workspace_claim_is_a_valid_pvc() -> None:
    import kubernetes_validate

    for name in WORKFLOWS:
        claim = to_dict(build(name))["spec"]["volumeClaimTemplates"][0]
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", **claim}, "1.30", strict=True)


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    render_all(first)
    assert run(["workflow", "render", "--out", str(second)]) == 0
    names = sorted(p.name for p in first.iterdir())
    assert names == ["pr-check.yaml", "release.yaml", "rollback.yaml"]
    for n in names:
        assert (first / n).read_bytes() == (second / n).read_bytes()


def test_every_step_runs_pipeline_in_the_pipeline_image_with_secrets_as_files() -> None:
    for name in WORKFLOWS:
        spec = to_dict(build(name))["spec"]
        for template in spec["templates"]:
            if "dag" in template:
                continue
            script = template["script"]
            assert script["image"] == "{{workflow.parameters.pipeline-image}}"
            if template["name"] != "checkout":
                assert "pipeline " in script["source"]
            for var in script.get("env", []):
                assert "valueFrom" not in var and "secret" not in var["value"].lower()
            for volume in template.get("volumes", []):
                assert volume["secret"]["secretName"].startswith("{{workflow.parameters.")
                assert volume["secret"]["defaultMode"] == 0o400


def test_release_dag_runs_independent_steps_in_parallel() -> None:
    tasks = {t["name"]: t for t in next(
        t for t in to_dict(build("release"))["spec"]["templates"] if "dag" in t)["dag"]["tasks"]}
    assert tasks["seal-model"]["depends"] == "checkout" == tasks["build"]["depends"]
    for name in ("sbom", "scan", "provenance", "push-image"):
        assert tasks[name]["depends"] == "build"
    assert tasks["policy-check"]["depends"] == "verify && push-model"
    assert {"name": "digest", "value": "{{tasks.push-image.outputs.parameters.digest}}"} in \
        tasks["sign-image"]["arguments"]["parameters"]


def test_pr_check_never_signs_or_pushes() -> None:
    text = to_yaml(build("pr-check"))
    for word in ("pipeline sign", "pipeline push", "pipeline attest", "secretName"):
        assert word not in text


def _tasks(name: str) -> dict[str, dict]:
    return {t["name"]: t for t in next(
        t for t in to_dict(build(name))["spec"]["templates"] if "dag" in t)["dag"]["tasks"]}


def test_release_ends_with_the_hand_off() -> None:
    """policy-check -> record-release -> promote, each given both pushed digests."""
    tasks = _tasks("release")
    assert tasks["record-release"]["depends"] == "policy-check"
    assert tasks["promote"]["depends"] == "record-release"
    for name in ("record-release", "promote"):
        args = {p["name"]: p["value"] for p in tasks[name]["arguments"]["parameters"]}
        assert args == {"digest": "{{tasks.push-image.outputs.parameters.digest}}",
                        "model-digest": "{{tasks.push-model.outputs.parameters.digest}}"}
    templates = {t["name"]: t for t in to_dict(build("release"))["spec"]["templates"]}
    promote = templates["promote"]["script"]["source"]
    assert "pipeline promote --gitops /workspace/gitops" in promote
    assert "pipeline release environments --first" in promote
    # No analysis target, no promotion: said plainly, before anything is touched.
    assert promote.index("promote: skipped, nothing promoted") < promote.index("pipeline promote")
    record = templates["record-release"]["script"]["source"]
    assert "pipeline release record" in record and "export PIPELINE_GITOPS_REMOTE=origin" in record
    assert "{{workflow.uid}}" in record


def test_rollback_is_the_rollback_command_with_free_text_out_of_the_script() -> None:
    tasks = _tasks("rollback")
    assert list(tasks) == ["rollback"]
    template = next(t for t in to_dict(build("rollback"))["spec"]["templates"]
                    if t["name"] == "rollback-environment")
    source = template["script"]["source"]
    assert 'pipeline rollback --gitops /workspace/gitops --env "$env"' in source
    # A reason is user text: it reaches bash as a variable, never spliced into the source.
    assert "{{workflow.parameters.reason}}" not in source
    env = {v["name"]: v["value"] for v in template["script"]["env"]}
    assert env == {"ROLLBACK_REASON": "{{workflow.parameters.reason}}",
                   "ROLLBACK_TO": "{{workflow.parameters.to}}"}


def _promote_script(**params: str) -> str:
    """The release's promote step source with workflow parameters filled in."""
    from pipeline.workflows.release import PARAMETERS

    templates = {t["name"]: t for t in to_dict(build("release"))["spec"]["templates"]}
    source = templates["promote"]["script"]["source"]
    for name, value in {**PARAMETERS, **params}.items():
        source = source.replace("{{workflow.parameters." + name + "}}", value)
    return source.replace("{{inputs.parameters.digest}}", "sha256:" + "a" * 64) \
        .replace("{{inputs.parameters.model-digest}}", "sha256:" + "b" * 64)


def test_the_embedded_default_promotion_needs_the_local_runner(tmp_path) -> None:
    """promote-local=true on a cluster (no PIPELINE_RUN_DIR): refused with exit 3 naming
    promote-flags, before any pipeline command; without promote-local, skipped plainly."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_RUN_DIR"}
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    # `pipeline release environments --first` is the only command before the branch.
    (tmp_path / "pipeline").write_text("#!/bin/sh\necho dev\n")
    (tmp_path / "pipeline").chmod(0o755)
    refused = subprocess.run(["bash", "-c", _promote_script(**{"promote-local": "true"})],
                             env=env, capture_output=True, text=True, check=False)
    assert refused.returncode == 3, refused.stderr
    assert "only the local runner can; on a cluster set promote-flags" in refused.stderr
    skipped = subprocess.run(["bash", "-c", _promote_script()], env=env,
                             capture_output=True, text=True, check=False)
    assert skipped.returncode == 0 and "promote: skipped, nothing promoted" in skipped.stdout


def test_the_embedded_default_adds_what_a_cluster_provisions() -> None:
    """The pods' trust root (the release key), the KEK Secret (the mounted kek-secret) and
    the canary traffic: the promotion on this machine needs no flag of the user's."""
    source = _promote_script(**{"promote-local": "true"})
    assert "--local -f \"$values\" --secret \"pipeline-kek=/var/run/secrets/pipeline/kek\"" \
        in source
    assert "sed 's/^/    /' /var/run/secrets/pipeline/signing/release.pub" in source
    assert "keys: {secretName: pipeline-kek, key: keyring.json}" in source
