"""``pipeline policy check``: manifests and charts against the admission policies.

Thin: load manifests (a directory holding ``Chart.yaml`` is rendered with Helm's value
flags), load policies, call :func:`pipeline.policy.check`, print the report. Exit 0 when
clean, 1 on any Deny violation (:class:`~pipeline.errors.PolicyViolationsError`), 14 when
a chart fails to render, 4 on malformed manifests or values, 3 on a bad policy
(docs/policies.md, docs/exit-codes.md).
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline._cli._common import json_option, wants_json, write_report
from pipeline._cli._registry import registry_flags
from pipeline._cli.chart import helm_value_flags
from pipeline.charts import ValueOptions
from pipeline.errors import PolicyViolationsError
from pipeline.oci.registry import RegistryOptions
from pipeline.policy.check import DEFAULT_POLICY_DIR, check
from pipeline.policy.manifests import ChartInput, load_manifests
from pipeline.policy.report import FORMATS, render


@click.group("policy")
def policy_group() -> None:
    """Admission policies (ValidatingAdmissionPolicy CEL, image policy)."""


@policy_group.command("check")
@click.argument("paths", nargs=-1, required=True)
@click.option("--policies", "policy_dirs", multiple=True, type=click.Path(path_type=Path),
              help="Policy directory or file (repeatable); default: the repository's "
                   "policies/.")
@click.option("--image-policy", type=click.Path(path_type=Path), default=None,
              help="Image policy file for --verify-images (default policies/image-policy.yaml).")
@click.option("--verify-images", is_flag=True, default=False,
              help="Also verify every container image against the image policy "
                   "(needs the registry).")
@registry_flags(purpose=", with --verify-images")
@helm_value_flags
@click.option("--per-environment", is_flag=True, default=False,
              help="Check each chart once per values-<env>.yaml beside its Chart.yaml (after "
                   "-f, before --set); a chart without one is checked once, as 'default'.")
@click.option("--ignore-non-manifests", is_flag=True, default=False,
              help="Skip YAML/JSON files that hold no Kubernetes object at all (CI configs): "
                   "for hooks given every changed file. Malformed YAML is still refused.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text",
              show_default=True, help="Report format (sarif: SARIF 2.1.0 for code scanning).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report to this file (atomically) instead of stdout.")
@json_option
def check_command(
    paths: tuple[str, ...], policy_dirs: tuple[Path, ...], image_policy: Path | None,
    verify_images: bool, registry_options: RegistryOptions, values_files: tuple[Path, ...],
    set_values: tuple[str, ...], set_string: tuple[str, ...], set_file: tuple[str, ...],
    release_name: str, namespace: str, per_environment: bool, ignore_non_manifests: bool,
    fmt: str,
    output: Path | None, as_json: bool,
) -> None:
    """Check manifests: files, directories, charts (a directory holding Chart.yaml, rendered
    with -f/--set/...), or - for stdin. Findings name the file (the chart template) and
    line."""
    if wants_json(as_json):
        fmt = "json"
    charts = ChartInput(ValueOptions(values_files, set_values, set_string, set_file),
                        release_name, namespace, per_environment)
    skipped: list[str] = []
    manifests = load_manifests(paths, charts=charts, ignore_non_manifests=ignore_non_manifests,
                               skipped=skipped)
    for path in skipped:
        click.echo(f"note: {path}: no Kubernetes object, skipped", err=True)
    result = check(
        manifests, list(policy_dirs) or DEFAULT_POLICY_DIR, image_policy=image_policy,
        verify=verify_images, registry_options=registry_options,
    )
    report = render(result, fmt)
    if output is not None:
        write_report(output, report + "\n")
        click.echo(render(result, "text") if fmt != "json" else report, err=True)
    else:
        click.echo(report)
    if not result.ok:
        raise PolicyViolationsError(
            f"{len(result.violations)} policy violation(s) in "
            f"{len({(v.where, v.index) for v in result.violations})} document(s)")
