"""Admission policies: Kubernetes ValidatingAdmissionPolicy (CEL) evaluated offline.

One engine for the PR check (``pipeline policy check``), the admission webhook and the
promotion gate. Modules, one job each: ``manifests`` (load objects), ``cel`` (the CEL
environment), ``vap`` (policy model, compile, match), ``evaluate`` (one policy, one
object), ``check`` (orchestration), ``report`` (output formats), ``workloads`` (which kinds run
containers and where their images are: the one list the webhook, the PR check and the
webhook chart share). See docs/policies.md.
"""

from __future__ import annotations

from pipeline.policy.check import CheckResult, Violation, check, check_objects
from pipeline.policy.manifests import Manifest, load_manifests, parse_manifests
from pipeline.policy.vap import PolicySet, load_policies

__all__ = [
    "CheckResult",
    "Manifest",
    "PolicySet",
    "Violation",
    "check",
    "check_objects",
    "load_manifests",
    "load_policies",
    "parse_manifests",
]
