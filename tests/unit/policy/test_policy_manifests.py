"""The manifest loader: what the API server would see, and clear errors for what it refuses."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import InputError, PipelineError
from pipeline.policy.check import DEFAULT_POLICY_DIR, check_objects
from pipeline.policy.manifests import Manifest, load_manifests, parse_manifests
from pipeline.policy.vap import load_policies

POD = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n"


def test_multi_document_with_empty_documents_keeps_indexes() -> None:
    found = parse_manifests(f"---\n{POD}---\n---\n{POD.replace('name: p', 'name: q')}", "f")
    # A leading --- opens no document; the empty one between the objects counts.
    assert [(m.index, m.name) for m in found] == [(0, "p"), (2, "q")]


def test_timestamps_stay_strings_and_keys_become_strings() -> None:
    (m,) = parse_manifests("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
                           "data: {when: 2024-01-01, 1: one, false: no}\n", "f")
    assert m.obj["data"] == {"when": "2024-01-01", "1": "one", "false": False}


def test_list_kind_is_expanded() -> None:
    text = "apiVersion: v1\nkind: List\nitems:\n- " + POD.replace("\n", "\n  ")
    (m,) = parse_manifests(text, "f")
    assert m.kind == "Pod" and m.index == 0


def test_directories_recursively_and_stdin(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.yaml").write_text(POD)
    (tmp_path / "b.yml").write_text(POD)
    (tmp_path / "notes.txt").write_text("not a manifest")
    found = load_manifests([str(tmp_path), "-"], stdin=io.StringIO(POD))
    assert [m.source for m in found] == [str(tmp_path / "a" / "x.yaml"),
                                         str(tmp_path / "b.yml"), "<stdin>"]


@pytest.mark.parametrize(("text", "match"), [
    ("a: [1, 2\n", r"f: document 0: line \d+ malformed YAML"),
    (f"{POD}---\nkind: Pod\nmetadata: {{name: x}}\n",
     "f: document 1: missing or non-string 'apiVersion'"),
    ("- 1\n- 2\n", "f: document 0: not a Kubernetes object"),
    ("apiVersion: v1\nkind: Pod\nmetadata: [1]\n", "metadata is not a mapping"),
    ("apiVersion: v1\nkind: Pod\nx: .nan\n", "not a JSON number"),
    (f"{POD}---\n{{bad: [}}\n", "document 1"),
    ("apiVersion: v1\nkind: Pod\n" + "x: " + "[" * 200 + "]" * 200 + "\n", "nested"),
])
def test_malformed_input_is_input_error_naming_file_and_document(text: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        parse_manifests(text, "f")


def test_missing_path_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_manifests([str(tmp_path / "nope.yaml")])


def test_non_utf8_file_is_input_error(tmp_path: Path) -> None:
    (tmp_path / "x.yaml").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match="not UTF-8"):
        load_manifests([str(tmp_path / "x.yaml")])


# --------------------------------------------------------------------------- property

POLICIES = load_policies(DEFAULT_POLICY_DIR)
KINDS = st.sampled_from(["Pod", "Deployment", "CronJob", "Rollout", "Job", "ConfigMap"])
API = st.sampled_from(["v1", "apps/v1", "batch/v1", "argoproj.io/v1alpha1", "x/y"])
SCALARS = (st.none() | st.booleans() | st.integers(-(2**80), 2**80)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["spec", "template", "containers", "image",
                                       "securityContext", "metadata", "labels", "volumes",
                                       "hostPath", "name", "x"]) | st.text(max_size=5),
                      inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(kind=KINDS, api=API, spec=JSONISH, meta=JSONISH)
def test_arbitrary_objects_never_crash_the_evaluator(kind: str, api: str, spec: object,
                                                     meta: object) -> None:
    obj = {"apiVersion": api, "kind": kind, "metadata": meta, "spec": spec}
    try:
        result = check_objects([Manifest("h", 0, obj)], POLICIES)
    except PipelineError:
        return  # a refusal with an exit code is an allowed outcome; a crash is not
    assert result.objects == 1
    for violation in result.violations:
        assert violation.message and violation.policy in POLICIES.policies
