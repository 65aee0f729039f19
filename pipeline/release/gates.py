"""The gates a release passes before its promotion starts and again before every step.

Three checks, none optional (docs/release.md, "Gates"):

* the image against the image policy (signatures, required attestations:
  :mod:`pipeline.policy.image_policy`, which reads them from the registry);
* the sealed model's signature (a callable given by the caller: verifying means pulling
  the sealed artifact, which is the distribution capability's job, wired in by the CLI);
* the admission policies (ValidatingAdmissionPolicy, CEL) on the manifests the chart
  renders for that environment with the release pinned, so the objects judged are the
  objects Argo CD would apply.

Why again before every step: a signature can be revoked or a policy tightened while a
canary runs for hours; the next step must not go ahead on a verdict from before.
Every failure is a PolicyError (exit 11) naming the gate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError, InputError, PipelineError, PolicyError
from pipeline.oci.registry import RegistryOptions
from pipeline.release.gitops import Release, pin_values


def render_chart(chart: Path, values: Mapping[str, Any], *, release: str = "secure-runtime",
                 namespace: str = "default") -> str:
    """The chart's manifests (one YAML stream) for ``values``, by the real Helm engine."""
    try:
        import helm_python
    except ImportError:
        raise ConfigError("rendering the chart needs helm-python-sdk (the 'charts' extra)") \
            from None
    try:
        with helm_python.Chart.load(chart) as loaded:
            rendered = loaded.render(values=dict(values), name=release, namespace=namespace,
                                     is_install=True)
    except helm_python.HelmError as exc:
        raise InputError(f"chart {chart} refused the values: {exc}") from None
    return "\n---\n".join(text for path, text in sorted(rendered.items())
                          if not path.endswith("NOTES.txt"))


@dataclass
class Gates:
    """The gate checks for one environment; ``check`` raises PolicyError on the first
    failure and returns what passed (for the record)."""

    image_policy: Path
    policies: Path | Sequence[Path]
    chart: Path
    values: Mapping[str, Any] = field(default_factory=dict)
    namespace: str = "default"
    verify_model: Callable[[str], str] | None = None
    registry_options: RegistryOptions | None = None

    def check(self, release: Release, moment: str) -> list[str]:
        passed = []
        from pipeline.policy.image_policy import ImagePolicy

        try:
            verdict = ImagePolicy.load(self.image_policy).evaluate(release.image,
                                                                   self.registry_options)
        except PipelineError as exc:
            raise PolicyError(f"gate {moment}: image {release.image} cannot be verified: "
                              f"{exc}") from None
        if not verdict.allowed:
            raise PolicyError(f"gate {moment}: image policy denies {release.image}: "
                              + "; ".join(verdict.reasons))
        passed.append("image policy: allowed")
        if self.verify_model is None:
            raise PolicyError(f"gate {moment}: no way to verify the model's signature "
                              "(give --trust PUB)")
        try:
            passed.append(f"model signature: {self.verify_model(release.model)}")
        except PipelineError as exc:
            raise PolicyError(f"gate {moment}: model {release.model} signature: {exc}") \
                from None
        passed.append(self.admission(release, moment))
        return passed

    def admission(self, release: Release, moment: str) -> str:
        """The admission policies on the manifests rendered for this environment."""
        from pipeline.policy.check import check_objects
        from pipeline.policy.manifests import parse_manifests
        from pipeline.policy.vap import load_policies

        values = pin_values(self.values, release)
        try:
            text = render_chart(self.chart, values, namespace=self.namespace)
        except InputError as exc:
            raise PolicyError(f"gate {moment}: {exc}") from None
        manifests = parse_manifests(text, f"{self.chart.name} (rendered)")
        result = check_objects(manifests, load_policies(self.policies))
        if not result.ok:
            first = "; ".join(f"{v.object_ref}: {v.policy}: {v.message}"
                              for v in result.violations[:3])
            raise PolicyError(f"gate {moment}: admission policies deny the rendered "
                              f"manifests ({len(result.violations)} violation(s)): {first}")
        return f"admission: {result.objects} object(s) pass {len(result.policies)} policies"

    def gate(self, release: Release, on_event: Callable[[str], None] | None = None
             ) -> Callable[[str], None]:
        """The callable :func:`pipeline.release.promote.promote` takes as ``gate``."""
        def run(moment: str) -> None:
            for line in self.check(release, moment):
                if on_event:
                    on_event(f"gate {moment}: {line}")
        return run


def load_values_file(path: Path) -> dict[str, Any]:
    """A ``-f VALUES`` file: a YAML mapping of chart values."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read chart values: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: chart values must be a mapping")
    return data


__all__ = ["Gates", "load_values_file", "render_chart"]
