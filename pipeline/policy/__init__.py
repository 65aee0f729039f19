"""Admission policies: Kubernetes ValidatingAdmissionPolicy (CEL) evaluated offline.

One engine for the PR check (``pipeline policy check``), the admission webhook and the
promotion gate. Modules, one job each: ``manifests`` (load objects), ``cel`` (the CEL
environment), ``vap`` (policy model, compile, match), ``evaluate`` (one policy, one
object), ``check`` (orchestration), ``report`` (output formats), ``image_policy`` (which
images need which signers and attestations; the signature checks themselves are
``pipeline.signing``'s; sigstore ``ClusterImagePolicy`` documents are mapped onto it by
``cluster_image_policy``), ``model_policy`` (which sealed models pods may load, checked
at admission from the registry), ``workloads`` (which kinds run containers and where their images
are: the one list the webhook, the PR check and the webhook chart share). See
docs/policies.md and docs/image-signatures.md.

Usage::

    from pipeline.policy import ImagePolicy, check, find_images, load_manifests

    result = check(load_manifests(["deploy.yaml"]), "policies/")
    verdict = ImagePolicy.load("policies/image-policy.yaml").evaluate(image_ref)
    slots = find_images(obj).slots  # every image (and oci:// model) of a known kind
"""

from __future__ import annotations

from pipeline.policy.check import CheckResult, Violation, check, check_objects
from pipeline.policy.image_policy import ImagePolicy, PolicyResult
from pipeline.policy.manifests import Manifest, load_manifests, parse_manifests
from pipeline.policy.model_policy import ModelPolicy, model_references
from pipeline.policy.vap import PolicySet, load_policies
from pipeline.policy.workloads import Images, ImageSlot, WorkloadKind, find_images, workload_kind

__all__ = [
    "CheckResult",
    "ImagePolicy",
    "ImageSlot",
    "Images",
    "Manifest",
    "ModelPolicy",
    "PolicyResult",
    "PolicySet",
    "Violation",
    "WorkloadKind",
    "check",
    "check_objects",
    "find_images",
    "load_manifests",
    "load_policies",
    "model_references",
    "parse_manifests",
    "workload_kind",
]
