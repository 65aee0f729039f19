"""The runtime loads exactly the model admission verified: a reference by digest is pulled.

A directory in the image named like the admitted reference must not be loaded instead of
the registry artifact the webhook checked (issue 13: admission and load agree on bytes).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from secure_runtime.config import RuntimeConfig
from secure_runtime.repository import check_model_reference, looks_like_oci_reference

DIGEST = "sha256:" + "ab" * 32


def test_a_reference_by_digest_is_pulled_even_where_a_path_of_that_name_exists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ref = f"reg.example/models/tiny@{DIGEST}"
    (tmp_path / ref).mkdir(parents=True)  # a look-alike directory in the working dir
    assert looks_like_oci_reference(ref)
    (tmp_path / "reg.example/models/plain").mkdir(parents=True)
    assert not looks_like_oci_reference("reg.example/models/plain")  # a path, no digest
    assert not looks_like_oci_reference(f"./reg.example/models/tiny@{DIGEST}")
    assert not looks_like_oci_reference(str(tmp_path / "reg.example/models/plain"))


def test_a_tag_only_reference_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="has no digest"):
        check_model_reference(RuntimeConfig(model="reg.example/models/tiny:v1"))
    check_model_reference(RuntimeConfig(model=f"reg.example/models/tiny@{DIGEST}"))


def test_the_chart_names_the_model_where_admission_looks_for_it() -> None:
    """The rendered pod template names the model in --model and in the annotation, the
    same reference by digest: what the webhook verifies is what the runtime pulls."""
    from pipeline.policy.model_policy import MODEL_ANNOTATION, model_references
    from tests.support.helm import render_chart

    chart = Path(__file__).resolve().parents[3] / "helm" / "secure-runtime"
    objs = render_chart(chart, {"image": {"digest": "sha256:" + "a1" * 32},
                                "model": {"digest": DIGEST}})
    (workload,) = [o for o in objs if o["kind"] == "Deployment"]
    template = workload["spec"]["template"]
    slots, refused = model_references(workload)
    assert not refused
    assert [s.reference for s in slots] == [template["metadata"]["annotations"][MODEL_ANNOTATION]]
    assert slots[0].reference.endswith("@" + DIGEST)
