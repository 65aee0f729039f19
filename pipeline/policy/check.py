"""The PR check: every object of every manifest against every bound policy.

Why one function for PR checks, promotion and tests: the same manifests must get the
same verdict wherever they are checked. :func:`check` never raises for a violation; it
returns a :class:`CheckResult` whose ``violations`` the caller turns into exit 11
(:class:`~pipeline.errors.PolicyError`) or a report. Malformed input and bad policies
raise before anything is evaluated (InputError exit 4, ConfigError exit 3).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.oci.registry import RegistryOptions
from pipeline.policy.evaluate import Finding, evaluate
from pipeline.policy.manifests import Manifest
from pipeline.policy.vap import PolicySet, load_policies, resource_of
from pipeline.policy.workloads import find_images

#: The default policy directory: policies/ at the repository root.
DEFAULT_POLICY_DIR = Path(__file__).resolve().parents[2] / "policies"
IMAGE_POLICY_NAME = "image-policy"


@dataclass(frozen=True)
class Violation:
    """One finding located in the input: file, document index, object, policy, message."""

    source: str
    index: int
    kind: str
    name: str
    namespace: str
    policy: str
    binding: str
    message: str
    action: str = "Deny"
    errored: bool = False
    #: 1-based line of the object in ``source`` (0: unknown); for a chart, the template's.
    line: int = 0
    #: The chart directory the object was rendered from ("" for a manifest file).
    chart: str = ""
    #: The environment whose values rendered the chart (``values-<env>.yaml``), or "".
    environment: str = ""

    @property
    def object_ref(self) -> str:
        return f"{self.kind}/{self.name or '<unnamed>'}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.source, "document": self.index, "kind": self.kind, "name": self.name,
            "namespace": self.namespace, "policy": self.policy, "binding": self.binding,
            "message": self.message, "action": self.action, "errored": self.errored,
            "line": self.line, "chart": self.chart, "environment": self.environment,
        }

    @property
    def where(self) -> str:
        """The file, with the environment when a chart was rendered once per environment."""
        return f"{self.source} [{self.environment}]" if self.environment else self.source


@dataclass
class CheckResult:
    """Everything a report needs: what was checked, what failed, what only warns."""

    objects: int = 0
    policies: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    warnings: list[Violation] = field(default_factory=list)
    images_checked: int = 0
    unbound: list[str] = field(default_factory=list)
    #: (file, document index, kind, name) of every object checked, in input order.
    checked: list[tuple[str, int, str, str]] = field(default_factory=list)
    #: policy name → (policy file, what its validations say): the rules of a SARIF report.
    rules: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "objects": self.objects, "policies": self.policies,
            "violations": [v.to_dict() for v in self.violations],
            "warnings": [v.to_dict() for v in self.warnings],
            "images_checked": self.images_checked, "unbound_policies": self.unbound,
        }


def _violation(manifest: Manifest, finding: Finding, action: str) -> Violation:
    return Violation(
        manifest.source, manifest.index, manifest.kind, manifest.name, manifest.namespace,
        finding.policy, finding.binding, finding.message, action, finding.errored,
        manifest.line, manifest.chart, manifest.environment,
    )


def check_objects(manifests: Iterable[Manifest], policies: PolicySet) -> CheckResult:
    """Evaluate every bound policy on every object (offline, no registry)."""
    result = CheckResult(policies=sorted(policies.policies), unbound=policies.unbound())
    result.rules = {
        name: (policy.source, "; ".join(v.message for v in policy.validations if v.message))
        for name, policy in sorted(policies.policies.items())
    }
    pairs = policies.bound()
    for manifest in manifests:
        result.objects += 1
        source = (f"{manifest.source} [{manifest.environment}]" if manifest.environment
                  else manifest.source)
        result.checked.append((source, manifest.index, manifest.kind, manifest.name))
        rid = resource_of(manifest.obj)
        for policy, binding in pairs:
            for finding in evaluate(policy, binding, manifest.obj, rid):
                if finding.denies:
                    result.violations.append(_violation(manifest, finding, "Deny"))
                else:
                    action = "Warn" if "Warn" in finding.actions else "Audit"
                    result.warnings.append(_violation(manifest, finding, action))
    return result


def verify_images(
    manifests: Sequence[Manifest], image_policy_path: str | Path, result: CheckResult,
    registry_options: RegistryOptions | None = None,
) -> None:
    """Add an image-policy violation for every image the policy refuses (needs a registry).

    The images are those the admission webhook verifies (:func:`find_images`: every
    container, init, ephemeral, Argo template and KServe component, ``oci://`` model
    references); a container without an image and a model reference no signature can
    cover are violations too, as they are denials there. Each distinct image is evaluated
    once; every object using a refused image gets its own violation, so the report points
    at each place to fix.
    """
    from pipeline.policy.image_policy import ImagePolicy

    policy = ImagePolicy.load(image_policy_path)
    result.rules[IMAGE_POLICY_NAME] = (
        str(image_policy_path), "every image is signed by a trusted signer and carries the "
        "attestations the image policy requires")
    verdicts: dict[str, Any] = {}

    def refuse(manifest: Manifest, message: str) -> None:
        result.violations.append(Violation(
            manifest.source, manifest.index, manifest.kind, manifest.name,
            manifest.namespace, IMAGE_POLICY_NAME, str(image_policy_path), message,
            line=manifest.line, chart=manifest.chart, environment=manifest.environment,
        ))

    for manifest in manifests:
        found = find_images(manifest.obj)
        for reason in found.refused:
            refuse(manifest, reason)
        for slot in found.slots:
            image = slot.image
            if not isinstance(image, str) or not image:
                refuse(manifest, f"{slot.label} has no image")
                continue
            if image not in verdicts:
                verdicts[image] = policy.evaluate(image, registry_options)
                result.images_checked += 1
            verdict = verdicts[image]
            if not verdict.allowed:
                reasons = "; ".join(verdict.reasons) or "refused"
                refuse(manifest, f"image {image} refused by the image policy: {reasons}")


def check(
    manifests: Sequence[Manifest],
    policy_paths: Sequence[str | Path] | str | Path = DEFAULT_POLICY_DIR,
    *,
    image_policy: str | Path | None = None,
    verify: bool = False,
    registry_options: RegistryOptions | None = None,
) -> CheckResult:
    """Load the policies (ConfigError if bad), evaluate, and optionally verify images."""
    policies = load_policies(policy_paths)
    result = check_objects(manifests, policies)
    if verify:
        verify_images(manifests, image_policy or DEFAULT_POLICY_DIR / "image-policy.yaml",
                      result, registry_options)
    return result
